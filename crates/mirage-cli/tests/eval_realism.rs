//! MFD/MKD inside the evaluation report: the bundled realism extractor, plugged into
//! `mirage-eval`'s suite as a set measure, on a few small synthetic images and two fake
//! codecs: a lossless one (its set is the originals: MFD and MKD exactly 0) and one that
//! blurs (clearly larger). It would fail if the decodes were not the ones measured, if
//! originals and decodes were mismatched, or if the values were lost on the way to the
//! CSV and the Markdown.

use anyhow::{Context, Result};
use image::RgbImage;
use mirage_cli::evaluation::RealismSetMeasure;
use mirage_eval::codecs::{MoreBits, SettingRange};
use mirage_eval::{suite, CodecUnderTest, EvalOptions, SetMeasure};
use mirage_realism_measure::RealismMeasure;
use std::path::PathBuf;

/// The file is a size header, the raw pixels and `setting` bytes of padding; `blur`
/// makes the decoder return a Gaussian blur of the image.
struct Raw {
    name: &'static str,
    blur: Option<f32>,
}

impl CodecUnderTest for Raw {
    fn name(&self) -> String {
        self.name.into()
    }
    fn settings(&self) -> SettingRange {
        SettingRange {
            min: 0.0,
            max: 1000.0,
            step: 1.0,
            more_bits: MoreBits::HigherSetting,
        }
    }
    fn encode(&self, img: &RgbImage, setting: f64) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&img.width().to_le_bytes());
        bytes.extend_from_slice(&img.height().to_le_bytes());
        bytes.extend_from_slice(img.as_raw());
        bytes.resize(bytes.len() + setting as usize, 0);
        Ok(bytes)
    }
    fn decode(&self, bytes: &[u8]) -> Result<RgbImage> {
        let w = u32::from_le_bytes(bytes[0..4].try_into()?);
        let h = u32::from_le_bytes(bytes[4..8].try_into()?);
        let len = (w * h * 3) as usize;
        let img = RgbImage::from_raw(w, h, bytes[8..8 + len].to_vec()).context("size")?;
        Ok(match self.blur {
            Some(sigma) => image::imageops::blur(&img, sigma),
            None => img,
        })
    }
}

/// Four 512×384 images with edges and texture at several scales (3 HiFiC patches each:
/// two on the grid, one on the shifted grid).
fn images(dir: &std::path::Path) -> Vec<PathBuf> {
    (0..4u32)
        .map(|i| {
            let mut state = 0x9e37_79b9u32.wrapping_mul(i + 1);
            let img = RgbImage::from_fn(512, 384, |x, y| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = (state >> 26) as f32;
                let stripes = (x as f32 / (3.0 + i as f32)).sin() * 60.0;
                let blocks = if (x / 48 + y / 40 + i) % 2 == 0 {
                    70.0
                } else {
                    0.0
                };
                let v = |o: f32| (90.0 + o + stripes + blocks + noise).clamp(0.0, 255.0) as u8;
                image::Rgb([v(0.0), v(20.0 * i as f32), v(-30.0)])
            });
            let path = dir.join(format!("synthetic{i}.png"));
            img.save(&path).unwrap();
            path
        })
        .collect()
}

#[test]
fn mfd_and_mkd_are_zero_for_a_lossless_codec_and_larger_for_blur() {
    let dir = tempfile::tempdir().unwrap();
    let paths = images(dir.path());
    let measure = RealismSetMeasure::new(RealismMeasure::load_default().unwrap());
    let (lossless, blurred) = (
        Raw {
            name: "lossless",
            blur: None,
        },
        Raw {
            name: "blurred",
            blur: Some(2.0),
        },
    );
    let codecs: Vec<&dyn CodecUnderTest> = vec![&lossless, &blurred];
    let options = EvalOptions {
        // 24 bpp is the raw size; the padding adds up to 0.04 bpp, so 24.01 is reachable
        // (and not above the highest rate).
        targets_bpp: vec![24.01],
        butteraugli: false,
        progress: false,
        jobs: 2,
        ..EvalOptions::default()
    };
    let report = suite::run(&codecs, &paths, &[&measure as &dyn SetMeasure], &options).unwrap();
    assert_eq!(report.set_rows.len(), 2);
    let values = |codec: &str| {
        let row = report.set_rows.iter().find(|r| r.codec == codec).unwrap();
        assert_eq!((row.reached, row.images), (4, 4), "{row:?}");
        (row.values[0].unwrap(), row.values[1].unwrap())
    };
    let (mfd_lossless, mkd_lossless) = values("lossless");
    let (mfd_blurred, mkd_blurred) = values("blurred");
    println!("lossless MFD {mfd_lossless} MKD {mkd_lossless}; blurred MFD {mfd_blurred} MKD {mkd_blurred}");
    assert!(mfd_lossless.abs() < 1e-6, "{mfd_lossless}");
    assert!(mkd_lossless.abs() < 1e-6, "{mkd_lossless}");
    assert!(mfd_blurred > 0.5, "{mfd_blurred}");
    assert!(mkd_blurred > 1.0, "{mkd_blurred}");

    let md = report.markdown();
    assert!(
        md.contains("## MFD/MKD (Mirage feature distance, own extractor)"),
        "{md}"
    );
    assert!(md.contains("| codec | target bpp | reached | bpp | MFD | MKD ×1000 |"));
    assert!(md.contains("| blurred | 24.01 | 4/4 |"), "{md}");
    assert!(!md.contains("| FID"), "never labelled FID: {md}");
    let csv = report.set_csv();
    assert!(
        csv.starts_with("codec,target_bpp,images,reached,bpp,MFD,MKD ×1000,notes\n"),
        "{csv}"
    );
    assert!(csv.contains("\nblurred,24.01,4,4,"), "{csv}");
}

/// `eval --codecs mirage-w1`: the realism decoder judged in the suite. Same files as the
/// MSE-decoded `mirage` (the weight is a decoder choice), different decodes, its own name
/// and description; weights outside [0, 1] are refused.
#[test]
fn realism_variant_decodes_the_same_files_at_its_weight() {
    use mirage::codec::Codec;
    use mirage_cli::evaluation::MirageUnderTest;
    let img = image::open(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../mirage/tests/data/kodim23-crop.png"),
    )
    .unwrap()
    .to_rgb8();
    let load = || Codec::load(&mirage::codec::v1_model_path()).expect("bundled model loads");
    let realism_codec = load();
    let add_ons = mirage::AddOns::bundled(&realism_codec).expect("bundled add-ons load");
    let (mse, realism) = (
        MirageUnderTest::new(load()),
        MirageUnderTest::with_realism(realism_codec, add_ons, 1.0).unwrap(),
    );
    assert_eq!(
        (mse.name(), realism.name()),
        ("mirage".into(), "mirage-w1".into())
    );
    assert!(
        realism.description().contains("w = 1"),
        "{}",
        realism.description()
    );
    let bytes = mse.encode(&img, 30.0).unwrap();
    assert_eq!(realism.encode(&img, 30.0).unwrap(), bytes);
    let (a, b) = (mse.decode(&bytes).unwrap(), realism.decode(&bytes).unwrap());
    assert_eq!(a.dimensions(), b.dimensions());
    assert_ne!(a, b, "w = 1 must change the decode");
    assert!(MirageUnderTest::with_realism(load(), mirage::AddOns::default(), 1.5).is_err());
}
