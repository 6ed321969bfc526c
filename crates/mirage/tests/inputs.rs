//! The input images people have, each converted to what Mirage codes with a note saying
//! what was done, or refused with a clear error. The fixtures come from
//! `scripts/dev/input-fixtures` (48×32 crops of a training photo).

use mirage::image_io::read_image;
use mirage::MirageError;
use std::path::{Path, PathBuf};

fn input(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/inputs")
        .join(name)
}

/// Mean absolute difference per 8-bit value.
fn mean_difference(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (x as i64 - y as i64).unsigned_abs())
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

/// The reference picture: the same crop as a plain progressive JPEG.
fn reference() -> image::RgbImage {
    let loaded = read_image(&input("progressive.jpg")).expect("progressive JPEG decodes");
    assert_eq!(loaded.note, None, "a plain RGB JPEG needs no note");
    loaded.image
}

#[test]
fn cmyk_jpeg_is_converted_to_the_same_picture() {
    let loaded = read_image(&input("cmyk.jpg")).unwrap();
    assert_eq!(loaded.image.dimensions(), (48, 32));
    // An inverted or unconverted CMYK decode would be far off (tens of levels).
    let d = mean_difference(&loaded.image, &reference());
    assert!(d < 12.0, "mean difference {d:.1} levels");
}

#[test]
fn exif_orientation_is_applied() {
    let loaded = read_image(&input("exif-rotated.jpg")).unwrap();
    // Stored 32×48 with orientation 6: shown, and coded, as 48×32.
    assert_eq!(loaded.image.dimensions(), (48, 32));
    let d = mean_difference(&loaded.image, &reference());
    assert!(d < 12.0, "mean difference {d:.1} levels: wrong rotation?");
    let note = loaded.note.expect("says what it did");
    assert!(note.contains("EXIF orientation applied"), "{note}");
}

#[test]
fn an_icc_profile_is_named_as_dropped() {
    let loaded = read_image(&input("icc.png")).unwrap();
    assert_eq!(loaded.image.dimensions(), (48, 32));
    let note = loaded.note.expect("says the profile is dropped");
    assert!(note.contains("ICC colour profile"), "{note}");
}

#[test]
fn webp_decodes_and_animations_keep_their_first_frame() {
    let plain = read_image(&input("plain.webp")).unwrap();
    assert_eq!(plain.image.dimensions(), (48, 32));
    assert_eq!(plain.note, None);
    for name in ["animated.gif", "animated.webp"] {
        let loaded = read_image(&input(name)).unwrap();
        assert_eq!(loaded.image.dimensions(), (48, 32), "{name}");
        let note = loaded.note.unwrap_or_default();
        assert!(note.contains("only the first frame"), "{name}: {note}");
        // The first frame, not the second (mirrored) one.
        let d = mean_difference(&loaded.image, &reference());
        assert!(d < 16.0, "{name}: mean difference {d:.1} levels");
    }
}

#[test]
fn avif_is_refused_with_a_clear_error() {
    // The `image` crate decodes AVIF only with a C library (dav1d) this build leaves out.
    match read_image(&input("plain.avif")) {
        Err(MirageError::UnreadableImage { path, reason }) => {
            assert!(path.ends_with("plain.avif"));
            assert!(reason.to_lowercase().contains("avif"), "{reason}");
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => {} // a build with AVIF decoding reads it: fine too
    }
}

#[test]
fn sixteen_bit_png_is_converted_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.png");
    let deep = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(40, 30, |x, y| {
        image::Rgb([(x * 1600) as u16, (y * 2100) as u16, 40000])
    });
    deep.save(&path).unwrap();
    let loaded = read_image(&path).unwrap();
    assert_eq!(loaded.image.dimensions(), (40, 30));
    // 16 → 8 bits keeps the high byte (rounded): 40000 / 257 ≈ 155.6.
    assert!((155..=156).contains(&loaded.image.get_pixel(3, 3)[2]));
    let note = loaded.note.expect("says the precision is dropped");
    assert!(note.contains("16-bit"), "{note}");
}
