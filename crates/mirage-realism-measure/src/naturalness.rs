//! Naturalness: a no-reference score of how far an image's local statistics are from
//! those of sharp natural photographs, in the manner of NIQE (Mittal, Soundararajan and
//! Bovik, "Making a completely blind image quality analyzer", 2013). **Lower is more
//! natural.** It needs no network and no reference image.
//!
//! Why Mirage has it: MFD compares a *set* with a reference set through a learned
//! extractor, and it rewarded the v1 generator's marks as texture. The statistics here
//! are the shape of the distribution of locally normalised luma (MSCN coefficients)
//! and of the products of neighbouring coefficients. Photographs give a characteristic
//! heavy-tailed, nearly symmetric shape; blur narrows it, noise makes it Gaussian,
//! blocking and periodic marks skew the neighbour products. None of that needs to be
//! learnt, only the photographs' typical values, which are fitted here on sharp patches
//! of the training photos (never Kodak) and shipped as `models/naturalness.safetensors`.
//!
//! Per image:
//! 1. luma in [0, 255]; MSCN `(I − μ) / (σ + 1)`, μ and σ over 7×7 Gaussian windows
//!    (σ_w = 7/6), edges replicated;
//! 2. on each 96×96 patch, an asymmetric generalised Gaussian (AGGD) is fitted by
//!    moment matching to the MSCN values (shape, mean variance: 2 numbers) and to the
//!    products of each value with its right, lower, lower-right and lower-left
//!    neighbour (shape, mean, left and right variance: 4 × 4 numbers), 18 in all;
//! 3. the same at half resolution (2×2 means, 48×48 patches): 36 numbers per patch;
//! 4. `score = sqrt((ν₁ − ν₂)ᵀ ((Σ₁ + Σ₂) / 2)⁺ (ν₁ − ν₂))`, with (ν₁, Σ₁) the
//!    photographs' Gaussian and (ν₂, Σ₂) fitted to the image's patches.
//!
//! The model is fitted only on patches whose mean local contrast is at least 3/4 of the
//! sharpest patch of their photo (NIQE's choice: the defocused backgrounds of photos
//! would otherwise teach it that blur is natural); a scored image uses all its patches.

use crate::error::{MirageError, Result};
use image::RgbImage;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::{Kind, Tensor};

/// Side of a patch at full resolution.
pub const PATCH: usize = 96;
/// Numbers per patch: 18 per scale, 2 scales.
pub const FEATURES: usize = 36;
/// A photo's patch is "sharp" (used for fitting) above this fraction of its sharpest.
const SHARP_FRACTION: f64 = 0.75;
/// The format name in the model file's metadata.
pub const FORMAT_NAME: &str = "mirage-naturalness-v1";

/// The bundled model, or `$MIRAGE_NATURALNESS_MODEL`.
pub fn default_model_path() -> PathBuf {
    std::env::var_os("MIRAGE_NATURALNESS_MODEL")
        .map(Into::into)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/naturalness.safetensors")
        })
}

/// One channel of samples, row-major.
#[derive(Clone, Debug)]
struct Plane {
    width: usize,
    height: usize,
    values: Vec<f64>,
}

impl Plane {
    fn luma(img: &RgbImage) -> Plane {
        let values = img
            .pixels()
            .map(|p| 0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64)
            .collect();
        Plane {
            width: img.width() as usize,
            height: img.height() as usize,
            values,
        }
    }

    fn at(&self, x: usize, y: usize) -> f64 {
        self.values[y * self.width + x]
    }

    /// 2×2 means (an odd last row or column is dropped).
    fn half(&self) -> Plane {
        let (width, height) = (self.width / 2, self.height / 2);
        let mut values = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                values.push(
                    0.25 * (self.at(2 * x, 2 * y)
                        + self.at(2 * x + 1, 2 * y)
                        + self.at(2 * x, 2 * y + 1)
                        + self.at(2 * x + 1, 2 * y + 1)),
                );
            }
        }
        Plane {
            width,
            height,
            values,
        }
    }

    /// Separable filtering with the 7-tap Gaussian window, edges replicated.
    fn gaussian(&self) -> Plane {
        let k = window();
        let (w, h) = (self.width as i64, self.height as i64);
        let pass = |input: &[f64], horizontal: bool| -> Vec<f64> {
            let mut out = vec![0.0; input.len()];
            for y in 0..h {
                for x in 0..w {
                    let mut acc = 0.0;
                    for (i, wt) in k.iter().enumerate() {
                        let d = i as i64 - 3;
                        let (sx, sy) = if horizontal {
                            ((x + d).clamp(0, w - 1), y)
                        } else {
                            (x, (y + d).clamp(0, h - 1))
                        };
                        acc += wt * input[(sy * w + sx) as usize];
                    }
                    out[(y * w + x) as usize] = acc;
                }
            }
            out
        };
        Plane {
            width: self.width,
            height: self.height,
            values: pass(&pass(&self.values, true), false),
        }
    }

    /// The MSCN coefficients and the local contrast σ.
    fn mscn(&self) -> (Plane, Plane) {
        let mu = self.gaussian();
        let squares = Plane {
            values: self.values.iter().map(|v| v * v).collect(),
            ..self.clone()
        };
        let mu_sq = squares.gaussian();
        let sigma: Vec<f64> = mu_sq
            .values
            .iter()
            .zip(&mu.values)
            .map(|(s, m)| (s - m * m).abs().sqrt())
            .collect();
        let mscn = self
            .values
            .iter()
            .zip(&mu.values)
            .zip(&sigma)
            .map(|((v, m), s)| (v - m) / (s + 1.0))
            .collect();
        (
            Plane {
                values: mscn,
                ..self.clone()
            },
            Plane {
                values: sigma,
                ..self.clone()
            },
        )
    }
}

/// The 7×7 Gaussian window's 1-D factor, σ = 7/6, summing to 1.
fn window() -> [f64; 7] {
    let sigma = 7.0 / 6.0;
    let mut k = [0.0; 7];
    for (i, v) in k.iter_mut().enumerate() {
        let d = i as f64 - 3.0;
        *v = (-d * d / (2.0 * sigma * sigma)).exp();
    }
    let total: f64 = k.iter().sum();
    k.map(|v| v / total)
}

fn gamma(x: f64) -> f64 {
    libm::lgamma(x).exp()
}

/// `ρ(α) = Γ(2/α)² / (Γ(1/α) Γ(3/α))` on the shape grid 0.2, 0.201, …, 10: the moment
/// ratio `E[|x|]² / E[x²]` of a generalised Gaussian of shape α, rising with α.
fn shape_table() -> &'static [(f64, f64)] {
    static TABLE: OnceLock<Vec<(f64, f64)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (200..=10_000)
            .map(|i| {
                let a = i as f64 / 1000.0;
                (
                    a,
                    gamma(2.0 / a).powi(2) / (gamma(1.0 / a) * gamma(3.0 / a)),
                )
            })
            .collect()
    })
}

/// Moment-matching AGGD fit (Lasmar, Stitou and Berthoumieu 2009):
/// `(shape α, mean η, left variance, right variance)`.
fn aggd(values: &[f64]) -> [f64; 4] {
    let (mut left, mut nl, mut right, mut nr, mut abs, mut sq) =
        (0.0, 0usize, 0.0, 0usize, 0.0, 0.0);
    for &v in values {
        if v < 0.0 {
            left += v * v;
            nl += 1;
        } else if v > 0.0 {
            right += v * v;
            nr += 1;
        }
        abs += v.abs();
        sq += v * v;
    }
    let n = values.len().max(1) as f64;
    // An empty side (a flat patch, or products that never change sign) gets a tiny
    // variance rather than a division by zero.
    let left_var = if nl > 0 { left / nl as f64 } else { 0.0 }.max(1e-12);
    let right_var = if nr > 0 { right / nr as f64 } else { 0.0 }.max(1e-12);
    let (abs, sq) = (abs / n, (sq / n).max(1e-12));
    let g = (left_var / right_var).sqrt();
    let r = abs * abs / sq;
    let target = r * (g.powi(3) + 1.0) * (g + 1.0) / (g * g + 1.0).powi(2);
    let alpha = shape_table()
        .iter()
        .min_by(|a, b| (a.1 - target).abs().total_cmp(&(b.1 - target).abs()))
        .map_or(2.0, |p| p.0);
    let scale = (gamma(1.0 / alpha) / gamma(3.0 / alpha)).sqrt();
    let mean =
        (right_var.sqrt() - left_var.sqrt()) * scale * gamma(2.0 / alpha) / gamma(1.0 / alpha);
    [alpha, mean, left_var, right_var]
}

/// The 18 numbers of one patch of MSCN coefficients `(x0, y0)`–`(x0 + side, y0 + side)`.
fn patch_features(mscn: &Plane, x0: usize, y0: usize, side: usize, out: &mut Vec<f64>) {
    let mut values = Vec::with_capacity(side * side);
    for y in y0..y0 + side {
        values.extend_from_slice(&mscn.values[y * mscn.width + x0..y * mscn.width + x0 + side]);
    }
    let [alpha, _, l, r] = aggd(&values);
    out.extend([alpha, 0.5 * (l + r)]);
    // Neighbour offsets (dx, dy): right, below, below-right, below-left; the product
    // wraps around inside the patch, so every patch has side² products.
    for (dx, dy) in [(1i64, 0i64), (0, 1), (1, 1), (-1, 1)] {
        let mut products = Vec::with_capacity(side * side);
        for y in 0..side {
            for x in 0..side {
                let nx = (x as i64 + dx).rem_euclid(side as i64) as usize;
                let ny = (y as i64 + dy).rem_euclid(side as i64) as usize;
                products.push(mscn.at(x0 + x, y0 + y) * mscn.at(x0 + nx, y0 + ny));
            }
        }
        out.extend(aggd(&products));
    }
}

/// The features of every 96×96 patch of an image, with each patch's sharpness (mean
/// local contrast at full resolution).
pub fn image_features(img: &RgbImage) -> Result<Vec<([f64; FEATURES], f64)>> {
    let (cols, rows) = (img.width() as usize / PATCH, img.height() as usize / PATCH);
    if cols == 0 || rows == 0 {
        return Err(MirageError::BadParameter(format!(
            "the naturalness score needs at least {PATCH}×{PATCH} pixels, got {}×{}",
            img.width(),
            img.height()
        )));
    }
    let full = Plane::luma(img);
    let (mscn_full, sigma) = full.mscn();
    let (mscn_half, _) = full.half().mscn();
    let mut out = Vec::with_capacity(cols * rows);
    for row in 0..rows {
        for col in 0..cols {
            let mut f = Vec::with_capacity(FEATURES);
            patch_features(&mscn_full, col * PATCH, row * PATCH, PATCH, &mut f);
            let h = PATCH / 2;
            patch_features(&mscn_half, col * h, row * h, h, &mut f);
            let mut sharpness = 0.0;
            for y in row * PATCH..(row + 1) * PATCH {
                for x in col * PATCH..(col + 1) * PATCH {
                    sharpness += sigma.at(x, y);
                }
            }
            let mut features = [0.0; FEATURES];
            features.copy_from_slice(&f);
            out.push((features, sharpness / (PATCH * PATCH) as f64));
        }
    }
    Ok(out)
}

/// Mean `[D]` and covariance `[D, D]` (normalised by N − 1, or zero for one row).
fn gaussian_of(rows: &[[f64; FEATURES]]) -> (Tensor, Tensor) {
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    let x = Tensor::from_slice(&flat).view([rows.len() as i64, FEATURES as i64]);
    let mean = x.mean_dim(0, true, Kind::Double);
    let centred = &x - &mean;
    let n = (rows.len() as f64 - 1.0).max(1.0);
    (mean.squeeze_dim(0), centred.tr().mm(&centred) / n)
}

/// The photographs' Gaussian over patch features.
pub struct NaturalnessModel {
    mean: Tensor,
    covariance: Tensor,
    /// What it was fitted on, for the card and the reports.
    pub photos: usize,
    pub patches: usize,
}

impl NaturalnessModel {
    /// Fits the model on the sharp patches of `photos` (see the module docs).
    pub fn fit(photos: &[RgbImage]) -> Result<NaturalnessModel> {
        let mut kept = vec![];
        let bar = crate::progress::bar(photos.len() as u64, "naturalness features");
        for img in photos {
            let Ok(patches) = image_features(img) else {
                bar.inc(1);
                continue;
            };
            let sharpest = patches.iter().map(|p| p.1).fold(0.0, f64::max);
            kept.extend(
                patches
                    .into_iter()
                    .filter(|(f, s)| {
                        *s >= SHARP_FRACTION * sharpest && f.iter().all(|v| v.is_finite())
                    })
                    .map(|p| p.0),
            );
            bar.inc(1);
        }
        bar.finish_and_clear();
        if kept.len() < 2 * FEATURES {
            return Err(MirageError::BadParameter(format!(
                "only {} sharp patches: too few photos to fit the naturalness model",
                kept.len()
            )));
        }
        let (mean, covariance) = gaussian_of(&kept);
        Ok(NaturalnessModel {
            mean,
            covariance,
            photos: photos.len(),
            patches: kept.len(),
        })
    }

    /// The score of one image: lower is more natural.
    pub fn score(&self, img: &RgbImage) -> Result<f64> {
        let rows: Vec<[f64; FEATURES]> = image_features(img)?
            .into_iter()
            .map(|p| p.0)
            .filter(|f| f.iter().all(|v| v.is_finite()))
            .collect();
        if rows.is_empty() {
            return Err(MirageError::BadParameter(
                "no patch of the image gave finite statistics".into(),
            ));
        }
        let (mean, covariance) = gaussian_of(&rows);
        let d = (&self.mean - mean).unsqueeze(1);
        let pooled = ((&self.covariance + covariance) / 2.0).linalg_pinv(1e-15, true);
        let q = d.tr().mm(&pooled).mm(&d).double_value(&[0, 0]);
        Ok(q.max(0.0).sqrt())
    }

    /// The mean score over images.
    pub fn mean_score(&self, images: &[RgbImage]) -> Result<f64> {
        let mut total = 0.0;
        for img in images {
            total += self.score(img)?;
        }
        Ok(total / images.len().max(1) as f64)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let to_bytes = |t: &Tensor| -> Vec<u8> {
            Vec::<f64>::try_from(t.flatten(0, -1))
                .unwrap_or_default()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        };
        let (mean, cov) = (to_bytes(&self.mean), to_bytes(&self.covariance));
        let views = [
            (
                "mean",
                TensorView::new(Dtype::F64, vec![FEATURES], &mean).map_err(st_error)?,
            ),
            (
                "covariance",
                TensorView::new(Dtype::F64, vec![FEATURES, FEATURES], &cov).map_err(st_error)?,
            ),
        ];
        let metadata = HashMap::from([
            ("format".to_string(), FORMAT_NAME.to_string()),
            ("photos".to_string(), self.photos.to_string()),
            ("patches".to_string(), self.patches.to_string()),
        ]);
        let mut bytes = safetensors::serialize(views, &Some(metadata)).map_err(st_error)?;
        mirage_nn::model_file::sort_header(&mut bytes)
            .map_err(|e| MirageError::BadParameter(format!("safetensors: {e}")))?;
        crate::image_io::write_atomically(path, &bytes, true)
    }

    pub fn load(path: &Path) -> Result<NaturalnessModel> {
        let bytes = std::fs::read(path).map_err(|e| {
            MirageError::BadParameter(format!(
                "cannot read the naturalness model {}: {e}",
                path.display()
            ))
        })?;
        let bad = |why: String| {
            MirageError::BadParameter(format!(
                "{} is not a naturalness model: {why}",
                path.display()
            ))
        };
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(FORMAT_NAME) {
            return Err(bad(format!("its format is not {FORMAT_NAME}")));
        }
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let read = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let view = st.tensor(name).map_err(|e| bad(e.to_string()))?;
            if view.dtype() != Dtype::F64 || view.shape() != shape {
                return Err(bad(format!("{name} is not f64 of shape {shape:?}")));
            }
            let v: Vec<f64> = view
                .data()
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect();
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            Ok(Tensor::from_slice(&v).view(dims.as_slice()))
        };
        let count = |key: &str| meta.get(key).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(NaturalnessModel {
            mean: read("mean", &[FEATURES])?,
            covariance: read("covariance", &[FEATURES, FEATURES])?,
            photos: count("photos"),
            patches: count("patches"),
        })
    }

    pub fn load_default() -> Result<NaturalnessModel> {
        NaturalnessModel::load(&default_model_path())
    }
}

fn st_error(e: safetensors::SafeTensorError) -> MirageError {
    MirageError::BadParameter(format!("safetensors: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{add_noise, gaussian_blur};

    /// A deterministic image with photo-like structure: smooth gradients, edges and
    /// fine texture at several scales.
    fn textured(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            let (fx, fy) = (x as f64, y as f64);
            let v = 128.0
                + 40.0 * (fx / 23.0).sin() * (fy / 31.0).cos()
                + 25.0 * ((fx * 0.7 + fy * 1.3) / 3.1).sin()
                + 12.0 * ((fx * fy) / 97.0).sin()
                + if (x / 40 + y / 50) % 2 == 0 {
                    30.0
                } else {
                    -30.0
                };
            let v = v.clamp(0.0, 255.0) as u8;
            image::Rgb([v, v.saturating_add(10), v.saturating_sub(10)])
        })
    }

    #[test]
    fn the_shape_fit_recovers_a_gaussian_and_a_laplacian() {
        // Deterministic samples by inverse CDF on a regular grid of probabilities.
        let n = 20_000;
        let probs = (0..n).map(|i| (i as f64 + 0.5) / n as f64);
        let laplace: Vec<f64> = probs
            .clone()
            .map(|p| {
                if p < 0.5 {
                    (2.0 * p).ln()
                } else {
                    -(2.0 * (1.0 - p)).ln()
                }
            })
            .collect();
        let [alpha, mean, l, r] = aggd(&laplace);
        assert!((alpha - 1.0).abs() < 0.05, "Laplacian shape {alpha}");
        assert!(mean.abs() < 1e-3 && (l - r).abs() < 1e-3, "{mean} {l} {r}");
        // Gaussian by Box–Muller on a grid.
        let gauss: Vec<f64> = (0..200)
            .flat_map(|i| {
                (0..100).map(move |j| {
                    let u1 = (i as f64 + 0.5) / 200.0;
                    let u2 = (j as f64 + 0.5) / 100.0;
                    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
                })
            })
            .collect();
        let [alpha, ..] = aggd(&gauss);
        assert!((alpha - 2.0).abs() < 0.1, "Gaussian shape {alpha}");
    }

    #[test]
    fn blur_and_noise_score_worse_than_the_images_the_model_was_fitted_on() {
        let photos: Vec<RgbImage> = (0..8).map(|i| textured(384 + 8 * i, 384)).collect();
        let model = NaturalnessModel::fit(&photos).unwrap();
        let clean = model.score(&photos[0]).unwrap();
        let blurred = model.score(&gaussian_blur(&photos[0], 2.0)).unwrap();
        let noisy = model.score(&add_noise(&photos[0], 20.0, 1)).unwrap();
        assert!(blurred > clean + 1.0, "blur {blurred} vs {clean}");
        assert!(noisy > clean + 1.0, "noise {noisy} vs {clean}");
    }

    #[test]
    fn a_saved_model_scores_the_same_and_small_images_are_refused() {
        let photos: Vec<RgbImage> = (0..10).map(|i| textured(300 + 8 * i, 300)).collect();
        let model = NaturalnessModel::fit(&photos).unwrap();
        let dir = std::env::temp_dir().join(format!("mirage-niqe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("n.safetensors");
        model.save(&path).unwrap();
        let back = NaturalnessModel::load(&path).unwrap();
        let img = textured(300, 200);
        assert_eq!(model.score(&img).unwrap(), back.score(&img).unwrap());
        assert!(model.score(&textured(95, 300)).is_err());
        std::fs::write(&path, b"not a model").unwrap();
        assert!(NaturalnessModel::load(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
