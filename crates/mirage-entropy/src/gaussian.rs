//! The fixed family of quantized Gaussian tables used to code the latent `y`.
//!
//! The hyper-synthesis predicts a mean and a scale for each latent element.
//! The codec subtracts the mean, rounds, and codes the residual with the
//! table of [`scale_index`]`(scale)`. Because the table set is part of the
//! bitstream definition, it is built with the bit-reproducible arithmetic in
//! `normal` rather than the platform's libm, and a test pins its exact
//! contents.

use std::sync::OnceLock;

use crate::cdf::CdfTable;
use crate::normal::normal_tail;

/// Number of Gaussian tables.
pub const NUM_SCALES: usize = 64;

/// Standard deviations of the tables: `exp(linspace(ln 0.11, ln 256, 64))`
/// rounded to `f32`. Written out rather than computed so that the scale
/// boundaries do not depend on the platform's `exp`.
#[rustfmt::skip]
pub const SCALES: [f32; NUM_SCALES] = [
    0.11, 0.1244041, 0.14069436, 0.15911779, 0.1799537, 0.20351799, 0.23016793, 0.26030758,
    0.29439393, 0.33294374, 0.37654153, 0.4258483, 0.48161158, 0.5446769, 0.61600035, 0.6966634,
    0.78788894, 0.8910602, 1.0077413, 1.1397014, 1.2889411, 1.4577234, 1.648607, 1.8644861,
    2.1086338, 2.3847518, 2.6970265, 3.0501924, 3.449604, 3.9013174, 4.412181, 4.9899397,
    5.6433544, 6.3823314, 7.218075, 8.163256, 9.232204, 10.441129, 11.808356, 13.354618,
    15.103357, 17.081087, 19.317795, 21.84739, 24.708227, 27.94368, 31.602804, 35.741077,
    40.42124, 45.71426, 51.700375, 58.470352, 66.12684, 74.785904, 84.57885, 95.654144,
    108.17971, 122.34546, 138.36615, 156.4847, 176.97581, 200.15015, 226.3591, 256.0,
];

/// Half-width of each table in standard deviations: the table for scale `s`
/// has regular slots for `-r..=r` with `r = ceil(TAIL_SIGMAS * s)`. Values
/// beyond have probability about `1e-9` in total and go through the escape.
pub const TAIL_SIGMAS: f64 = 6.1;

/// Index of the largest table scale that is `<= scale`.
///
/// Scales below `SCALES[0]` (including zero, negatives and NaN) give 0;
/// scales above `SCALES[63]` (including infinity) give 63. Rounding down
/// picks the narrower of the two neighbouring tables. Only comparisons are
/// used, so the encoder and decoder agree whenever they agree on `scale`.
pub fn scale_index(scale: f32) -> usize {
    // NaN compares false with everything, so it counts zero table scales
    // below it and lands on index 0 like any tiny scale.
    SCALES
        .partition_point(|&table_scale| table_scale <= scale)
        .saturating_sub(1)
}

/// The 64 tables, one per entry of [`SCALES`], built once and cached.
///
/// Table `i` has `offset = -r` and regular slots for `-r..=r` where
/// `r = ceil(TAIL_SIGMAS * SCALES[i])`; slot `k` has probability
/// `Phi((k + 0.5) / s) - Phi((k - 0.5) / s)`, quantized by
/// [`CdfTable::from_pmf`], and the escape slot gets the remaining tail mass.
pub fn gaussian_tables() -> &'static [CdfTable] {
    static TABLES: OnceLock<Vec<CdfTable>> = OnceLock::new();
    TABLES.get_or_init(|| SCALES.iter().map(|&s| build_table(f64::from(s))).collect())
}

fn build_table(scale: f64) -> CdfTable {
    let radius = (TAIL_SIGMAS * scale).ceil() as i32;
    let pmf: Vec<f64> = (-radius..=radius)
        .map(|k| rounded_gaussian_mass(k, scale))
        .collect();
    CdfTable::from_pmf(&pmf, -radius)
}

/// Probability that a zero-mean Gaussian of standard deviation `scale`
/// rounds to `k`.
fn rounded_gaussian_mass(k: i32, scale: f64) -> f64 {
    // Computed as a difference of upper tails of |k|: the distribution is
    // symmetric, and small tails subtract without the cancellation that
    // `Phi(b) - Phi(a)` would suffer far from the mean.
    let distance = f64::from(k.unsigned_abs());
    if k == 0 {
        1.0 - 2.0 * normal_tail(0.5 / scale)
    } else {
        normal_tail((distance - 0.5) / scale) - normal_tail((distance + 0.5) / scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_match_their_definition() {
        let (low, high) = (0.11f64.ln(), 256f64.ln());
        for (i, &scale) in SCALES.iter().enumerate() {
            let expected = (low + (high - low) * i as f64 / 63.0).exp();
            let error = ((f64::from(scale) - expected) / expected).abs();
            assert!(error < 1e-6, "SCALES[{i}] = {scale}, expected {expected}");
        }
    }

    #[test]
    fn scale_index_rounds_down() {
        for (i, &scale) in SCALES.iter().enumerate() {
            assert_eq!(scale_index(scale), i);
            if i + 1 < NUM_SCALES {
                let between = (scale + SCALES[i + 1]) / 2.0;
                assert_eq!(scale_index(between), i);
            }
        }
        assert_eq!(scale_index(0.0), 0);
        assert_eq!(scale_index(-5.0), 0);
        assert_eq!(scale_index(0.05), 0);
        assert_eq!(scale_index(f32::NAN), 0);
        assert_eq!(scale_index(1e6), NUM_SCALES - 1);
        assert_eq!(scale_index(f32::INFINITY), NUM_SCALES - 1);
    }

    #[test]
    fn tables_have_the_documented_shape() {
        let tables = gaussian_tables();
        assert_eq!(tables.len(), NUM_SCALES);
        for (table, &scale) in tables.iter().zip(&SCALES) {
            let radius = (TAIL_SIGMAS * f64::from(scale)).ceil() as i32;
            assert_eq!(table.offset(), -radius);
            assert_eq!(table.len(), 2 * radius as usize + 2);
            assert!(CdfTable::from_cdf(table.cdf().to_vec(), table.offset()).is_ok());
            // The zero slot is the most probable one.
            let freq = |slot: usize| table.cdf()[slot + 1] - table.cdf()[slot];
            let zero = radius as usize;
            assert!((0..table.len()).all(|slot| freq(slot) <= freq(zero)));
        }
    }

    #[test]
    fn masses_sum_to_one() {
        for &scale in &[0.11, 1.0, 37.5, 256.0] {
            let radius = (TAIL_SIGMAS * scale).ceil() as i32;
            let total: f64 = (-radius..=radius)
                .map(|k| rounded_gaussian_mass(k, scale))
                .sum();
            assert!((1.0 - total).abs() < 1e-8, "scale {scale}: {total}");
        }
    }

    /// Pins the exact table contents. The tables are part of the bitstream
    /// format: any change to them, however small, makes existing `.mrg`
    /// files decode to garbage. If this test fails, the change must either
    /// be reverted or come with a new format/model version.
    #[test]
    fn tables_are_frozen() {
        // 64-bit FNV-1a over (offset, length, cdf entries) of every table,
        // each value as little-endian bytes.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for &byte in bytes {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for table in gaussian_tables() {
            feed(&table.offset().to_le_bytes());
            feed(&(table.len() as u32).to_le_bytes());
            for &c in table.cdf() {
                feed(&c.to_le_bytes());
            }
        }
        assert_eq!(
            hash, 0xa85a_79dc_ed68_d28b,
            "Gaussian tables changed: hash {hash:#018x}"
        );
    }
}
