//! The shipped realism extractor on a real photo: a blurred copy must be farther from
//! the reference than an unblurred copy of the same content.
//!
//! The test image is 200×136, too small for 256×256 patches, so the test uses a
//! 32×32 grid (shift 16): the extractor is fully convolutional, and what is under test
//! is that its features see blur, not the patch size.

use mirage::image_io::read_image;
use mirage_realism_measure::patches::PatchGrid;
use mirage_realism_measure::validate::gaussian_blur;
use mirage_realism_measure::{default_extractor_path, RealismMeasure};
use std::path::Path;

#[test]
fn shipped_extractor_puts_a_blurred_copy_farther_than_a_shifted_real_one() {
    // One thread: on a busy machine two spinning OpenMP threads made this test take
    // minutes instead of seconds; the result does not depend on it.
    tch::set_num_threads(1);
    let path = default_extractor_path();
    assert!(
        path.exists(),
        "{} is missing; run `mirage export extractor`",
        path.display()
    );
    let mut measure = RealismMeasure::load(&path).unwrap();
    measure.grid = PatchGrid {
        size: 32,
        shift: 16,
    };
    let img = read_image(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../mirage/tests/data/kodim23-crop.png"),
    )
    .unwrap()
    .image;
    let crop = |x, y| image::imageops::crop_imm(&img, x, y, 184, 120).to_image();
    // Reference and real test set: the same photo, 16 px apart, so their patches differ
    // the way two real samples do.
    let reference = [crop(0, 0)];
    let real = [crop(16, 16)];
    let blurred = [gaussian_blur(&real[0], 1.5)];
    let d_real = measure.distance(&reference, &real).unwrap();
    let d_blur = measure.distance(&reference, &blurred).unwrap();
    assert_eq!(d_real.patches, 30);
    assert!(d_blur.mfd > d_real.mfd, "{d_blur:?} vs {d_real:?}");
    assert!(d_blur.mkd > d_real.mkd, "{d_blur:?} vs {d_real:?}");
    // Deterministic for the same inputs.
    assert_eq!(measure.distance(&reference, &blurred).unwrap(), d_blur);
}

/// Runs `mirage realism …`, which must fail with one `mirage:` line; returns it.
fn fails(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mirage"))
        .args(["--threads", "1", "realism"])
        .args(args)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(err.starts_with("mirage: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn distance_command_explains_bad_input() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mirage/tests/data");
    let data = data.to_str().unwrap();
    let err = fails(&[
        "distance",
        data,
        data,
        "--extractor",
        "/nonexistent.safetensors",
    ]);
    assert!(err.contains("train one with"), "{err}");
    // A folder with one 200×136 image: no 256×256 patch fits.
    let small = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(data).join("kodim23-crop.png"),
        small.path().join("kodim23-crop.png"),
    )
    .unwrap();
    let small = small.path().to_str().unwrap();
    let err = fails(&["distance", small, small]);
    assert!(err.contains("at least 2 patches"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let err = fails(&["distance", data, empty.path().to_str().unwrap()]);
    assert!(err.contains("no images"), "{err}");
}
