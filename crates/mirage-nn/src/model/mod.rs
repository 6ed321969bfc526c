//! The mean-scale hyperprior (Minnen, Ballé & Toderici 2018, without the autoregressive
//! context), made variable-rate with gain units (Cui et al. 2021).
//!
//! ```text
//!  x ─analysis─▶ y ─×gain(r)─▶ y_g ─hyper_analysis─▶ ─×hyper_gain(r)─▶ z_g
//!                               │                                      │ round, factorized prior
//!                               │                                      ▼
//!                               │      (mean, scale) ◀─hyper_synthesis─ ẑ × inverse_hyper_gain(r)
//!                               ▼             │
//!                   round(y_g − mean) + mean  ◀┘  Gaussian conditional, scale → table index
//!                               │
//!  x̂ ◀─synthesis─ × inverse_gain(r) ◀┘
//! ```
//!
//! The rate setting `r ∈ [0, levels − 1]` is continuous: the gain vectors of the two
//! nearest trained levels are interpolated linearly. Linear (rather than Cui's
//! exponential) interpolation keeps the decoder-side arithmetic to IEEE `+` and `×`,
//! which the deterministic entropy-parameter path needs, and training samples `r`
//! continuously so the in-between settings are trained, not only interpolated.

pub mod context;
pub mod factorized;
pub mod flow;
pub mod layers;
pub mod predictor;
pub mod realism;
pub mod ultralow;
pub mod widen;

use factorized::FactorizedPrior;
use layers::{Conv, ConvPrecision, Gdn, ResidualBottleneck};
use tch::{nn, Kind, Tensor};

/// Channel widths and rate levels. `n` is the width of the transforms and of the
/// hyper-latent, `m` the number of latent channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    pub n: i64,
    pub m: i64,
    /// With the spatial–channel context model ([`context`]); without it the core is the
    /// plain mean-scale hyperprior of format v1.
    pub context: bool,
    /// Residual bottleneck blocks ([`ResidualBottleneck`]) on each of the transforms'
    /// two low-resolution stages (1/4 and 1/8 of the image size), in the analysis and
    /// the synthesis alike; 0 is the plain Ballé transforms of the releases before the
    /// sixteenth, which has 2.
    pub residual_blocks: i64,
    /// With latent residual prediction ([`LatentResidual`]) between the decoded latent
    /// and the synthesis. Experimental: training only, no model file carries it yet.
    pub latent_residual: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            n: 96,
            m: 128,
            context: true,
            residual_blocks: 0,
            latent_residual: false,
        }
    }
}

/// The stages (counted by their GDN) that carry residual blocks: those at 1/4 and 1/8 of
/// the image size, where a block is cheap and sees a wide context.
const ANALYSIS_BLOCK_STAGES: [usize; 2] = [1, 2];
const SYNTHESIS_BLOCK_STAGES: [usize; 2] = [0, 1];

/// `blocks` residual blocks for each of `stages` GDN stages (none where a stage is not
/// listed), named `<path>.block<stage>_<k>`.
fn stage_blocks(
    p: &nn::Path,
    stages: usize,
    with_blocks: &[usize],
    blocks: i64,
    channels: i64,
) -> Vec<Vec<ResidualBottleneck>> {
    (0..stages)
        .map(|stage| {
            let count = if with_blocks.contains(&stage) {
                blocks
            } else {
                0
            };
            (0..count)
                .map(|k| ResidualBottleneck::new(p / format!("block{stage}_{k}"), channels))
                .collect()
        })
        .collect()
}

/// The trade-off λ of each trained rate level, for the loss `λ · 255² · MSE + bpp`
/// (images in [0, 1]), log-spaced (×2.44 a level above the first) to cover about
/// 0.04–1.2 bpp on Kodak. (The shipped run started with a ladder from 0.0004, moved the
/// bottom to 0.00015 at step 5.7k when Kodak showed that 0.0004 stopped near 0.1 bpp,
/// and to 0.0001 at step 22k when 0.00015 stopped at 0.057; see the model card. Core
/// v2 moved it to 0.00004 at its step 1,000 so that the range reaches 0.03 bpp.)
pub const LAMBDAS: [f64; 8] = [
    0.00004, 0.00037, 0.0009, 0.0022, 0.0053, 0.013, 0.031, 0.076,
];
pub const LEVELS: usize = LAMBDAS.len();

/// Scales below this are clamped: it is the smallest scale of the Gaussian tables,
/// so training sees the same lower bound as the coder.
pub const SCALE_BOUND: f64 = 0.11;

/// The λ of a continuous rate setting: log-linear between the levels.
pub fn lambda_at(rate: f64) -> f64 {
    let r = rate.clamp(0.0, (LEVELS - 1) as f64);
    let l = (r.floor() as usize).min(LEVELS - 2);
    let t = r - l as f64;
    (LAMBDAS[l].ln() * (1.0 - t) + LAMBDAS[l + 1].ln() * t).exp()
}

#[derive(Debug)]
pub struct Hyperprior {
    pub config: ModelConfig,
    pub precision: ConvPrecision,
    analysis: Vec<Conv>,
    analysis_gdn: Vec<Gdn>,
    /// Per GDN stage, the residual blocks after it (empty for a plain core).
    analysis_blocks: Vec<Vec<ResidualBottleneck>>,
    pub synthesis: Synthesis,
    hyper_analysis: Vec<Conv>,
    pub hyper_synthesis: Vec<Conv>,
    pub prior: FactorizedPrior,
    pub context: Option<context::ContextModel>,
    pub latent_residual: Option<LatentResidual>,
    gain: Tensor,
    inverse_gain: Tensor,
    pub hyper_gain: Tensor,
    pub inverse_hyper_gain: Tensor,
}

/// The synthesis transform on its own, so that the decoder can hand a replica of it
/// to each worker thread (tch tensors are `Send` but not `Sync`).
#[derive(Debug)]
pub struct Synthesis {
    convs: Vec<Conv>,
    igdn: Vec<Gdn>,
    /// Per inverse-GDN stage, the residual blocks after it (empty for a plain core).
    blocks: Vec<Vec<ResidualBottleneck>>,
    precision: ConvPrecision,
}

/// The synthesis stage whose output the realism generator reads (after the second
/// inverse GDN and its residual blocks: N channels at 1/4 of the image resolution).
const REALISM_FEATURES_AFTER: usize = 1;

impl Synthesis {
    pub fn forward(&self, y: &Tensor) -> Tensor {
        self.forward_with_features(y).0
    }

    /// The decoded image and the activations the realism generator reads.
    pub fn forward_with_features(&self, y: &Tensor) -> (Tensor, Tensor) {
        let mut h = y.shallow_clone();
        let mut features = None;
        for (i, conv) in self.convs.iter().enumerate() {
            h = conv.forward(&h, self.precision);
            if let Some(igdn) = self.igdn.get(i) {
                h = igdn.forward(&h);
            }
            for block in self.blocks.get(i).into_iter().flatten() {
                h = block.forward(&h, self.precision);
            }
            if i == REALISM_FEATURES_AFTER {
                features = Some(h.shallow_clone());
            }
        }
        (h, features.expect("the synthesis has more than two layers"))
    }

    /// A handle sharing the same weights.
    pub fn replica(&self) -> Synthesis {
        Synthesis {
            convs: self.convs.iter().map(Conv::replica).collect(),
            igdn: self.igdn.iter().map(Gdn::replica).collect(),
            blocks: self
                .blocks
                .iter()
                .map(|stage| stage.iter().map(ResidualBottleneck::replica).collect())
                .collect(),
            precision: self.precision,
        }
    }
}

/// Latent residual prediction (Minnen & Singh 2020): the decoder knows more about each
/// latent than its rounded value, namely the mean and scale the entropy model predicted
/// for it, and a small network can use them to guess where in its quantization bin the
/// encoder's latent lay. The guess, at most half a bin either way, is added before the
/// synthesis. It costs no bits and leaves the symbols alone (it runs after the entropy
/// decoder), so it gives the core capacity without a new format of symbols. Its last
/// layer starts at zero, so a core gains it without a cold start.
///
/// ```text
///  [ŷ, mean, ln scale] ─conv3×3─▶ N ─lrelu─ conv3×3 ─lrelu─ conv3×3 (zero) ─▶ ½·tanh ─(+ŷ)─▶
/// ```
#[derive(Debug)]
pub struct LatentResidual {
    convs: [Conv; 3],
}

impl LatentResidual {
    fn new(p: &nn::Path, n: i64, m: i64) -> LatentResidual {
        LatentResidual {
            // Stride 1: `Conv::down` keeps the size at the latent's resolution.
            convs: [
                Conv::down(p / "conv0", 3 * m, n, 3, 1),
                Conv::down(p / "conv1", n, n, 3, 1),
                Conv::zeroed(p / "conv2", n, m, 3),
            ],
        }
    }

    /// `y_hat`, `scale` and `mean` in the gained domain, where a bin is 1 wide.
    pub fn forward(
        &self,
        y_hat: &Tensor,
        scale: &Tensor,
        mean: &Tensor,
        precision: ConvPrecision,
    ) -> Tensor {
        let log_scale = scale.clamp_min(SCALE_BOUND).log();
        let mut h = Tensor::cat(&[y_hat, mean, &log_scale], 1);
        for (i, conv) in self.convs.iter().enumerate() {
            if i > 0 {
                h = h.leaky_relu();
            }
            h = conv.forward(&h, precision);
        }
        y_hat + h.tanh() * 0.5
    }
}

/// What a training forward pass produces, per image of the batch.
pub struct RdOutput {
    pub x_hat: Tensor,
    /// Estimated bits of the latent, `[B]`.
    pub bits_y: Tensor,
    /// Estimated bits of the hyper-latent, `[B]`.
    pub bits_z: Tensor,
}

/// Rounding whose gradient is the identity (the straight-through estimator).
pub fn ste_round(x: &Tensor) -> Tensor {
    (x.round() - x).detach() + x
}

/// Initial gains: from 1/4 at the lowest rate to 4 at the highest, so the levels start
/// with quantization steps roughly matched to their λ (MSE ∝ step², so a 200× range of
/// λ wants about a 14× range of steps).
fn initial_gains(levels: usize, channels: i64) -> Tensor {
    let g = Tensor::linspace(
        0.25f64.ln(),
        4f64.ln(),
        levels as i64,
        (Kind::Float, tch::Device::Cpu),
    )
    .exp();
    g.view([levels as i64, 1])
        .expand([levels as i64, channels], false)
        .contiguous()
}

impl Hyperprior {
    pub fn new(p: &nn::Path, config: ModelConfig, precision: ConvPrecision) -> Hyperprior {
        let ModelConfig {
            n,
            m,
            context,
            residual_blocks,
            latent_residual,
        } = config;
        let a = p / "analysis";
        let s = p / "synthesis";
        let ha = p / "hyper_analysis";
        let hs = p / "hyper_synthesis";
        let gains = initial_gains(LEVELS, m);
        let hyper_gains = initial_gains(LEVELS, n).sqrt();
        let mut model = Hyperprior {
            config,
            precision,
            analysis: vec![
                Conv::down(&a / "conv0", 3, n, 5, 2),
                Conv::down(&a / "conv1", n, n, 5, 2),
                Conv::down(&a / "conv2", n, n, 5, 2),
                Conv::down(&a / "conv3", n, m, 5, 2),
            ],
            analysis_gdn: (0..3)
                .map(|i| Gdn::new(&a / format!("gdn{i}"), n, false))
                .collect(),
            analysis_blocks: vec![],
            synthesis: Synthesis {
                convs: vec![
                    Conv::up(&s / "conv0", m, n, 5, 2),
                    Conv::up(&s / "conv1", n, n, 5, 2),
                    Conv::up(&s / "conv2", n, n, 5, 2),
                    Conv::up(&s / "conv3", n, 3, 5, 2),
                ],
                igdn: (0..3)
                    .map(|i| Gdn::new(&s / format!("igdn{i}"), n, true))
                    .collect(),
                blocks: vec![],
                precision,
            },
            hyper_analysis: vec![
                Conv::down(&ha / "conv0", m, n, 3, 1),
                Conv::down(&ha / "conv1", n, n, 5, 2),
                Conv::down(&ha / "conv2", n, n, 5, 2),
            ],
            hyper_synthesis: vec![
                Conv::up(&hs / "conv0", n, m, 5, 2),
                Conv::up(&hs / "conv1", m, m * 3 / 2, 5, 2),
                Conv::down(&hs / "conv2", m * 3 / 2, 2 * m, 3, 1),
            ],
            prior: FactorizedPrior::new(p / "prior", n),
            context: context.then(|| context::ContextModel::new(&(p / "context"), m, precision)),
            latent_residual: None,
            gain: p.var_copy("gain", &gains),
            inverse_gain: p.var_copy("inverse_gain", &gains.reciprocal()),
            hyper_gain: p.var_copy("hyper_gain", &hyper_gains),
            inverse_hyper_gain: p.var_copy("inverse_hyper_gain", &hyper_gains.reciprocal()),
        };
        // The blocks draw their initial weights last, so that every other layer (and
        // the random stream a trainer goes on with) starts as it would without them:
        // a comparison with and without blocks then differs in the blocks alone.
        model.analysis_blocks = stage_blocks(&a, 3, &ANALYSIS_BLOCK_STAGES, residual_blocks, n);
        model.synthesis.blocks = stage_blocks(&s, 3, &SYNTHESIS_BLOCK_STAGES, residual_blocks, n);
        model.latent_residual =
            latent_residual.then(|| LatentResidual::new(&(p / "latent_residual"), n, m));
        model
    }

    /// Image `[B, 3, H, W]` in [0, 1] (H, W multiples of 16) → latent `[B, M, H/16, W/16]`.
    pub fn analysis(&self, x: &Tensor) -> Tensor {
        let mut h = x.shallow_clone();
        for (i, conv) in self.analysis.iter().enumerate() {
            h = conv.forward(&h, self.precision);
            if let Some(gdn) = self.analysis_gdn.get(i) {
                h = gdn.forward(&h);
            }
            for block in self.analysis_blocks.get(i).into_iter().flatten() {
                h = block.forward(&h, self.precision);
            }
        }
        h
    }

    /// Latent → image (not clamped: the loss sees the raw output).
    pub fn synthesis(&self, y: &Tensor) -> Tensor {
        self.synthesis.forward(y)
    }

    pub fn hyper_analysis(&self, y: &Tensor) -> Tensor {
        let mut h = y.shallow_clone();
        for (i, conv) in self.hyper_analysis.iter().enumerate() {
            if i > 0 {
                h = h.leaky_relu();
            }
            h = conv.forward(&h, self.precision);
        }
        h
    }

    /// Hyper-latent → (scale, mean) of the latent. Training only: the codec computes
    /// this with the deterministic implementation in `mirage-prior`.
    pub fn hyper_synthesis(&self, z: &Tensor) -> (Tensor, Tensor) {
        let mut h = z.shallow_clone();
        for (i, conv) in self.hyper_synthesis.iter().enumerate() {
            if i > 0 {
                h = h.leaky_relu();
            }
            h = conv.forward(&h, self.precision);
        }
        let parts = h.chunk(2, 1);
        (parts[0].shallow_clone(), parts[1].shallow_clone())
    }

    /// Gain vectors `[B, C, 1, 1]` for per-image rate settings `rate` (`[B]`).
    pub fn interpolate(table: &Tensor, rate: &Tensor) -> Tensor {
        let levels = table.size()[0];
        let r = rate.clamp(0.0, (levels - 1) as f64);
        let low = r.floor().clamp(0.0, (levels - 2) as f64);
        let t = (&r - &low).unsqueeze(1);
        let low = low.to_kind(Kind::Int64);
        let high = &low + 1;
        let g: Tensor =
            table.index_select(0, &low) * (-&t + 1.0) + table.index_select(0, &high) * &t;
        g.unsqueeze(-1).unsqueeze(-1)
    }

    pub fn gain(&self, rate: &Tensor) -> Tensor {
        Self::interpolate(&self.gain, rate)
    }
    pub fn inverse_gain(&self, rate: &Tensor) -> Tensor {
        Self::interpolate(&self.inverse_gain, rate)
    }

    /// The dequantized latent exactly as the decoder sees it (rounded around the
    /// predicted mean, corrected by the latent residual predictor if the core has one,
    /// inverse gain applied), for training decoders on a frozen
    /// encoder. Uses libtorch's hyper-synthesis, which can differ from the codec's
    /// deterministic one in the last bits: harmless for training.
    pub fn decoded_latent(&self, x: &Tensor, rate: &Tensor) -> Tensor {
        let y = self.analysis(x) * self.gain(rate);
        let z = self.hyper_analysis(&y) * Self::interpolate(&self.hyper_gain, rate);
        let z_hat = z.round() * Self::interpolate(&self.inverse_hyper_gain, rate);
        let (scale, mean) = self.hyper_synthesis(&z_hat);
        let (scale, mean, y_hat) = match &self.context {
            Some(context) => context.forward_train(&y, &scale, &mean),
            None => {
                let y_hat = (&y - &mean).round() + &mean;
                (scale, mean, y_hat)
            }
        };
        self.predict_residual(&y_hat, &scale, &mean) * self.inverse_gain(rate)
    }

    /// The decoded latent with its predicted quantization residual added, when the core
    /// has latent residual prediction; otherwise `y_hat` itself.
    fn predict_residual(&self, y_hat: &Tensor, scale: &Tensor, mean: &Tensor) -> Tensor {
        match &self.latent_residual {
            Some(lrp) => lrp.forward(y_hat, scale, mean, self.precision),
            None => y_hat.shallow_clone(),
        }
    }

    /// Puts every GDN parameter that an optimizer step took below its bound back on it
    /// ([`Gdn::project_to_bounds`]); call it after each step.
    pub fn project_gdn_parameters(&self) {
        for gdn in self.analysis_gdn.iter().chain(&self.synthesis.igdn) {
            gdn.project_to_bounds();
        }
    }

    /// The training forward pass: additive uniform noise stands in for quantization in
    /// the rate terms; the synthesis sees the rounded latent through a straight-through
    /// estimator, as the decoder will (Minnen & Singh 2020, "mixed" quantization).
    pub fn forward_train(&self, x: &Tensor, rate: &Tensor) -> RdOutput {
        self.forward_train_with(x, rate, RateProxy::UniformNoise)
    }

    /// [`Hyperprior::forward_train`] with the rate terms scored on `proxy`'s stand-in
    /// for the quantized latents.
    pub fn forward_train_with(&self, x: &Tensor, rate: &Tensor, proxy: RateProxy) -> RdOutput {
        let y = self.analysis(x) * self.gain(rate);
        let z = self.hyper_analysis(&y) * Self::interpolate(&self.hyper_gain, rate);
        let z_for_rate = match proxy {
            RateProxy::UniformNoise => &z + z.rand_like() - 0.5,
            RateProxy::Rounded => ste_round(&z),
        };
        let bits_z = -self.prior.likelihood(&z_for_rate).log2().sum_dim_intlist(
            &[1, 2, 3][..],
            false,
            Kind::Float,
        );
        let z_hat = ste_round(&z) * Self::interpolate(&self.inverse_hyper_gain, rate);
        let (scale, mean) = self.hyper_synthesis(&z_hat);
        let (scale, mean, y_hat) = match &self.context {
            Some(context) => context.forward_train(&y, &scale, &mean),
            None => {
                let y_hat = ste_round(&(&y - &mean)) + &mean;
                (scale, mean, y_hat)
            }
        };
        let y_for_rate = match proxy {
            RateProxy::UniformNoise => &y + y.rand_like() - 0.5,
            RateProxy::Rounded => y_hat.shallow_clone(),
        };
        let bits_y = -gaussian_likelihood(&y_for_rate, &scale, &mean)
            .log2()
            .sum_dim_intlist(&[1, 2, 3][..], false, Kind::Float);
        let y_hat = self.predict_residual(&y_hat, &scale, &mean);
        let x_hat = self.synthesis(&(y_hat * self.inverse_gain(rate)));
        RdOutput {
            x_hat,
            bits_y,
            bits_z,
        }
    }
}

/// What the rate terms of a training pass score, in place of the quantized latents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateProxy {
    /// `y + u`, `u ~ U(−½, ½)`: a continuous relaxation whose density is smooth in the
    /// latent, the standard choice for most of a run (Ballé et al. 2017).
    UniformNoise,
    /// The rounded latents themselves (straight-through): what the coder pays for, so
    /// the entropy model fits the real symbols, at the price of a biased gradient into
    /// the analysis. A cousin of "soft then hard" (Guo et al. 2021), which finishes a run
    /// on hard latents with the encoder frozen; here the analysis keeps training.
    Rounded,
}

/// Probability of the integer bin around `y` under a Gaussian with the given mean and
/// scale (the scale clamped to [`SCALE_BOUND`]); computed on the tail nearer zero for
/// precision.
pub fn gaussian_likelihood(y: &Tensor, scale: &Tensor, mean: &Tensor) -> Tensor {
    let scale = scale.clamp_min(SCALE_BOUND);
    let v = (y - mean).abs();
    let upper = standard_normal_cdf(&((0.5 - &v) / &scale));
    let lower = standard_normal_cdf(&((-0.5 - &v) / &scale));
    (upper - lower).clamp_min(factorized::LIKELIHOOD_BOUND)
}

fn standard_normal_cdf(x: &Tensor) -> Tensor {
    (x * -std::f64::consts::FRAC_1_SQRT_2).erfc() * 0.5
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn small_model(vs: &nn::VarStore) -> Hyperprior {
        let config = ModelConfig {
            n: 16,
            m: 16,
            context: true,
            residual_blocks: 0,
            latent_residual: false,
        };
        Hyperprior::new(&vs.root(), config, ConvPrecision::F32)
    }

    /// A core built with `config` whose weights shared with `plain` are copied from it,
    /// as `--init-from` fills a grown network; returns it and how many were copied.
    fn grown_from(
        plain_vs: &nn::VarStore,
        config: ModelConfig,
    ) -> (nn::VarStore, Hyperprior, usize) {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Hyperprior::new(&vs.root(), config, ConvPrecision::F32);
        let plain_vars = plain_vs.variables();
        let mut copied = 0;
        tch::no_grad(|| {
            for (name, mut var) in vs.variables() {
                if let Some(weights) = plain_vars.get(&name) {
                    var.copy_(weights);
                    copied += 1;
                }
            }
        });
        (vs, model, copied)
    }

    /// Each named variable received a non-zero gradient.
    fn assert_gradients(vs: &nn::VarStore, names: &[&str]) {
        for name in names {
            let grad = vs.variables()[*name].grad();
            assert!(f64::try_from(grad.abs().max()).unwrap() > 0.0, "{name}");
        }
    }

    /// A core deepened with residual blocks computes exactly what the plain core did
    /// (so a run can grow them from a shipped release), and the blocks still learn:
    /// their last layers get a gradient.
    #[test]
    fn residual_blocks_start_as_the_identity_and_learn() {
        tch::manual_seed(5);
        let plain_vs = nn::VarStore::new(Device::Cpu);
        let plain = small_model(&plain_vs);
        let config = ModelConfig {
            residual_blocks: 2,
            ..plain.config
        };
        let (deep_vs, deep, copied) = grown_from(&plain_vs, config);
        let plain_vars = plain_vs.variables();
        assert_eq!(copied, plain_vars.len());
        // Two stages × two blocks × three layers × (weight, bias), in each transform.
        assert_eq!(
            deep_vs.variables().len(),
            plain_vars.len() + 2 * 2 * 2 * 3 * 2
        );

        let x = Tensor::rand([1, 3, 64, 64], (Kind::Float, Device::Cpu));
        let max_diff = |a: &Tensor, b: &Tensor| f64::try_from((a - b).abs().max()).unwrap();
        let y = plain.analysis(&x);
        assert_eq!(max_diff(&y, &deep.analysis(&x)), 0.0);
        let (image, features) = plain.synthesis.forward_with_features(&y);
        let (deep_image, deep_features) = deep.synthesis.forward_with_features(&y);
        assert_eq!(max_diff(&image, &deep_image), 0.0);
        assert_eq!(max_diff(&features, &deep_features), 0.0);

        let loss = deep.synthesis(&deep.analysis(&x)).square().sum(Kind::Float);
        loss.backward();
        assert_gradients(
            &deep_vs,
            &[
                "analysis.block1_0.expand.weight",
                "analysis.block2_1.expand.weight",
                "synthesis.block0_0.expand.weight",
                "synthesis.block1_1.expand.weight",
            ],
        );
    }

    /// A core given latent residual prediction decodes exactly what it did without it
    /// (so a run can add it to a shipped release), its correction stays within half a
    /// bin, and the predictor learns: its last layer gets a gradient.
    #[test]
    fn latent_residual_prediction_starts_as_the_identity_and_learns() {
        tch::manual_seed(7);
        let plain_vs = nn::VarStore::new(Device::Cpu);
        let plain = small_model(&plain_vs);
        let config = ModelConfig {
            latent_residual: true,
            ..plain.config
        };
        let (lrp_vs, lrp, copied) = grown_from(&plain_vs, config);
        assert_eq!(copied, plain_vs.variables().len());
        // Three layers × (weight, bias).
        assert_eq!(lrp_vs.variables().len(), copied + 3 * 2);

        let x = Tensor::rand([1, 3, 64, 64], (Kind::Float, Device::Cpu));
        let rate = Tensor::from_slice(&[2.0f32]);
        let max_diff = |a: &Tensor, b: &Tensor| f64::try_from((a - b).abs().max()).unwrap();
        let before = plain.decoded_latent(&x, &rate);
        assert_eq!(max_diff(&before, &lrp.decoded_latent(&x, &rate)), 0.0);

        // With weights in its last layer the correction moves the latent, by at most
        // half a bin in the gained domain.
        let predictor = lrp.latent_residual.as_ref().unwrap();
        tch::no_grad(|| {
            let mut last = lrp_vs.variables()["latent_residual.conv2.weight"].shallow_clone();
            last.copy_(&(Tensor::randn_like(&last) * 10.0));
        });
        let y_hat = Tensor::randn([1, 16, 4, 4], (Kind::Float, Device::Cpu)).round();
        let scale = Tensor::rand([1, 16, 4, 4], (Kind::Float, Device::Cpu)) * 3.0;
        let mean = Tensor::randn([1, 16, 4, 4], (Kind::Float, Device::Cpu));
        let moved = predictor.forward(&y_hat, &scale, &mean, ConvPrecision::F32);
        let shift = max_diff(&moved, &y_hat);
        assert!(shift > 0.0 && shift <= 0.5, "shift {shift}");

        let out = lrp.forward_train(&x, &rate);
        (out.x_hat - &x).square().sum(Kind::Float).backward();
        assert_gradients(
            &lrp_vs,
            &[
                "latent_residual.conv0.weight",
                "latent_residual.conv2.weight",
            ],
        );
    }

    /// The rounded proxy scores the symbols the coder would see: the same bits on every
    /// pass, where the noisy proxy draws new noise each time.
    #[test]
    fn the_rounded_rate_proxy_scores_the_same_symbols_every_pass() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = small_model(&vs);
        let x = Tensor::rand([1, 3, 64, 64], (Kind::Float, Device::Cpu));
        let rate = Tensor::from_slice(&[3.0f32]);
        let bits = |proxy| {
            let out = model.forward_train_with(&x, &rate, proxy);
            (out.bits_y.double_value(&[0]), out.bits_z.double_value(&[0]))
        };
        let rounded = bits(RateProxy::Rounded);
        assert_eq!(rounded, bits(RateProxy::Rounded));
        assert!(rounded.0.is_finite() && rounded.0 > 0.0 && rounded.1 > 0.0);
        assert_ne!(bits(RateProxy::UniformNoise), bits(RateProxy::UniformNoise));
    }
}
