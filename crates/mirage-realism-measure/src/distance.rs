//! Set distances between two samples of feature vectors (rows of `[N, D]` f64 tensors):
//! the Fréchet distance between Gaussians fitted to them (the formula of FID) and the
//! unbiased kernel MMD² with a cubic polynomial kernel (the formula of KID).
//!
//! Everything is in f64: the Fréchet distance subtracts traces of similar size, and f32
//! cancellation would show up as noise (even negative values) for close sets.

use crate::error::{MirageError, Result};
use rand::{rngs::StdRng, SeedableRng};
use tch::{Kind, Tensor};

fn check(a: &Tensor, b: &Tensor, min_rows: i64) -> Result<()> {
    let (sa, sb) = (a.size(), b.size());
    if sa.len() != 2 || sb.len() != 2 || sa[1] != sb[1] {
        return Err(MirageError::BadParameter(format!(
            "feature sets must be [N, D] with the same D, got {sa:?} and {sb:?}"
        )));
    }
    if sa[0] < min_rows || sb[0] < min_rows {
        return Err(MirageError::BadParameter(format!(
            "need at least {min_rows} patches in each set, got {} and {}",
            sa[0], sb[0]
        )));
    }
    Ok(())
}

/// Mean `[D]` and unbiased covariance `[D, D]` of the rows.
fn moments(x: &Tensor) -> (Tensor, Tensor) {
    let x = x.to_kind(Kind::Double);
    let mean = x.mean_dim(0, false, Kind::Double);
    let centred = &x - &mean;
    let cov = centred.tr().mm(&centred) / (x.size()[0] - 1) as f64;
    (mean, cov)
}

/// The square root of a symmetric positive semi-definite matrix, by eigendecomposition
/// (eigenvalues that rounding made slightly negative are taken as zero).
fn psd_sqrt(m: &Tensor) -> Tensor {
    let (values, vectors) = m.linalg_eigh("L");
    let roots = values.clamp_min(0.0).sqrt();
    (&vectors * roots.unsqueeze(0)).mm(&vectors.tr())
}

/// `‖μa − μb‖² + tr(Ca) + tr(Cb) − 2 tr((Ca^½ Cb Ca^½)^½)`.
///
/// The last trace uses the symmetric form `Ca^½ Cb Ca^½` rather than `Ca Cb` (which
/// scipy's `sqrtm` takes): it has the same eigenvalues but is symmetric, so `eigh`
/// applies and the result is real by construction.
pub fn frechet_distance(a: &Tensor, b: &Tensor) -> Result<f64> {
    check(a, b, 2)?;
    let (mu_a, cov_a) = moments(a);
    let (mu_b, cov_b) = moments(b);
    let root_a = psd_sqrt(&cov_a);
    let product = root_a.mm(&cov_b).mm(&root_a);
    let product = (&product + product.tr()) / 2.0;
    let cross = product
        .linalg_eigvalsh("L")
        .clamp_min(0.0)
        .sqrt()
        .sum(Kind::Double)
        .double_value(&[]);
    let mean_term = (mu_a - mu_b).square().sum(Kind::Double).double_value(&[]);
    let traces = cov_a.trace().double_value(&[]) + cov_b.trace().double_value(&[]);
    // Identical sets give a tiny negative number from rounding; a distance is ≥ 0.
    Ok((mean_term + traces - 2.0 * cross).max(0.0))
}

/// How KID subsamples (the defaults of Bińkowski et al. 2018's reference code).
#[derive(Clone, Copy, Debug)]
pub struct KernelOptions {
    pub subsets: usize,
    pub subset_size: usize,
    /// The subsets are drawn with this seed, so a distance is a pure function of its inputs.
    pub seed: u64,
}

impl Default for KernelOptions {
    fn default() -> Self {
        KernelOptions {
            subsets: 100,
            subset_size: 1000,
            seed: 0,
        }
    }
}

/// Unbiased MMD² with the kernel `k(x, y) = (xᵀy / D + 1)³` (KID's kernel and subset
/// scheme), averaged over random subsets of `m = min(subset_size, Na, Nb)` rows.
///
/// The estimator is Gretton et al. 2012's U-statistic (their Lemma 6): pairs `(xᵢ, yᵢ)`
/// and the sum over `i ≠ j` of `k(xᵢ,xⱼ) + k(yᵢ,yⱼ) − k(xᵢ,yⱼ) − k(xⱼ,yᵢ)`. KID's
/// reference code keeps the `k(xᵢ, yᵢ)` terms, which is unbiased only for independent
/// sets; here sets are usually *paired* (a decode and its original), and with those terms
/// a set against itself would score −2(mean k(x,x) − mean k(x,y))/m instead of 0. When both
/// sets have the same size, the same rows are drawn from each so that pairs stay paired.
/// It can still be slightly negative for two samples of one distribution; that is what
/// makes it unbiased.
pub fn kernel_distance(a: &Tensor, b: &Tensor, options: KernelOptions) -> Result<f64> {
    check(a, b, 2)?;
    let (na, nb) = (a.size()[0] as usize, b.size()[0] as usize);
    let d = a.size()[1] as f64;
    let m = options.subset_size.min(na).min(nb);
    let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
    let kernel = |x: &Tensor, y: &Tensor| (x.mm(&y.tr()) / d + 1.0).pow_tensor_scalar(3);
    let mut rng = StdRng::seed_from_u64(options.seed);
    let pick = |n: usize, rng: &mut StdRng| {
        let mut idx: Vec<i64> = rand::seq::index::sample(rng, n, m)
            .into_iter()
            .map(|i| i as i64)
            .collect();
        // Sorted, so a subset that is the whole set sums in the same order each time.
        idx.sort_unstable();
        Tensor::from_slice(&idx)
    };
    let mut total = 0.0;
    for _ in 0..options.subsets.max(1) {
        let rows_a = pick(na, &mut rng);
        let rows_b = if na == nb {
            rows_a.shallow_clone()
        } else {
            pick(nb, &mut rng)
        };
        let x = a.index_select(0, &rows_a);
        let y = b.index_select(0, &rows_b);
        let h = kernel(&x, &x) + kernel(&y, &y) - kernel(&x, &y) - kernel(&y, &x);
        let off_diagonal = h.sum(Kind::Double).double_value(&[]) - h.trace().double_value(&[]);
        total += off_diagonal / (m as f64 * (m as f64 - 1.0));
    }
    Ok(total / options.subsets.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian(n: i64, d: i64, shift: f64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        Tensor::randn([n, d], (Kind::Double, tch::Device::Cpu)) + shift
    }

    #[test]
    fn frechet_of_a_set_with_itself_is_zero() {
        let a = gaussian(300, 16, 0.0, 1);
        assert!(frechet_distance(&a, &a).unwrap() < 1e-9);
    }

    #[test]
    fn frechet_is_symmetric_and_sees_a_mean_shift() {
        let a = gaussian(400, 8, 0.0, 2);
        let b = gaussian(400, 8, 0.5, 3);
        let ab = frechet_distance(&a, &b).unwrap();
        let ba = frechet_distance(&b, &a).unwrap();
        assert!((ab - ba).abs() < 1e-9 * ab.max(1.0), "{ab} vs {ba}");
        // The mean term alone is 8 × 0.5² = 2; sampling adds a little.
        assert!((1.6..2.6).contains(&ab), "{ab}");
    }

    #[test]
    fn frechet_matches_the_closed_form_for_a_scaled_set() {
        // For b = 2a: ‖μ − 2μ‖² + tr C + tr 4C − 2 tr((C^½ 4C C^½)^½) = ‖μ‖² + tr C.
        let a = gaussian(500, 4, 0.0, 4);
        let b = &a * 2.0;
        let (_, cov) = moments(&a);
        let expected = cov.trace().double_value(&[])
            + (a.mean_dim(0, false, Kind::Double))
                .square()
                .sum(Kind::Double)
                .double_value(&[]);
        let fd = frechet_distance(&a, &b).unwrap();
        assert!((fd - expected).abs() < 1e-8, "{fd} vs {expected}");
    }

    #[test]
    fn kernel_distance_is_near_zero_for_one_distribution_and_grows_with_a_shift() {
        let o = KernelOptions {
            subsets: 20,
            subset_size: 200,
            seed: 7,
        };
        let a = gaussian(600, 16, 0.0, 5);
        let same = gaussian(600, 16, 0.0, 6);
        let shifted = gaussian(600, 16, 0.3, 8);
        let near = kernel_distance(&a, &same, o).unwrap();
        let far = kernel_distance(&a, &shifted, o).unwrap();
        assert!(near.abs() < 0.02, "{near}");
        assert!(far > 10.0 * near.abs().max(0.002), "{far} vs {near}");
        // Deterministic for the same inputs, and exactly 0 for a set against itself.
        assert_eq!(far, kernel_distance(&a, &shifted, o).unwrap());
        assert!(kernel_distance(&a, &a, o).unwrap().abs() < 1e-9);
    }

    #[test]
    fn too_few_rows_or_mismatched_dims_are_errors() {
        let a = gaussian(1, 4, 0.0, 9);
        let b = gaussian(10, 4, 0.0, 9);
        let c = gaussian(10, 5, 0.0, 9);
        assert!(frechet_distance(&a, &b).is_err());
        assert!(kernel_distance(&b, &c, KernelOptions::default()).is_err());
    }
}
