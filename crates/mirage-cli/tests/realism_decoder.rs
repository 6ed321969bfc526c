//! The realism decoder with the bundled models: one bitstream decodes faithfully at
//! `w = 0` and with texture at `w = 1`, deterministically, and only with the
//! generator trained for the file's model.

use mirage::codec::{default_realism_path, suggest_realism, Realism};
use mirage::{Codec, RateTarget};
use std::path::Path;
use std::process::Command;

fn sample() -> image::RgbImage {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mirage/tests/data/kodim23-crop.png");
    mirage::image_io::read_image(&path).unwrap().image
}

fn codec() -> Codec {
    let codec =
        Codec::load_with_addons(&mirage::codec::v1_model_path()).expect("bundled models load");
    assert!(codec.has_realism(), "the realism model is bundled");
    codec
}

fn differing(a: &image::RgbImage, b: &image::RgbImage) -> usize {
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .filter(|(x, y)| x != y)
        .count()
}

#[test]
fn weight_zero_is_the_mse_decode_and_one_adds_detail() {
    let codec = codec();
    let img = sample();
    let (bytes, _) = codec.compress(&img, RateTarget::Quality(15.0)).unwrap();
    let (mse, _) = codec.decompress(&bytes).unwrap();
    let (zero, _) = codec.decompress_with(&bytes, Realism::Weight(0.0)).unwrap();
    let (one, _) = codec.decompress_with(&bytes, Realism::Weight(1.0)).unwrap();
    assert_eq!(
        differing(&mse, &zero),
        0,
        "w = 0 must be the fidelity decode"
    );
    assert!(
        differing(&zero, &one) > img.as_raw().len() / 2,
        "w = 1 changes most values"
    );
    // The realism decode stays a decode of this image: within a few dB of w = 0.
    let (p0, p1) = (
        mirage::metrics::psnr(&img, &zero).unwrap(),
        mirage::metrics::psnr(&img, &one).unwrap(),
    );
    assert!(
        p1 > p0 - 4.0,
        "PSNR {p1:.2} at w = 1 against {p0:.2} at w = 0"
    );
}

#[test]
fn auto_uses_the_suggested_weight() {
    let codec = codec();
    let (bytes, _) = codec
        .compress(&sample(), RateTarget::Quality(15.0))
        .unwrap();
    assert_eq!(codec.resolve_realism(&bytes, Realism::Auto).unwrap(), 0.0);
    let suggested = suggest_realism(&bytes, 0.6).unwrap();
    let w = codec.resolve_realism(&suggested, Realism::Auto).unwrap();
    assert!((w - 0.6).abs() < 0.5 / 255.0, "{w}");
    let (auto, _) = codec.decompress(&suggested).unwrap();
    let (explicit, _) = codec.decompress_with(&bytes, Realism::Weight(w)).unwrap();
    assert_eq!(differing(&auto, &explicit), 0);
    assert!(suggest_realism(&bytes, 1.5).is_err());
    assert!(codec
        .decompress_with(&bytes, Realism::Weight(-0.1))
        .is_err());
}

#[test]
fn realism_decode_is_identical_with_one_and_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mirage/tests/data/kodim23-crop.png");
    let mrg = dir.path().join("a.mrg");
    let run = |args: &[&str], threads: &str| {
        // The decoder add-ons belong to the v1 core (models/v1).
        let out = Command::new(env!("CARGO_BIN_EXE_mirage"))
            .env(
                "MIRAGE_MODEL",
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../models/v1/hyperprior.safetensors"),
            )
            .args(["--threads", threads])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let s = |p: &Path| p.to_str().unwrap().to_string();
    run(&["encode", &s(&input), &s(&mrg), "--quality", "20"], "2");
    let (one, two) = (dir.path().join("1.png"), dir.path().join("2.png"));
    run(&["decode", &s(&mrg), &s(&one), "--realism", "0.8"], "1");
    run(&["decode", &s(&mrg), &s(&two), "--realism", "0.8"], "2");
    let a = image::open(&one).unwrap().to_rgb8();
    let b = image::open(&two).unwrap().to_rgb8();
    assert_eq!(differing(&a, &b), 0);
}

#[test]
fn a_generator_for_another_model_is_refused() {
    // Re-label the bundled generator as made for another hyperprior.
    let bytes = std::fs::read(default_realism_path()).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut metadata = meta.metadata().clone().unwrap();
    metadata.insert("base_model".into(), "0123456789abcdef".into());
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let relabelled = safetensors::serialize(st.tensors(), &Some(metadata)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.safetensors");
    std::fs::write(&path, relabelled).unwrap();
    let mut codec = Codec::load(&mirage::codec::default_model_path()).unwrap();
    let err = codec.attach_realism(&path).unwrap_err().to_string();
    assert!(err.contains("trained for model 0123456789abcdef"), "{err}");
    // Without a generator, w > 0 is a clear error and w = 0 still decodes.
    let (file, _) = codec
        .compress(&sample(), RateTarget::Quality(15.0))
        .unwrap();
    assert!(codec.decompress_with(&file, Realism::Weight(0.5)).is_err());
    assert!(codec.decompress_with(&file, Realism::Weight(0.0)).is_ok());
}
