//! The factorized (non-parametric) prior on the hyper-latent `z`
//! (Ballé et al. 2018, "Variational image compression with a scale hyperprior", §6.1).
//!
//! Each channel has its own learned cumulative distribution, a tiny monotone network
//! `c(x) = sigmoid(f_K(... f_1(x)))` with `f_k(x) = g_k(H_k x + b_k)` and
//! `g_k(x) = x + a_k * tanh(x)`. Monotonicity holds because `H_k = softplus(.) >= 0`
//! and `tanh(a_k) > -1`. The probability of the integer bin `[v - 1/2, v + 1/2]` is
//! `c(v + 1/2) - c(v - 1/2)`.
//!
//! At export time the bins are evaluated once per channel and quantized to integer
//! CDF tables that ship with the model, so the coder never evaluates this network.

use tch::{nn, Kind, Tensor};

/// Hidden widths of the per-channel density network (the paper's `(3, 3, 3)`).
const FILTERS: [i64; 3] = [3, 3, 3];
/// Initial spread of the density; wide enough for the hyper-latent's early range.
const INIT_SCALE: f64 = 10.0;
/// Likelihoods are bounded below so that `-log2 p` stays finite during training.
pub const LIKELIHOOD_BOUND: f64 = 1e-9;

#[derive(Debug)]
pub struct FactorizedPrior {
    matrices: Vec<Tensor>,
    biases: Vec<Tensor>,
    factors: Vec<Tensor>,
    channels: i64,
}

impl FactorizedPrior {
    pub fn new(p: nn::Path, channels: i64) -> FactorizedPrior {
        let dims: Vec<i64> = std::iter::once(1)
            .chain(FILTERS)
            .chain(std::iter::once(1))
            .collect();
        let scale = INIT_SCALE.powf(1.0 / (FILTERS.len() + 1) as f64);
        let (mut matrices, mut biases, mut factors) = (vec![], vec![], vec![]);
        for i in 0..dims.len() - 1 {
            let (d_in, d_out) = (dims[i], dims[i + 1]);
            // softplus(init) = 1 / (scale * d_out), so the initial density is wide.
            let init = (1.0 / scale / d_out as f64).exp_m1().ln();
            matrices.push(p.var(
                &format!("matrix{i}"),
                &[channels, d_out, d_in],
                nn::Init::Const(init),
            ));
            biases.push(p.var(
                &format!("bias{i}"),
                &[channels, d_out, 1],
                nn::Init::Uniform { lo: -0.5, up: 0.5 },
            ));
            if i < dims.len() - 2 {
                factors.push(p.var(
                    &format!("factor{i}"),
                    &[channels, d_out, 1],
                    nn::Init::Const(0.0),
                ));
            }
        }
        FactorizedPrior {
            matrices,
            biases,
            factors,
            channels,
        }
    }

    /// The logits of the cumulative distribution, for `x` of shape `[C, 1, n]`.
    fn logits_cumulative(&self, x: &Tensor) -> Tensor {
        let mut logits = x.shallow_clone();
        for (i, (m, b)) in self.matrices.iter().zip(&self.biases).enumerate() {
            logits = m.softplus().matmul(&logits) + b;
            if let Some(a) = self.factors.get(i) {
                logits = &logits + a.tanh() * logits.tanh();
            }
        }
        logits
    }

    /// `c(x + 1/2) − c(x − 1/2)` for `x` of shape `[C, 1, n]`, subtracted in the tail
    /// where the sigmoids are far from 1, for precision.
    fn bin_probability(&self, x: &Tensor) -> Tensor {
        let lower = self.logits_cumulative(&(x - 0.5));
        let upper = self.logits_cumulative(&(x + 0.5));
        let sign = -(&lower + &upper).sign();
        ((&sign * &upper).sigmoid() - (&sign * &lower).sigmoid()).abs()
    }

    /// Likelihood of each element of `z` (`[B, C, H, W]`), as if it were quantized to the
    /// integer bin around it.
    pub fn likelihood(&self, z: &Tensor) -> Tensor {
        let shape = z.size();
        let per_channel = z.permute([1, 0, 2, 3]).reshape([self.channels, 1, -1]);
        let lik = self
            .bin_probability(&per_channel)
            .clamp_min(LIKELIHOOD_BOUND);
        lik.reshape([shape[1], shape[0], shape[2], shape[3]])
            .permute([1, 0, 2, 3])
    }

    /// Fits the density to target per-channel pmfs over `-radius..=radius` (`[C, n]`),
    /// by cross-entropy: a warm start for a run that resumes from a shipped model,
    /// whose file keeps only the integer tables of this network.
    pub fn fit_to_pmf(&self, target: &Tensor, radius: i64, steps: usize) {
        let values = Tensor::arange_start(-radius, radius + 1, (Kind::Float, tch::Device::Cpu));
        let n = values.size()[0];
        let x = values.view([1, 1, n]).expand([self.channels, 1, n], false);
        let params: Vec<&Tensor> = self
            .matrices
            .iter()
            .chain(&self.biases)
            .chain(&self.factors)
            .collect();
        let mut m: Vec<Tensor> = params.iter().map(|p| p.zeros_like()).collect();
        let mut v: Vec<Tensor> = params.iter().map(|p| p.zeros_like()).collect();
        let target = target.to_kind(Kind::Float);
        for t in 1..=steps as i32 {
            let pmf = self
                .bin_probability(&x)
                .view([self.channels, n])
                .clamp_min(1e-12);
            let loss = -(&target * pmf.log()).sum(Kind::Float);
            let grads = Tensor::run_backward(&[&loss], &params, false, false);
            tch::no_grad(|| {
                for (((p, g), m), v) in params.iter().zip(&grads).zip(&mut m).zip(&mut v) {
                    *m = &*m * 0.9 + g * 0.1;
                    *v = &*v * 0.999 + g.square() * 0.001;
                    let update = (&*m / (1.0 - 0.9f64.powi(t)))
                        / ((&*v / (1.0 - 0.999f64.powi(t))).sqrt() + 1e-8)
                        * 0.01;
                    let _ = p.shallow_clone().f_sub_(&update).expect("same shape");
                }
            });
        }
    }

    /// The probability of each integer `-radius..=radius` in each channel:
    /// a `[C, 2 * radius + 1]` f64 tensor, the input to the integer CDF tables.
    pub fn integer_pmf(&self, radius: i64) -> Tensor {
        tch::no_grad(|| {
            let values = Tensor::arange_start(-radius, radius + 1, (Kind::Float, tch::Device::Cpu));
            let n = values.size()[0];
            let x = values.view([1, 1, n]).expand([self.channels, 1, n], false);
            let lower = self.logits_cumulative(&(&x - 0.5)).to_kind(Kind::Double);
            let upper = self.logits_cumulative(&(&x + 0.5)).to_kind(Kind::Double);
            let sign = -(&lower + &upper).sign();
            ((&sign * &upper).sigmoid() - (&sign * &lower).sigmoid())
                .abs()
                .view([self.channels, n])
        })
    }
}
