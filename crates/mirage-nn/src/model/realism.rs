//! The realism decoder: a generator that adds texture to the MSE decode, conditioned on
//! the hallucination weight `w` (Agustsson et al. 2023, "Multi-Realism Image
//! Compression with a Conditional Generator"), and the conditional discriminator that
//! trains it (HiFiC, Mentzer et al. 2020).
//!
//! ```text
//!  ŷ ──► synthesis (frozen, MSE) ──► x̂_mse ──────────────────────────────┐
//!              │ features at 1/4 res        pixel-unshuffle ×4           │
//!              └──────────────┬──────────────────┘                       │
//!                        conv 3×3 ─► residual blocks ×B ─► conv 3×3     (+)──► x̂(w)
//!   w ─► embedding ─► FiLM (γ, β) in every block        pixel-shuffle ×4 │
//!                                                           × w ─────────┘
//! ```
//!
//! The generator works at a quarter of the resolution on the frozen synthesis'
//! features and the unshuffled MSE decode, and returns a full-resolution residual
//! through a pixel shuffle, which can draw texture at the pixel scale at a quarter of
//! the cost of full-resolution convolutions. The residual is multiplied by `w`, so
//! `w = 0` *is* the MSE decode, bit for bit (the fidelity end costs nothing extra and
//! the 0.3 dB requirement holds by construction), while FiLM lets the *kind* of
//! texture, not just its amplitude, change with `w`.

use super::layers::{Conv, ConvPrecision, Dense};
use tch::{nn, Kind, Tensor};

/// Widths of the realism generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RealismConfig {
    /// Channels of the residual blocks.
    pub channels: i64,
    /// Number of residual blocks.
    pub blocks: i64,
    /// Channels of the synthesis features it reads (the hyperprior's N).
    pub feature_channels: i64,
    /// Whether every block adds seeded noise (v2). Without a noise source a generator
    /// can only derive texture from the latent's features, which repeat with the
    /// latent's 16-pixel grid, and on flat areas that texture becomes a grid of marks
    /// (docs/realism-marks.md). The v1 generator has none.
    pub noise: bool,
}

/// Width of the `w` embedding that feeds every block's FiLM.
const EMBEDDING: i64 = 32;
/// The generator's working resolution is 1/SHUFFLE of the image's.
const SHUFFLE: i64 = 4;

/// Conv → LeakyReLU → FiLM → conv, added back to the input.
#[derive(Debug)]
struct ResidualBlock {
    conv_a: Conv,
    conv_b: Conv,
    /// Embedding → (γ, β), zero-initialised so that training starts without FiLM.
    film: Dense,
    /// Per-channel gain of the noise added after `conv_a` (StyleGAN's noise inputs),
    /// `[1, C, 1, 1]`, zero-initialised so that a warm start begins as its source.
    noise_gain: Option<Tensor>,
}

#[derive(Debug)]
pub struct RealismGenerator {
    pub config: RealismConfig,
    precision: ConvPrecision,
    embedding: Dense,
    input: Conv,
    blocks: Vec<ResidualBlock>,
    output: Conv,
}

impl RealismGenerator {
    pub fn new(p: &nn::Path, config: RealismConfig, precision: ConvPrecision) -> Self {
        let c = config.channels;
        let shuffled = 3 * SHUFFLE * SHUFFLE;
        let output = Conv::down(p / "output", c, shuffled, 3, 1);
        // Start with a small residual: the generator begins as (almost) the MSE decode.
        tch::no_grad(|| {
            let _ = output.weight.shallow_clone().g_mul_scalar_(0.1);
        });
        RealismGenerator {
            config,
            precision,
            embedding: Dense::new(p / "embedding", 1, EMBEDDING, false),
            input: Conv::down(p / "input", config.feature_channels + shuffled, c, 3, 1),
            blocks: (0..config.blocks)
                .map(|i| {
                    let b = p / format!("block{i}");
                    ResidualBlock {
                        conv_a: Conv::down(&b / "conv_a", c, c, 3, 1),
                        conv_b: Conv::down(&b / "conv_b", c, c, 3, 1),
                        film: Dense::new(&b / "film", EMBEDDING, 2 * c, true),
                        noise_gain: config.noise.then(|| b.zeros("noise_gain", &[1, c, 1, 1])),
                    }
                })
                .collect(),
            output,
        }
    }

    /// A handle sharing the same weights, for another decoder thread.
    pub fn replica(&self) -> RealismGenerator {
        RealismGenerator {
            config: self.config,
            precision: self.precision,
            embedding: self.embedding.replica(),
            input: self.input.replica(),
            blocks: self
                .blocks
                .iter()
                .map(|b| ResidualBlock {
                    conv_a: b.conv_a.replica(),
                    conv_b: b.conv_b.replica(),
                    film: b.film.replica(),
                    noise_gain: b.noise_gain.as_ref().map(|g| g.shallow_clone()),
                })
                .collect(),
            output: self.output.replica(),
        }
    }

    /// `x_mse` `[B, 3, H, W]` (the synthesis output), `features` `[B, N, H/4, W/4]`
    /// (the synthesis' activations after its second inverse GDN and that stage's residual
    /// blocks, if the core has any), `w` `[B]` in [0, 1],
    /// `noise` `[B, 1, H/4, W/4]` standard normal (ignored by a generator without
    /// noise inputs) → the realism decode `[B, 3, H, W]` (not clamped).
    pub fn forward(&self, x_mse: &Tensor, features: &Tensor, w: &Tensor, noise: &Tensor) -> Tensor {
        let w = w.to_kind(Kind::Float).view([-1, 1, 1, 1]);
        self.forward_map(x_mse, features, &w, noise)
    }

    /// The same with a weight per pixel, `w` `[B, 1, H, W]` (or any shape that
    /// broadcasts to it, such as `[B, 1, 1, 1]`): the decoder's per-region realism.
    /// FiLM is applied per position, so a constant map gives the per-image
    /// decode and a varying one changes the kind of texture region by region.
    pub fn forward_map(
        &self,
        x_mse: &Tensor,
        features: &Tensor,
        w: &Tensor,
        noise: &Tensor,
    ) -> Tensor {
        let w = w.to_kind(Kind::Float);
        // FiLM works at the generator's resolution: the mean weight of each 4×4 block.
        let w_low = if w.size()[2] == 1 && w.size()[3] == 1 {
            w.shallow_clone()
        } else {
            w.avg_pool2d(
                [SHUFFLE, SHUFFLE],
                [SHUFFLE, SHUFFLE],
                [0, 0],
                false,
                true,
                None,
            )
        };
        // Channels last for the dense layers: [B, h, w, 1] → [B, h, w, E].
        let e = self
            .embedding
            .forward(&w_low.permute([0, 2, 3, 1]))
            .leaky_relu();
        let unshuffled = x_mse.pixel_unshuffle(SHUFFLE);
        let mut h = self
            .input
            .forward(&Tensor::cat(&[features, &unshuffled], 1), self.precision);
        for block in &self.blocks {
            let film = block.film.forward(&e).permute([0, 3, 1, 2]);
            let (gamma, beta) = {
                let parts = film.chunk(2, 1);
                (parts[0].shallow_clone(), parts[1].shallow_clone())
            };
            let mut a = block.conv_a.forward(&h.leaky_relu(), self.precision);
            if let Some(gain) = &block.noise_gain {
                a = &a + gain * noise;
            }
            let a = a.leaky_relu() * (gamma + 1.0) + beta;
            h = &h + block.conv_b.forward(&a, self.precision);
        }
        let residual = self
            .output
            .forward(&h.leaky_relu(), self.precision)
            .pixel_shuffle(SHUFFLE);
        x_mse + residual * w
    }
}

/// The generator's resolution, and so its noise's, is 1/NOISE_STRIDE of the image's.
/// The decoder draws the noise for the whole image from a seed and cuts each tile's
/// window from it, so that overlapping tiles see the same noise.
pub const NOISE_STRIDE: usize = SHUFFLE as usize;

/// A patch discriminator conditioned on the quantized latent, as in HiFiC: the image
/// goes down four stride-2 layers to the latent's resolution, where a projection of
/// `ŷ` joins it; the output is one real/fake logit per 16×16 block. The activations
/// of every layer are returned too, for the feature-matching loss.
#[derive(Debug)]
pub struct Discriminator {
    precision: ConvPrecision,
    image: Vec<Conv>,
    latent: Conv,
    head: Vec<Conv>,
}

impl Discriminator {
    pub fn new(p: &nn::Path, latent_channels: i64, precision: ConvPrecision) -> Self {
        let widths = [3, 64, 128, 192, 256];
        Discriminator {
            precision,
            image: (0..4)
                .map(|i| {
                    let k = if i == 0 { 5 } else { 3 };
                    Conv::down(p / format!("image{i}"), widths[i], widths[i + 1], k, 2)
                })
                .collect(),
            latent: Conv::down(p / "latent", latent_channels, 64, 1, 1),
            head: vec![
                Conv::down(p / "head0", 256 + 64, 256, 3, 1),
                Conv::down(p / "head1", 256, 1, 1, 1),
            ],
        }
    }

    /// Image `[B, 3, H, W]` in [0, 1] and latent `[B, M, H/16, W/16]` → logits
    /// `[B, 1, H/16, W/16]` and the intermediate activations.
    pub fn forward(&self, x: &Tensor, y_hat: &Tensor) -> (Tensor, Vec<Tensor>) {
        let mut features = vec![];
        let mut h = x * 2.0 - 1.0;
        for conv in &self.image {
            h = leaky(&conv.forward(&h, self.precision));
            features.push(h.shallow_clone());
        }
        let l = leaky(&self.latent.forward(y_hat, self.precision));
        h = leaky(&self.head[0].forward(&Tensor::cat(&[&h, &l], 1), self.precision));
        features.push(h.shallow_clone());
        (self.head[1].forward(&h, self.precision), features)
    }
}

/// LeakyReLU with the GAN-customary slope 0.2 (tch's `leaky_relu` has slope 0.01).
fn leaky(x: &Tensor) -> Tensor {
    x.maximum(&(x * 0.2))
}
