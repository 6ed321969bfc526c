//! Seeded noise for the generative decoders (the flow refiner's source, the realism
//! generator's noise inputs). It comes from a seeded ChaCha stream, not from libtorch,
//! so a file and a seed give the same noise on every run, thread count and CPU, and a
//! tiled decoder can draw it once for the whole image and cut each tile's window.

use rand::{rngs::StdRng, Rng, SeedableRng};

/// `n` standard normal values from `seed` (Box–Muller).
pub fn seeded_normal(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
        let u2: f64 = rng.gen();
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = std::f64::consts::TAU * u2;
        out.push((radius * angle.cos()) as f32);
        out.push((radius * angle.sin()) as f32);
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_normal_is_seeded_and_standard() {
        let a = seeded_normal(100_000, 3);
        assert_eq!(a, seeded_normal(100_000, 3));
        assert_ne!(a[..10], seeded_normal(10, 4)[..]);
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        // 100k samples: standard errors of about 0.003 (mean) and 0.0045 (variance).
        assert!(
            mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
            "{mean} {var}"
        );
    }
}
