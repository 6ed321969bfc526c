//! Periodic marks: texture locked to a network's sampling grid.
//!
//! A generator that upsamples by a factor `P` (a pixel shuffle, a strided transposed
//! convolution) or that was trained against a discriminator with stride `P` can draw
//! the same small pattern in every `P × P` block: on flat areas it shows as a regular
//! grid of marks. Natural texture has no preferred phase, so its average over the
//! blocks' phases is close to zero. A grid pattern survives the average.
//!
//! [`grid_pattern`] measures that directly. It averages a luma residual (for the
//! realism decoder: decode − MSE decode, the texture the generator adds) over all
//! blocks, phase by phase, and returns the RMS of that mean `P × P` pattern in 8-bit
//! levels. That is the power of the residual's spectrum at the harmonics of `1/P`,
//! without an FFT. [`GridMarks`] compares it with the same figure for the detail that
//! the original has over the MSE decode, which is what the generator is meant to
//! restore.

use image::RgbImage;

use crate::metrics::luma;

/// The periods checked: the realism generator's pixel shuffle (4), the synthesis'
/// stride-2 stages (2, 8) and the latent's and discriminator's stride (16).
pub const PERIODS: [u32; 4] = [2, 4, 8, 16];

/// The RMS (8-bit levels) of the mean `period × period` pattern of `a − b` (luma), its
/// mean removed. Only whole blocks count, so every phase averages the same number of
/// pixels. `None` if the images differ in size or hold fewer than 4 blocks.
pub fn grid_pattern(a: &RgbImage, b: &RgbImage, period: u32) -> Option<f64> {
    if a.dimensions() != b.dimensions() || period == 0 {
        return None;
    }
    let (bw, bh) = (a.width() / period, a.height() / period);
    if bw * bh < 4 {
        return None;
    }
    let p = period as usize;
    let mut sums = vec![0f64; p * p];
    for y in 0..bh * period {
        for x in 0..bw * period {
            let d = luma(a.get_pixel(x, y)) - luma(b.get_pixel(x, y));
            sums[(y as usize % p) * p + x as usize % p] += d;
        }
    }
    let blocks = (bw * bh) as f64;
    let pattern: Vec<f64> = sums.iter().map(|s| s / blocks).collect();
    let mean = pattern.iter().sum::<f64>() / pattern.len() as f64;
    let energy = pattern.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / pattern.len() as f64;
    Some(energy.sqrt())
}

/// Grid patterns of a decoder's added texture, beside those of the original's own
/// detail, at each of [`PERIODS`].
#[derive(Clone, Debug, PartialEq)]
pub struct GridMarks {
    /// RMS levels of the mean pattern of decode − MSE decode, per period.
    pub added: Vec<f64>,
    /// The same for original − MSE decode: the detail a faithful generator restores.
    pub original: Vec<f64>,
}

impl GridMarks {
    /// Measures `decode` (a generative decode) against `mse` (the MSE decode of the same
    /// file) and `original`. `None` if the sizes differ or the image is too small.
    pub fn measure(original: &RgbImage, mse: &RgbImage, decode: &RgbImage) -> Option<GridMarks> {
        let mut added = vec![];
        let mut natural = vec![];
        for period in PERIODS {
            added.push(grid_pattern(decode, mse, period)?);
            natural.push(grid_pattern(original, mse, period)?);
        }
        Some(GridMarks {
            added,
            original: natural,
        })
    }

    /// The largest excess of the added pattern over the original's, in levels: 0 when
    /// the decoder adds no more grid-locked texture than the original has.
    pub fn worst_excess(&self) -> f64 {
        self.added
            .iter()
            .zip(&self.original)
            .map(|(a, o)| (a - o).max(0.0))
            .fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noisy(seed: u32, amplitude: i32) -> RgbImage {
        crate::test_images::noisy_ramp(512, 384, seed, amplitude)
    }

    /// Adds a fixed 4 × 4 mark pattern of ±`amplitude` levels to every block; it has
    /// no period-2 component (each 2 × 2 phase sums to zero).
    fn with_marks(img: &RgbImage, amplitude: i32) -> RgbImage {
        let sign = [1, 1, -1, -1];
        crate::test_images::with_offset(img, |x, y| {
            sign[(y % 4) as usize] * sign[(x % 4) as usize] * amplitude
        })
    }

    #[test]
    fn random_texture_has_almost_no_grid_pattern() {
        let base = noisy(1, 0);
        let textured = noisy(2, 12);
        for period in PERIODS {
            let rms = grid_pattern(&textured, &base, period).unwrap();
            assert!(rms < 0.6, "period {period}: {rms}");
        }
    }

    #[test]
    fn marks_show_at_their_period_and_its_multiples_only() {
        let base = noisy(1, 0);
        let marked = with_marks(&noisy(2, 12), 3);
        let at = |period| grid_pattern(&marked, &base, period).unwrap();
        // The pattern is ±3 everywhere: RMS about 3 levels (less where clamped).
        assert!(
            at(4) > 2.5 && at(8) > 2.5 && at(16) > 2.5,
            "{} {} {}",
            at(4),
            at(8),
            at(16)
        );
        // A period-4 pattern with no period-2 component leaves period 2 flat.
        assert!(at(2) < 0.6, "{}", at(2));
        let marks = GridMarks::measure(&noisy(2, 12), &base, &marked).unwrap();
        assert!(marks.worst_excess() > 1.0, "{marks:?}");
        let clean = GridMarks::measure(&noisy(2, 12), &base, &noisy(3, 12)).unwrap();
        assert!(clean.worst_excess() < 0.6, "{clean:?}");
    }

    #[test]
    fn mismatched_or_tiny_images_give_none() {
        let a = RgbImage::new(16, 16);
        assert_eq!(grid_pattern(&a, &RgbImage::new(16, 8), 4), None);
        assert_eq!(grid_pattern(&a, &a, 16), None);
        assert_eq!(grid_pattern(&a, &a, 0), None);
    }
}
