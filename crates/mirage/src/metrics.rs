//! Image quality metrics used by the benchmark: PSNR and MS-SSIM (written here, they are
//! short and standard) and SSIMULACRA2 (from the `ssimulacra2` crate).

use image::RgbImage;
use ssimulacra2::{compute_frame_ssimulacra2, ColorPrimaries, Rgb, TransferCharacteristic};

/// PSNR over all three RGB channels, for 8-bit images (peak 255).
pub fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(
        a.dimensions(),
        b.dimensions(),
        "PSNR of images of different sizes"
    );
    let se: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    let mse = se / a.as_raw().len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    }
}

/// One channel as a float plane.
struct Plane {
    w: usize,
    h: usize,
    v: Vec<f64>,
}

impl Plane {
    fn channel(img: &RgbImage, c: usize) -> Plane {
        Plane {
            w: img.width() as usize,
            h: img.height() as usize,
            v: img.pixels().map(|p| p[c] as f64).collect(),
        }
    }

    /// 2×2 average pooling (odd edges dropped), the MS-SSIM downsampling.
    fn downsample(&self) -> Plane {
        let (w, h) = (self.w / 2, self.h / 2);
        let mut v = vec![0.0; w * h];
        for y in 0..h {
            for x in 0..w {
                let at = |dx, dy| self.v[(2 * y + dy) * self.w + 2 * x + dx];
                v[y * w + x] = (at(0, 0) + at(1, 0) + at(0, 1) + at(1, 1)) / 4.0;
            }
        }
        Plane { w, h, v }
    }

    fn map(&self, other: &Plane, f: impl Fn(f64, f64) -> f64) -> Plane {
        Plane {
            w: self.w,
            h: self.h,
            v: self
                .v
                .iter()
                .zip(&other.v)
                .map(|(&a, &b)| f(a, b))
                .collect(),
        }
    }

    /// "Valid" separable Gaussian filtering (11 taps, σ = 1.5), as in Wang et al.
    fn blur(&self, k: &[f64]) -> Plane {
        let n = k.len();
        let (w, h) = (self.w + 1 - n, self.h + 1 - n);
        let mut rows = vec![0.0; w * self.h];
        for y in 0..self.h {
            for x in 0..w {
                rows[y * w + x] = (0..n).map(|i| k[i] * self.v[y * self.w + x + i]).sum();
            }
        }
        let mut v = vec![0.0; w * h];
        for y in 0..h {
            for x in 0..w {
                v[y * w + x] = (0..n).map(|i| k[i] * rows[(y + i) * w + x]).sum();
            }
        }
        Plane { w, h, v }
    }
}

const MS_SSIM_WEIGHTS: [f64; 5] = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];
const WINDOW: usize = 11;

/// (mean SSIM, mean contrast-structure) of one scale.
fn ssim_terms(a: &Plane, b: &Plane, k: &[f64]) -> (f64, f64) {
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let (mu_a, mu_b) = (a.blur(k), b.blur(k));
    let aa = a.map(a, |x, y| x * y).blur(k);
    let bb = b.map(b, |x, y| x * y).blur(k);
    let ab = a.map(b, |x, y| x * y).blur(k);
    let (mut ssim, mut cs) = (0.0, 0.0);
    for i in 0..mu_a.v.len() {
        let (ma, mb) = (mu_a.v[i], mu_b.v[i]);
        let (va, vb, cov) = (aa.v[i] - ma * ma, bb.v[i] - mb * mb, ab.v[i] - ma * mb);
        let cs_i = (2.0 * cov + c2) / (va + vb + c2);
        cs += cs_i;
        ssim += (2.0 * ma * mb + c1) / (ma * ma + mb * mb + c1) * cs_i;
    }
    let n = mu_a.v.len() as f64;
    (ssim / n, cs / n)
}

/// MS-SSIM (Wang et al. 2003) on RGB: per channel, averaged, with the standard five
/// scales and weights. `None` if the image is too small for five scales (a side under
/// 176 px).
pub fn ms_ssim(a: &RgbImage, b: &RgbImage) -> Option<f64> {
    assert_eq!(
        a.dimensions(),
        b.dimensions(),
        "MS-SSIM of images of different sizes"
    );
    if a.width().min(a.height()) < (WINDOW as u32) << 4 {
        return None;
    }
    let sigma = 1.5f64;
    let mut k: Vec<f64> = (0..WINDOW)
        .map(|i| (-((i as f64 - 5.0).powi(2)) / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    let mut total = 0.0;
    for c in 0..3 {
        let (mut pa, mut pb) = (Plane::channel(a, c), Plane::channel(b, c));
        let mut value = 1.0;
        for (scale, &w) in MS_SSIM_WEIGHTS.iter().enumerate() {
            let (ssim, cs) = ssim_terms(&pa, &pb, &k);
            // Negative contrast-structure terms are clamped, as common implementations do,
            // so that a fractional power stays real.
            if scale == MS_SSIM_WEIGHTS.len() - 1 {
                value *= ssim.max(0.0).powf(w);
            } else {
                value *= cs.max(0.0).powf(w);
                pa = pa.downsample();
                pb = pb.downsample();
            }
        }
        total += value;
    }
    Some(total / 3.0)
}

fn to_ssimulacra_rgb(img: &RgbImage) -> Option<Rgb> {
    let data = img
        .pixels()
        .map(|p| {
            [
                p[0] as f32 / 255.0,
                p[1] as f32 / 255.0,
                p[2] as f32 / 255.0,
            ]
        })
        .collect();
    Rgb::new(
        data,
        img.width() as usize,
        img.height() as usize,
        TransferCharacteristic::SRGB,
        ColorPrimaries::BT709,
    )
    .ok()
}

/// SSIMULACRA2 (higher is better; 90 ≈ visually lossless, below 0 is very poor).
pub fn ssimulacra2(reference: &RgbImage, distorted: &RgbImage) -> Option<f64> {
    compute_frame_ssimulacra2(to_ssimulacra_rgb(reference)?, to_ssimulacra_rgb(distorted)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noisy(img: &RgbImage, amount: i32, seed: u32) -> RgbImage {
        let mut s = seed;
        let mut out = img.clone();
        for v in out.iter_mut() {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let n = ((s >> 16) as i32 % (2 * amount + 1)) - amount;
            *v = (*v as i32 + n).clamp(0, 255) as u8;
        }
        out
    }

    fn gradient() -> RgbImage {
        RgbImage::from_fn(200, 190, |x, y| {
            image::Rgb([x as u8, y as u8, ((x * y) % 256) as u8])
        })
    }

    #[test]
    fn identical_images_score_perfectly() {
        let img = gradient();
        assert!(psnr(&img, &img).is_infinite());
        assert!((ms_ssim(&img, &img).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn psnr_of_a_known_error() {
        let a = gradient();
        let mut b = a.clone();
        b.iter_mut().for_each(|v| *v = v.saturating_add(1).max(1));
        // Every value off by exactly 1 except the 255s that saturate; compute exactly.
        let se: f64 = a
            .iter()
            .zip(b.iter())
            .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
            .sum();
        let want = 10.0 * (255.0f64.powi(2) / (se / a.as_raw().len() as f64)).log10();
        assert!((psnr(&a, &b) - want).abs() < 1e-12);
    }

    #[test]
    fn more_noise_scores_worse() {
        let img = gradient();
        let (light, heavy) = (noisy(&img, 4, 1), noisy(&img, 40, 1));
        assert!(psnr(&img, &light) > psnr(&img, &heavy));
        assert!(ms_ssim(&img, &light).unwrap() > ms_ssim(&img, &heavy).unwrap());
        assert!(ssimulacra2(&img, &light).unwrap() > ssimulacra2(&img, &heavy).unwrap());
    }

    #[test]
    fn ms_ssim_needs_five_scales() {
        let small = RgbImage::new(100, 300);
        assert!(ms_ssim(&small, &small).is_none());
    }
}
