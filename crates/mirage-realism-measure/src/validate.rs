//! `mirage realism validate`: evidence that MFD/MKD measure what they claim, on Kodak
//! (evaluation use only; the extractor never saw it). Every distance is between the
//! original Kodak images and a degraded copy of the same images:
//!
//! 1. Gaussian blur, σ = 0, 0.5, 1, 2, 4: both numbers must rise monotonically;
//! 2. JPEG (the `image` crate's baseline encoder), quality 95, 75, 50, 25, 10: likewise;
//! 3. equal PSNR: per image, Gaussian blur, Gaussian noise and JPEG are tuned to the PSNR
//!    of Mirage's MSE decode at a low rate. PSNR cannot tell them apart; the measure
//!    should, and a nearest-mean classifier on the features, trained on half the images
//!    and tested on the other half, should tell real patches from each kind;
//! 4. the noise floor: the distance between two disjoint halves of the real patches
//!    (even- and odd-numbered images);
//! 5. degradations labelled by construction at several strengths, for MFD and for the
//!    no-reference naturalness score: Gaussian noise, a periodic grid of small marks (the
//!    v1 generator's artifact, drawn synthetically: 2×2 dots every 16 px), and the decodes
//!    of named realism generators at w = 1 beside their MSE decodes.

use super::naturalness::NaturalnessModel;
use super::{Distances, RealismMeasure};
use crate::codec::{Codec, RateTarget};
use crate::error::{MirageError, Result};
use crate::progress;
use image::{codecs::jpeg::JpegEncoder, RgbImage};
use mirage_eval::metrics::psnr;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::fmt::Write as _;
use tch::{Kind, Tensor};

pub const BLUR_SIGMAS: [f64; 5] = [0.0, 0.5, 1.0, 2.0, 4.0];
pub const JPEG_QUALITIES: [u8; 5] = [95, 75, 50, 25, 10];
pub const NOISE_STDS: [f64; 4] = [2.0, 4.0, 8.0, 16.0];
pub const MARK_AMPLITUDES: [f64; 4] = [2.0, 4.0, 8.0, 16.0];
/// The period of the synthetic marks: the v1 generator's (its ×16 latent grid).
pub const MARK_PERIOD: u32 = 16;

/// A realism generator whose decodes at w = 1 join the table, with its core's MSE
/// decode of the same files.
pub struct GeneratorSet<'a> {
    pub label: String,
    pub codec: &'a Codec,
    pub generator: &'a mirage::decoders::RealismDecoder,
}

/// One line of the validation table.
#[derive(Clone, Debug)]
pub struct Row {
    pub test: String,
    pub setting: String,
    /// Mean PSNR of the degraded images against the originals (NaN for the floor).
    pub psnr: f64,
    pub distances: Distances,
    /// Mean naturalness score of the degraded images (NaN when no model was given).
    pub naturalness: f64,
    /// Held-out accuracy of the real-vs-degraded nearest-mean classifier, if run.
    pub probe_accuracy: Option<f64>,
}

pub struct Validation {
    pub rows: Vec<Row>,
    /// One line per check, starting with "pass" or "FAIL".
    pub checks: Vec<String>,
    pub extractor_id: String,
    pub images: usize,
}

impl Validation {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.starts_with("pass"))
    }

    pub fn csv(&self) -> String {
        let mut s =
            String::from("test,setting,psnr_db,mfd,mkd_x1000,naturalness,patches,probe_accuracy\n");
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{},{},{:.3},{:.4},{:.4},{:.4},{},{}",
                r.test,
                r.setting,
                r.psnr,
                r.distances.mfd,
                r.distances.mkd,
                r.naturalness,
                r.distances.patches,
                r.probe_accuracy
                    .map_or(String::new(), |a| format!("{a:.4}"))
            );
        }
        s
    }

    /// The Markdown table and the checks.
    pub fn markdown_table(&self) -> String {
        let mut s = String::from(
            "| test | setting | PSNR dB | MFD | MKD ×1000 | naturalness | patches | probe accuracy |\n|---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.3} | {:.3} | {} | {} | {} |",
                r.test,
                r.setting,
                match r.psnr {
                    p if p.is_nan() => "–".to_string(),
                    p if p.is_infinite() => "∞".to_string(),
                    p => format!("{p:.2}"),
                },
                r.distances.mfd,
                r.distances.mkd,
                if r.naturalness.is_nan() {
                    "–".to_string()
                } else {
                    format!("{:.3}", r.naturalness)
                },
                r.distances.patches,
                r.probe_accuracy
                    .map_or("–".to_string(), |a| format!("{:.1}%", 100.0 * a))
            );
        }
        s.push('\n');
        for c in &self.checks {
            let _ = writeln!(s, "- {c}");
        }
        s
    }
}

/// Gaussian blur with a kernel truncated at 3σ and edges clamped; σ = 0 is a copy.
pub fn gaussian_blur(img: &RgbImage, sigma: f64) -> RgbImage {
    if sigma <= 0.0 {
        return img.clone();
    }
    let radius = (3.0 * sigma).ceil() as i64;
    let weights: Vec<f64> = (-radius..=radius)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let weights: Vec<f32> = weights.iter().map(|w| (w / total) as f32).collect();
    let (w, h) = (img.width() as i64, img.height() as i64);
    let src: Vec<f32> = img.as_raw().iter().map(|&v| v as f32).collect();
    let pass = |input: &[f32], horizontal: bool| -> Vec<f32> {
        let mut out = vec![0f32; input.len()];
        for y in 0..h {
            for x in 0..w {
                let mut acc = [0f32; 3];
                for (k, wt) in weights.iter().enumerate() {
                    let d = k as i64 - radius;
                    let (sx, sy) = if horizontal {
                        ((x + d).clamp(0, w - 1), y)
                    } else {
                        (x, (y + d).clamp(0, h - 1))
                    };
                    let i = ((sy * w + sx) * 3) as usize;
                    for c in 0..3 {
                        acc[c] += wt * input[i + c];
                    }
                }
                let o = ((y * w + x) * 3) as usize;
                out[o..o + 3].copy_from_slice(&acc);
            }
        }
        out
    };
    let blurred = pass(&pass(&src, true), false);
    let raw = blurred
        .iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect();
    RgbImage::from_raw(img.width(), img.height(), raw).expect("same size")
}

/// Adds Gaussian noise of standard deviation `std` (in 8-bit units), from a fixed seed.
pub fn add_noise(img: &RgbImage, std: f64, seed: u64) -> RgbImage {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = img.clone();
    for v in out.iter_mut() {
        // Box–Muller; 1 − u keeps the logarithm finite.
        let (u1, u2): (f64, f64) = (rng.gen(), rng.gen());
        let n = (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        *v = (*v as f64 + std * n).round().clamp(0.0, 255.0) as u8;
    }
    out
}

/// Adds a periodic grid of 2×2 dots, `amplitude` levels brighter, every `period` px.
pub fn add_marks(img: &RgbImage, amplitude: f64, period: u32) -> RgbImage {
    let mut out = img.clone();
    for (x, y, p) in out.enumerate_pixels_mut() {
        if x % period < 2 && y % period < 2 {
            for v in p.0.iter_mut() {
                *v = (*v as f64 + amplitude).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// A JPEG round trip through the `image` crate's encoder at `quality` (1–100).
pub fn jpeg(img: &RgbImage, quality: u8) -> Result<RgbImage> {
    let mut bytes = vec![];
    JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode_image(img)
        .map_err(|e| MirageError::BadParameter(format!("JPEG encoding failed: {e}")))?;
    let decoded = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)
        .map_err(|e| MirageError::BadParameter(format!("JPEG decoding failed: {e}")))?;
    Ok(decoded.to_rgb8())
}

fn psnr_of(a: &RgbImage, b: &RgbImage) -> Result<f64> {
    psnr(a, b).map_err(|e| MirageError::BadParameter(e.to_string()))
}

/// Bisection on a parameter whose PSNR falls as it grows, to reach `target` dB.
fn tune(
    target: f64,
    mut lo: f64,
    mut hi: f64,
    psnr_at: impl Fn(f64) -> Result<f64>,
) -> Result<f64> {
    for _ in 0..18 {
        let mid = 0.5 * (lo + hi);
        if psnr_at(mid)? > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(0.5 * (lo + hi))
}

/// The JPEG quality whose PSNR is closest to `target`.
fn jpeg_at_psnr(img: &RgbImage, target: f64) -> Result<RgbImage> {
    let (mut lo, mut hi) = (1u8, 100u8);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if psnr_of(img, &jpeg(img, mid)?)? > target {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let (a, b) = (jpeg(img, lo)?, jpeg(img, hi)?);
    let (pa, pb) = (psnr_of(img, &a)?, psnr_of(img, &b)?);
    Ok(if (pa - target).abs() <= (pb - target).abs() {
        a
    } else {
        b
    })
}

fn mean_psnr(originals: &[RgbImage], degraded: &[RgbImage]) -> Result<f64> {
    let mut total = 0.0;
    for (a, b) in originals.iter().zip(degraded) {
        total += psnr_of(a, b)?;
    }
    Ok(total / originals.len().max(1) as f64)
}

/// Held-out accuracy of a linear probe, real vs degraded: Fisher's linear discriminant
/// with its covariance shrunk towards a multiple of the identity (256 features and only
/// ~100 patches per class call for it), thresholded half-way between the class means.
/// Trained on the patches of the even-numbered images and tested on the odd-numbered
/// ones, then the other way round: no image is seen in both training and testing.
fn probe_accuracy(real: &[Tensor], degraded: &[Tensor]) -> f64 {
    let (mut correct, mut total) = (0.0, 0.0);
    for fold in 0..2 {
        let pick = |set: &[Tensor], train: bool| -> Tensor {
            let chosen: Vec<&Tensor> = set
                .iter()
                .enumerate()
                .filter(|(i, _)| (i % 2 == fold) == train)
                .map(|(_, t)| t)
                .collect();
            Tensor::cat(&chosen, 0)
        };
        let (train_real, train_degraded) = (pick(real, true), pick(degraded, true));
        let mean_real = train_real.mean_dim(0, true, Kind::Double);
        let mean_degraded = train_degraded.mean_dim(0, true, Kind::Double);
        let centred = Tensor::cat(
            &[&train_real - &mean_real, &train_degraded - &mean_degraded],
            0,
        );
        let d = centred.size()[1];
        let cov = centred.tr().mm(&centred) / (centred.size()[0] - 1) as f64;
        let ridge = 0.1 * cov.trace().double_value(&[]) / d as f64 + 1e-9;
        let eye = Tensor::eye(d, (Kind::Double, tch::Device::Cpu));
        let direction = Tensor::linalg_solve(
            &(cov * 0.9 + eye * ridge),
            &(&mean_real - &mean_degraded).tr(),
            true,
        );
        let threshold = ((&mean_real + &mean_degraded) / 2.0).mm(&direction);
        for (set, is_real) in [(real, true), (degraded, false)] {
            let test = pick(set, false);
            let says_real = test.mm(&direction).gt_tensor(&threshold).squeeze_dim(1);
            let right = if is_real {
                says_real
            } else {
                says_real.logical_not()
            };
            correct += right
                .to_kind(Kind::Double)
                .sum(Kind::Double)
                .double_value(&[]);
            total += test.size()[0] as f64;
        }
    }
    correct / total
}

/// Runs the whole validation. `mirage` (the codec and a quality) sets the PSNR that the
/// equal-PSNR group is tuned to; without it each image is tuned to 28 dB.
pub fn validate(
    measure: &RealismMeasure,
    naturalness: Option<&NaturalnessModel>,
    originals: &[RgbImage],
    mirage: Option<(&Codec, f64)>,
    generators: &[GeneratorSet],
    generator_bpp: f64,
) -> Result<Validation> {
    if originals.len() < 4 {
        return Err(MirageError::BadParameter(
            "validation needs at least 4 images".into(),
        ));
    }
    let per_image = |images: &[RgbImage]| -> Vec<Tensor> {
        images
            .iter()
            .map(|img| measure.patch_features(&measure.grid.cut(img)))
            .collect()
    };
    let cat = |parts: &[Tensor]| Tensor::cat(parts, 0);
    let sets =
        1 + 5 + 5 + 4 + 1 + 1 + NOISE_STDS.len() + MARK_AMPLITUDES.len() + 2 * generators.len();
    let bar = progress::bar(sets as u64, "validation sets");
    let natural_score = |images: &[RgbImage]| -> Result<f64> {
        naturalness.map_or(Ok(f64::NAN), |m| m.mean_score(images))
    };
    let real = per_image(originals);
    let real_all = cat(&real);
    bar.inc(1);
    let mut rows = vec![];
    let mut checks = vec![];
    let set_row = |test: &str,
                   setting: String,
                   degraded: &[RgbImage],
                   probe: bool|
     -> Result<(Row, Vec<Tensor>)> {
        let feats = per_image(degraded);
        let distances = measure.distance_between(&real_all, &cat(&feats))?;
        let probe_accuracy = probe.then(|| probe_accuracy(&real, &feats));
        bar.inc(1);
        Ok((
            Row {
                test: test.into(),
                setting,
                psnr: mean_psnr(originals, degraded)?,
                distances,
                naturalness: natural_score(degraded)?,
                probe_accuracy,
            },
            feats,
        ))
    };

    // 1. Blur.
    let mut series = vec![];
    for &sigma in &BLUR_SIGMAS {
        let blurred: Vec<RgbImage> = originals.iter().map(|i| gaussian_blur(i, sigma)).collect();
        let (row, _) = set_row("blur", format!("σ = {sigma}"), &blurred, false)?;
        series.push(row);
    }
    checks.push(monotonic_check("Gaussian blur σ 0 → 4", &series));
    rows.extend(series);

    // 2. JPEG.
    let mut series = vec![];
    for &q in &JPEG_QUALITIES {
        let compressed: Vec<RgbImage> = originals
            .iter()
            .map(|i| jpeg(i, q))
            .collect::<Result<_>>()?;
        let (row, _) = set_row("JPEG", format!("quality {q}"), &compressed, false)?;
        series.push(row);
    }
    checks.push(monotonic_check("JPEG quality 95 → 10", &series));
    rows.extend(series);

    // 3. Equal PSNR.
    let (targets, mirage_rows): (Vec<f64>, Vec<(Row, Vec<Tensor>)>) = match mirage {
        Some((codec, quality)) => {
            let decoded: Vec<RgbImage> = originals
                .iter()
                .map(|img| {
                    let (bytes, _) = codec.compress(img, RateTarget::Quality(quality))?;
                    Ok(codec.decompress(&bytes)?.0)
                })
                .collect::<Result<_>>()?;
            let targets = originals
                .iter()
                .zip(&decoded)
                .map(|(a, b)| psnr_of(a, b))
                .collect::<Result<_>>()?;
            let row = set_row(
                "equal PSNR",
                format!("Mirage MSE decode, quality {quality}"),
                &decoded,
                true,
            )?;
            (targets, vec![row])
        }
        None => (vec![28.0; originals.len()], vec![]),
    };
    let blurred: Vec<RgbImage> = originals
        .iter()
        .zip(&targets)
        .map(|(img, &t)| {
            let sigma = tune(t, 0.0, 12.0, |s| psnr_of(img, &gaussian_blur(img, s)))?;
            Ok(gaussian_blur(img, sigma))
        })
        .collect::<Result<_>>()?;
    let noisy: Vec<RgbImage> = originals
        .iter()
        .zip(&targets)
        .enumerate()
        .map(|(i, (img, &t))| {
            let std = tune(t, 0.0, 128.0, |s| {
                psnr_of(img, &add_noise(img, s, i as u64))
            })?;
            Ok(add_noise(img, std, i as u64))
        })
        .collect::<Result<_>>()?;
    let jpegs: Vec<RgbImage> = originals
        .iter()
        .zip(&targets)
        .map(|(img, &t)| jpeg_at_psnr(img, t))
        .collect::<Result<_>>()?;
    let mut equal = mirage_rows;
    equal.push(set_row(
        "equal PSNR",
        "Gaussian blur".into(),
        &blurred,
        true,
    )?);
    equal.push(set_row("equal PSNR", "JPEG".into(), &jpegs, true)?);
    equal.push(set_row(
        "equal PSNR",
        "Gaussian noise".into(),
        &noisy,
        true,
    )?);
    for (row, _) in &equal {
        if let Some(a) = row.probe_accuracy {
            checks.push(format!(
                "{} real vs {} patches at equal PSNR: linear probe {:.1}% on held-out images",
                if a >= 0.75 { "pass" } else { "FAIL" },
                row.setting,
                100.0 * a
            ));
        }
    }
    let (lo, hi) = equal
        .iter()
        .map(|(r, _)| r.distances.mfd)
        .fold((f64::INFINITY, 0f64), |(lo, hi), d| (lo.min(d), hi.max(d)));
    checks.push(format!(
        "{} equal-PSNR degradations get different MFDs (from {lo:.2} to {hi:.2}, ×{:.1})",
        if hi > 1.5 * lo { "pass" } else { "FAIL" },
        hi / lo.max(1e-12)
    ));
    rows.extend(equal.into_iter().map(|(r, _)| r));

    // 4. Noise floor: two disjoint halves of the real patches.
    let even: Vec<Tensor> = real.iter().step_by(2).map(|t| t.shallow_clone()).collect();
    let odd: Vec<Tensor> = real
        .iter()
        .skip(1)
        .step_by(2)
        .map(|t| t.shallow_clone())
        .collect();
    let floor = measure.distance_between(&cat(&even), &cat(&odd))?;
    bar.inc(1);
    rows.push(Row {
        test: "real vs real".into(),
        setting: "even vs odd images (noise floor)".into(),
        psnr: f64::NAN,
        distances: floor,
        naturalness: f64::NAN,
        probe_accuracy: None,
    });

    // 5. Strength series for the no-reference score (and MFD), each starting from the
    // originals themselves.
    let (original_row, _) = set_row("originals", "no change".into(), originals, false)?;
    rows.push(original_row.clone());
    let mut series = vec![original_row.clone()];
    for (i, &std) in NOISE_STDS.iter().enumerate() {
        let noisy: Vec<RgbImage> = originals
            .iter()
            .enumerate()
            .map(|(k, img)| add_noise(img, std, (i * 1000 + k) as u64))
            .collect();
        series.push(set_row("noise", format!("std {std} levels"), &noisy, false)?.0);
    }
    checks.push(monotonic_check("Gaussian noise std 0 → 16", &series));
    checks.extend(naturalness_check("Gaussian noise std 0 → 16", &series));
    rows.extend(series.into_iter().skip(1));
    let mut series = vec![original_row];
    for &a in &MARK_AMPLITUDES {
        let marked: Vec<RgbImage> = originals
            .iter()
            .map(|img| add_marks(img, a, MARK_PERIOD))
            .collect();
        series.push(
            set_row(
                "marks",
                format!("2×2 dots every {MARK_PERIOD} px, +{a} levels"),
                &marked,
                false,
            )?
            .0,
        );
    }
    checks.push(monotonic_check("periodic marks +0 → +16 levels", &series));
    checks.extend(naturalness_check("periodic marks +0 → +16 levels", &series));
    rows.extend(series.into_iter().skip(1));
    for (label, decodes) in generator_decodes(originals, generators, generator_bpp)? {
        rows.push(set_row("generator", label, &decodes, false)?.0);
    }
    bar.finish_and_clear();
    // Blur and JPEG series for the naturalness score too.
    for (test, what) in [
        ("blur", "Gaussian blur σ 0 → 4"),
        ("JPEG", "JPEG quality 95 → 10"),
    ] {
        let series: Vec<Row> = rows.iter().filter(|r| r.test == test).cloned().collect();
        checks.extend(naturalness_check(what, &series));
    }
    Ok(Validation {
        rows,
        checks,
        extractor_id: measure.extractor_id.clone(),
        images: originals.len(),
    })
}

/// Per generator, the MSE decodes and the w = 1 decodes of the same files.
fn generator_decodes(
    originals: &[RgbImage],
    generators: &[GeneratorSet],
    bpp: f64,
) -> Result<Vec<(String, Vec<RgbImage>)>> {
    let mut out = vec![];
    for g in generators {
        let (mut mse, mut realism) = (vec![], vec![]);
        let decoder =
            mirage::decoders::Decoder::Realism(g.generator, mirage::decoders::Realism::Weight(1.0));
        for img in originals {
            let (bytes, _) = g.codec.compress(img, RateTarget::Bpp(bpp))?;
            mse.push(g.codec.decompress(&bytes)?.0);
            realism.push(decoder.decompress(g.codec, &bytes)?.0);
        }
        out.push((format!("{}: MSE decode at {bpp} bpp", g.label), mse));
        out.push((format!("{}: w = 1 at {bpp} bpp", g.label), realism));
    }
    Ok(out)
}

/// "pass"/"FAIL": the mean naturalness score rises with the strength (none without a model).
fn naturalness_check(what: &str, series: &[Row]) -> Option<String> {
    if series.iter().any(|r| r.naturalness.is_nan()) {
        return None;
    }
    let rising = series
        .windows(2)
        .all(|w| w[1].naturalness > w[0].naturalness);
    Some(format!(
        "{} {what}: naturalness {} ({})",
        if rising { "pass" } else { "FAIL" },
        if rising {
            "rises monotonically"
        } else {
            "does NOT rise monotonically"
        },
        series
            .iter()
            .map(|r| format!("{:.2}", r.naturalness))
            .collect::<Vec<_>>()
            .join(" → ")
    ))
}

fn monotonic_check(what: &str, series: &[Row]) -> String {
    let rising = |f: fn(&Distances) -> f64| {
        series
            .windows(2)
            .all(|w| f(&w[1].distances) > f(&w[0].distances))
    };
    let (mfd, mkd) = (rising(|d| d.mfd), rising(|d| d.mkd));
    format!(
        "{} {what}: MFD {}, MKD {}",
        if mfd && mkd { "pass" } else { "FAIL" },
        if mfd {
            "rises monotonically"
        } else {
            "does NOT rise monotonically"
        },
        if mkd {
            "rises monotonically"
        } else {
            "does NOT rise monotonically"
        },
    )
}

impl Validation {
    /// The whole `docs/realism-measure.md`: what the measure is, then this run's table.
    pub fn document(&self, command: &str) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            r#"# MFD and MKD: Mirage's realism measure

*This file is written by `{command}`; edit the generator
(`crates/mirage/src/realism_measure/validate.rs`), not the file.*

**MFD** (Mirage Fréchet Distance) and **MKD** (Mirage Kernel Distance, ×1000) are FID
and KID computed on the features of the *Mirage realism extractor*, a small CNN that
the project trains itself, self-supervised, on `../shared/data/train` (never on Kodak).
No downloaded network is involved. They are **not** FID/KID: the numbers are on a
different scale and must never be compared with Inception-based values. They are
comparable with each other only for the same extractor file (its id is printed with
every result). The extractor is described in `models/realism-extractor.md`.

- **Protocol** (HiFiC, Mentzer et al. 2020): every image is cut into 256×256 patches on
  a grid, plus a second grid shifted by 128 px in both directions (8 patches per Kodak
  image, 192 for the set). Both sets are cut the same way.
- **Features**: mean and standard deviation over space of the activations of the four
  stages of the extractor (256 numbers), each standardised by a fixed mean and scale
  (measured on training patches, stored in the file) so no layer dominates.
- **MFD**: `‖μr − μt‖² + tr(Cr) + tr(Ct) − 2 tr((Cr^½ Ct Cr^½)^½)`, in f64, square roots
  by symmetric eigendecomposition.
- **MKD**: unbiased MMD² with KID's kernel `(xᵀy/256 + 1)³`, mean over 100 subsets of
  min(1000, N) patches drawn with a fixed seed, ×1000. The estimator is Gretton et
  al.'s paired U-statistic (it drops the `k(xᵢ, yᵢ)` terms that KID's code keeps), so a
  set against itself scores exactly 0 and paired sets (a decode and its original) are
  not biased downwards.
- Both are deterministic for the same inputs.

Caveats: with 192 patches and 256 features the covariances are rank-deficient, so MFD
on Kodak carries a large positive bias (see the noise floor below); compare MFDs of
sets with the same patch count only. MKD is unbiased and can be slightly negative. The
distances in the table are *paired* (each degraded set against the originals of the
same images), which is why the undistorted row is exactly 0 while the real-vs-real
floor (different images, 96 patches each) is not: the floor says how far two halves of
Kodak are from each other, the scale of a *content* difference, and is the yardstick
for unpaired comparisons, not for the paired rows above it.

## Naturalness: a no-reference score

MFD needs a reference set and rewarded the v1 generator's marks as texture, so every
table beside it also carries a **naturalness** score that needs neither a reference nor
a network: NIQE's recipe (Mittal et al. 2013), written for Mirage
(`crates/mirage-realism-measure/src/naturalness.rs`). Generalised-Gaussian fits to
locally normalised luma and to the products of neighbouring values, on 96×96 patches at
two scales (36 numbers a patch), are compared with a Gaussian of the same numbers on
sharp patches of the training photos (`models/naturalness.safetensors`, fitted by
`mirage realism fit-naturalness`; never on Kodak). Per image it is a Mahalanobis-like
distance; the table gives the mean over images. **Lower is more natural**; it is
unpaired, so the originals themselves score above zero.

## Validation on Kodak ({images} images, extractor `{id}`)

"#,
            images = self.images,
            id = self.extractor_id
        );
        s.push_str(&self.markdown_table());
        let _ = write!(
            s,
            r#"
"probe accuracy": a linear probe (Fisher's discriminant with shrinkage) on the features,
real vs degraded patches, trained on the even-numbered images and tested on the
odd-numbered ones and vice versa (held out by image); 50% is chance. The checks ask for
75%.

Reproduce: `{command}` (also writes `docs/realism-measure.csv`).
"#
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RgbImage {
        RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 8) as u8, ((x * y) % 256) as u8])
        })
    }

    #[test]
    fn blur_keeps_flat_images_and_lowers_psnr_with_sigma() {
        let flat = RgbImage::from_pixel(9, 7, image::Rgb([10, 20, 30]));
        assert_eq!(gaussian_blur(&flat, 2.0), flat);
        let img = sample();
        assert_eq!(gaussian_blur(&img, 0.0), img);
        let p1 = psnr_of(&img, &gaussian_blur(&img, 1.0)).unwrap();
        let p2 = psnr_of(&img, &gaussian_blur(&img, 2.0)).unwrap();
        assert!(p1 > p2, "{p1} {p2}");
    }

    #[test]
    fn noise_is_deterministic_and_tuning_reaches_the_target() {
        let img = sample();
        assert_eq!(add_noise(&img, 5.0, 3), add_noise(&img, 5.0, 3));
        let std = tune(30.0, 0.0, 128.0, |s| psnr_of(&img, &add_noise(&img, s, 1))).unwrap();
        let reached = psnr_of(&img, &add_noise(&img, std, 1)).unwrap();
        assert!((reached - 30.0).abs() < 0.3, "{reached}");
    }
}
