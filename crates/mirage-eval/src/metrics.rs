//! Full-reference quality metrics: PSNR, MS-SSIM, SSIMULACRA2 and butteraugli.
//!
//! Each is implemented (or called) here once, so every codec, Mirage included, is scored by
//! the same code. Conventions follow the usual published ones so numbers are comparable with
//! the literature and with `../shared/notes/baselines-kodak.md`.

use std::ffi::OsString;

use anyhow::{bail, Context, Result};
use image::RgbImage;

use crate::codecs::{write_ppm, Tool};

/// BT.601 luma in 8-bit levels, the one the per-pixel measures (grid marks, excess
/// detail, block edges) all read.
pub(crate) fn luma(p: &image::Rgb<u8>) -> f64 {
    0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64
}

fn check_same_size(a: &RgbImage, b: &RgbImage) -> Result<()> {
    if a.dimensions() != b.dimensions() {
        bail!(
            "images differ in size: {}x{} vs {}x{}",
            a.width(),
            a.height(),
            b.width(),
            b.height()
        );
    }
    Ok(())
}

/// PSNR in dB over all RGB samples (one MSE over the three channels, peak 255).
/// Identical images give `f64::INFINITY`.
pub fn psnr(reference: &RgbImage, distorted: &RgbImage) -> Result<f64> {
    check_same_size(reference, distorted)?;
    let sse: u64 = reference
        .as_raw()
        .iter()
        .zip(distorted.as_raw())
        .map(|(&a, &b)| {
            let d = i64::from(a) - i64::from(b);
            (d * d) as u64
        })
        .sum();
    let n = reference.as_raw().len() as f64;
    if sse == 0 {
        return Ok(f64::INFINITY);
    }
    let mse = sse as f64 / n;
    Ok(10.0 * (255.0 * 255.0 / mse).log10())
}

/// MS-SSIM scale weights of Wang, Simoncelli & Bovik (2003).
const MS_SSIM_WEIGHTS: [f64; 5] = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];
const GAUSSIAN_TAPS: usize = 11;
const GAUSSIAN_SIGMA: f64 = 1.5;

/// Smallest image side MS-SSIM accepts: the 11-tap window must fit at the 5th scale (1/16).
pub const MS_SSIM_MIN_SIDE: u32 = (GAUSSIAN_TAPS as u32) << 4;

/// MS-SSIM (Wang et al. 2003): 5 scales with the standard weights, 11-tap Gaussian window of
/// σ = 1.5, K1 = 0.01, K2 = 0.03, L = 255, "valid" filtering (no padding), 2×2 average
/// pooling between scales. Computed on R, G and B separately and averaged, as most learned
/// codec papers do (CompressAI, pytorch-msssim).
///
/// Negative contrast-structure terms (possible on very distorted images) are clamped to 0
/// before the fractional powers, as pytorch-msssim does, instead of producing NaN.
/// Errors if a side is smaller than [`MS_SSIM_MIN_SIDE`].
pub fn ms_ssim(reference: &RgbImage, distorted: &RgbImage) -> Result<f64> {
    check_same_size(reference, distorted)?;
    let (w, h) = reference.dimensions();
    if w.min(h) < MS_SSIM_MIN_SIDE {
        bail!("MS-SSIM needs both sides >= {MS_SSIM_MIN_SIDE} px, got {w}x{h}");
    }
    let kernel = gaussian_kernel();
    let mut total = 0.0;
    for c in 0..3 {
        let plane = |img: &RgbImage| Plane {
            w: w as usize,
            h: h as usize,
            data: img.pixels().map(|p| f64::from(p.0[c])).collect(),
        };
        let (mut x, mut y) = (plane(reference), plane(distorted));
        let mut value = 1.0;
        for (scale, &weight) in MS_SSIM_WEIGHTS.iter().enumerate() {
            let (ssim, cs) = ssim_terms(&x, &y, &kernel);
            let last = scale + 1 == MS_SSIM_WEIGHTS.len();
            let term = if last { ssim } else { cs };
            value *= term.max(0.0).powf(weight);
            if !last {
                x = x.half();
                y = y.half();
            }
        }
        total += value;
    }
    Ok(total / 3.0)
}

/// A single-channel image of f64 samples.
struct Plane {
    w: usize,
    h: usize,
    data: Vec<f64>,
}

impl Plane {
    /// 2×2 average pooling (odd last row/column dropped).
    fn half(&self) -> Plane {
        let (w, h) = (self.w / 2, self.h / 2);
        let mut data = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                let at = |dx: usize, dy: usize| self.data[(2 * y + dy) * self.w + 2 * x + dx];
                data.push((at(0, 0) + at(1, 0) + at(0, 1) + at(1, 1)) / 4.0);
            }
        }
        Plane { w, h, data }
    }
}

fn gaussian_kernel() -> Vec<f64> {
    let centre = (GAUSSIAN_TAPS / 2) as f64;
    let raw: Vec<f64> = (0..GAUSSIAN_TAPS)
        .map(|i| (-((i as f64 - centre).powi(2)) / (2.0 * GAUSSIAN_SIGMA * GAUSSIAN_SIGMA)).exp())
        .collect();
    let sum: f64 = raw.iter().sum();
    raw.into_iter().map(|v| v / sum).collect()
}

/// Mean SSIM and mean contrast-structure term over the valid windows.
///
/// The five local statistics (μx, μy, E[x²], E[y²], E[xy]) are filtered in one sweep: a
/// horizontal pass of every input row into five row-filtered planes, then, per output row,
/// the vertical pass, whose values are used at once instead of being stored as full-size
/// planes. The loops run over taps outside and pixels inside, so the inner loop is a plain
/// multiply-add the compiler vectorises; every output still sums its taps in kernel order,
/// so the result is bit-identical to filtering each statistic separately (tested).
fn ssim_terms(x: &Plane, y: &Plane, kernel: &[f64]) -> (f64, f64) {
    const C1: f64 = (0.01 * 255.0) * (0.01 * 255.0);
    const C2: f64 = (0.03 * 255.0) * (0.03 * 255.0);
    let k = kernel.len();
    let (w, h) = (x.w, x.h);
    let (ow, oh) = (w + 1 - k, h + 1 - k);
    let filter_row = |out: &mut [f64], input: &[f64]| {
        let n = out.len();
        for (t, &kv) in kernel.iter().enumerate() {
            for (d, v) in out.iter_mut().zip(&input[t..t + n]) {
                *d += kv * v;
            }
        }
    };

    // Horizontal pass: rows[s][r * ow..] is statistic s of input row r.
    let mut rows = vec![vec![0.0; ow * h]; 5];
    let (mut xx, mut yy, mut xy) = (vec![0.0; w], vec![0.0; w], vec![0.0; w]);
    for r in 0..h {
        let (xr, yr) = (&x.data[r * w..(r + 1) * w], &y.data[r * w..(r + 1) * w]);
        for i in 0..w {
            xx[i] = xr[i] * xr[i];
            yy[i] = yr[i] * yr[i];
            xy[i] = xr[i] * yr[i];
        }
        for (plane, input) in rows.iter_mut().zip([xr, yr, &xx, &yy, &xy]) {
            filter_row(&mut plane[r * ow..(r + 1) * ow], input);
        }
    }

    // Vertical pass, one output row at a time.
    let mut stats = vec![vec![0.0; ow]; 5];
    let (mut ssim_sum, mut cs_sum) = (0.0, 0.0);
    for r in 0..oh {
        for (out, plane) in stats.iter_mut().zip(&rows) {
            out.fill(0.0);
            for (t, &kv) in kernel.iter().enumerate() {
                let src = &plane[(r + t) * ow..(r + t + 1) * ow];
                for (d, v) in out.iter_mut().zip(src) {
                    *d += kv * v;
                }
            }
        }
        let [mu_x, mu_y, e_xx, e_yy, e_xy] = [0, 1, 2, 3, 4].map(|s| &stats[s]);
        for i in 0..ow {
            let (mx, my) = (mu_x[i], mu_y[i]);
            let var_x = e_xx[i] - mx * mx;
            let var_y = e_yy[i] - my * my;
            let cov = e_xy[i] - mx * my;
            let cs = (2.0 * cov + C2) / (var_x + var_y + C2);
            let luminance = (2.0 * mx * my + C1) / (mx * mx + my * my + C1);
            cs_sum += cs;
            ssim_sum += luminance * cs;
        }
    }
    let n = (ow * oh) as f64;
    (ssim_sum / n, cs_sum / n)
}

/// SSIMULACRA2 from the `ssimulacra2` crate (8-bit sRGB, BT.709 primaries). The crate agrees
/// with the reference C++ tool within about 0.03 (see the baselines note).
pub fn ssimulacra2(reference: &RgbImage, distorted: &RgbImage) -> Result<f64> {
    use ssimulacra2::{compute_frame_ssimulacra2, ColorPrimaries, Rgb, TransferCharacteristic};
    check_same_size(reference, distorted)?;
    let to_rgb = |img: &RgbImage| -> Result<Rgb> {
        let data = img
            .pixels()
            .map(|p| p.0.map(|v| f32::from(v) / 255.0))
            .collect();
        Rgb::new(
            data,
            img.width() as usize,
            img.height() as usize,
            TransferCharacteristic::SRGB,
            ColorPrimaries::BT709,
        )
        .context("cannot build an sRGB frame for SSIMULACRA2")
    };
    compute_frame_ssimulacra2(to_rgb(reference)?, to_rgb(distorted)?).context("SSIMULACRA2 failed")
}

/// Butteraugli distances from libjxl's reference tool.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Butteraugli {
    /// The max-norm score `butteraugli_main` prints first (the classic "butteraugli
    /// distance"; ~1 is the threshold of visible difference).
    pub max_norm: f64,
    /// The 3-norm (`--pnorm 3`), a smoother average that libjxl's benchmarks report.
    pub pnorm3: f64,
}

/// libjxl's `butteraugli_main`, shipped by Debian in `libjxl-devtools` (0.7 on bookworm).
pub const BUTTERAUGLI_TOOL: Tool = Tool::new("butteraugli_main", "libjxl-devtools");

/// Butteraugli via libjxl's own tool (no maintained Rust port matches it). Default viewing
/// conditions of the tool (80 nits intensity target). The images are handed over as binary
/// PPM, which the tool reads as 8-bit sRGB exactly as it reads PNG (same scores), without
/// the compression work.
pub fn butteraugli(reference: &RgbImage, distorted: &RgbImage) -> Result<Butteraugli> {
    check_same_size(reference, distorted)?;
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let (a, b) = (dir.path().join("a.ppm"), dir.path().join("b.ppm"));
    write_ppm(reference, &a)?;
    write_ppm(distorted, &b)?;
    let args: Vec<OsString> = vec![a.into(), b.into(), "--pnorm".into(), "3".into()];
    let (_, text) = BUTTERAUGLI_TOOL.run_captured(&args)?;
    parse_butteraugli(&text)
        .with_context(|| format!("cannot parse `butteraugli_main` output: {text:?}"))
}

fn parse_butteraugli(text: &str) -> Option<Butteraugli> {
    let mut max_norm = None;
    let mut pnorm3 = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("3-norm:") {
            pnorm3 = rest.trim().parse().ok();
        } else if max_norm.is_none() {
            max_norm = line.parse().ok();
        }
    }
    Some(Butteraugli {
        max_norm: max_norm?,
        pnorm3: pnorm3?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn textured(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v = ((x * 7 + y * 13) % 256) as u8;
            let s = (((x as f64 / 9.0).sin() * 100.0 + 128.0) as u8).wrapping_add((y % 17) as u8);
            image::Rgb([v, s, v.wrapping_mul(3)])
        })
    }

    /// Deterministic ±amplitude noise.
    fn noisy(img: &RgbImage, amplitude: i32) -> RgbImage {
        let mut state = 12345u32;
        let mut out = img.clone();
        for v in out.iter_mut() {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let n = (state >> 16) as i32 % (2 * amplitude + 1) - amplitude;
            *v = (i32::from(*v) + n).clamp(0, 255) as u8;
        }
        out
    }

    impl Plane {
        /// Separable "valid" convolution with a symmetric kernel: output is
        /// `(w - k + 1) x (h - k + 1)`.
        fn filter_valid(&self, kernel: &[f64]) -> Plane {
            let k = kernel.len();
            let (ow, oh) = (self.w + 1 - k, self.h + 1 - k);
            // Both passes loop over the taps outside and the pixels inside, so the inner loop
            // is a plain multiply-add over a row that the compiler vectorises; each output still
            // sums its taps in kernel order.
            let mut rows = vec![0.0; ow * self.h];
            for y in 0..self.h {
                let row = &self.data[y * self.w..(y + 1) * self.w];
                let out = &mut rows[y * ow..(y + 1) * ow];
                for (i, &kv) in kernel.iter().enumerate() {
                    for (d, s) in out.iter_mut().zip(&row[i..i + ow]) {
                        *d += kv * s;
                    }
                }
            }
            let mut data = vec![0.0; ow * oh];
            for y in 0..oh {
                for (i, &kv) in kernel.iter().enumerate() {
                    let src = &rows[(y + i) * ow..(y + i + 1) * ow];
                    for (d, s) in data[y * ow..(y + 1) * ow].iter_mut().zip(src) {
                        *d += kv * s;
                    }
                }
            }
            Plane { w: ow, h: oh, data }
        }

        fn map2(&self, other: &Plane, f: impl Fn(f64, f64) -> f64) -> Plane {
            Plane {
                w: self.w,
                h: self.h,
                data: self
                    .data
                    .iter()
                    .zip(&other.data)
                    .map(|(&a, &b)| f(a, b))
                    .collect(),
            }
        }
    }

    /// The plain way to compute [`ssim_terms`]: each statistic filtered into its own plane.
    /// The fused version must agree bit for bit.
    fn reference_ssim_terms(x: &Plane, y: &Plane, kernel: &[f64]) -> (f64, f64) {
        const C1: f64 = (0.01 * 255.0) * (0.01 * 255.0);
        const C2: f64 = (0.03 * 255.0) * (0.03 * 255.0);
        let mu_x = x.filter_valid(kernel);
        let mu_y = y.filter_valid(kernel);
        let xx = x.map2(x, |a, b| a * b).filter_valid(kernel);
        let yy = y.map2(y, |a, b| a * b).filter_valid(kernel);
        let xy = x.map2(y, |a, b| a * b).filter_valid(kernel);
        let n = mu_x.data.len() as f64;
        let (mut ssim_sum, mut cs_sum) = (0.0, 0.0);
        for i in 0..mu_x.data.len() {
            let (mx, my) = (mu_x.data[i], mu_y.data[i]);
            let var_x = xx.data[i] - mx * mx;
            let var_y = yy.data[i] - my * my;
            let cov = xy.data[i] - mx * my;
            let cs = (2.0 * cov + C2) / (var_x + var_y + C2);
            let luminance = (2.0 * mx * my + C1) / (mx * mx + my * my + C1);
            cs_sum += cs;
            ssim_sum += luminance * cs;
        }
        (ssim_sum / n, cs_sum / n)
    }

    #[test]
    fn fused_ssim_terms_match_the_plain_filtering() {
        let (a, b) = (textured(97, 64), noisy(&textured(97, 64), 25));
        let plane = |img: &RgbImage, c: usize| Plane {
            w: img.width() as usize,
            h: img.height() as usize,
            data: img.pixels().map(|p| f64::from(p.0[c])).collect(),
        };
        let kernel = gaussian_kernel();
        for c in 0..3 {
            let (x, y) = (plane(&a, c), plane(&b, c));
            assert_eq!(
                ssim_terms(&x, &y, &kernel),
                reference_ssim_terms(&x, &y, &kernel)
            );
        }
    }

    #[test]
    fn psnr_known_values() {
        let a = RgbImage::from_pixel(4, 4, image::Rgb([100, 100, 100]));
        assert_eq!(psnr(&a, &a).unwrap(), f64::INFINITY);
        let b = RgbImage::from_pixel(4, 4, image::Rgb([110, 100, 100]));
        // MSE = 100 / 3.
        let expected = 10.0 * (255.0f64 * 255.0 * 3.0 / 100.0).log10();
        assert!((psnr(&a, &b).unwrap() - expected).abs() < 1e-12);
        assert!(psnr(&a, &RgbImage::new(3, 4)).is_err());
    }

    #[test]
    fn ms_ssim_properties() {
        let a = textured(200, 180);
        assert!((ms_ssim(&a, &a).unwrap() - 1.0).abs() < 1e-12);
        let mild = ms_ssim(&a, &noisy(&a, 4)).unwrap();
        let strong = ms_ssim(&a, &noisy(&a, 40)).unwrap();
        assert!(
            1.0 > mild && mild > strong && strong > 0.0,
            "{mild} {strong}"
        );
        assert!(ms_ssim(&textured(150, 400), &textured(150, 400)).is_err());
    }

    #[test]
    fn gaussian_is_normalised_and_symmetric() {
        let k = gaussian_kernel();
        assert_eq!(k.len(), 11);
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((k[0] - k[10]).abs() < 1e-15 && k[5] > k[4]);
    }

    #[test]
    fn ssimulacra2_is_100_for_identical() {
        let a = textured(64, 64);
        assert!((ssimulacra2(&a, &a).unwrap() - 100.0).abs() < 1e-6);
        assert!(ssimulacra2(&a, &noisy(&a, 30)).unwrap() < 90.0);
    }

    #[test]
    fn parses_butteraugli_output() {
        let b = parse_butteraugli("15.1610670090\n3-norm: 5.076941\n").unwrap();
        assert_eq!(b.max_norm, 15.161067009);
        assert_eq!(b.pnorm3, 5.076941);
        assert!(parse_butteraugli("garbage").is_none());
    }
}
