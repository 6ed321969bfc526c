//! The ultra-low-bitrate mode (PerCo, Careil et al. 2024), built on the frozen core.
//!
//! ```text
//!  image ─► core analysis (frozen) ─► y, stride 16
//!             │
//!             ▼  grid encoder: residual blocks, ×½ convs down to stride S, project to D
//!           z_e ─► ‖·‖ ─► nearest of K unit-norm code vectors ─► index (log2 K bits, uniform)
//!                                                                    │ the file
//!  noise, caption ─┐                                                 ▼
//!                  ▼  grid decoder: code vector ─► blocks, ×2 nearest + conv up to stride 16
//!                 ŷ ─► core synthesis + realism generator at w = 1 (frozen) ─► image
//! ```
//!
//! The indices are the whole bitstream: the decoder reads them with nothing but the
//! codebook, so that part is deterministic by construction and needs no entropy model.
//! The grid networks only learn to predict the core's latent from the code (and, in the
//! adversarial stage, a latent that looks like a real one); the core's synthesis and
//! the realism generator turn it into pixels, so this mode is small enough to train
//! on two CPU cores.
//!
//! Codes are unit vectors compared by cosine (as in ViT-VQGAN, Yu et al. 2022): with a
//! low code dimension this keeps the whole codebook in use, which a plain Euclidean
//! codebook of 1,024 entries does not without care.

use super::layers::{Conv, ConvPrecision, Dense};
use tch::{nn, Kind, Tensor};

/// One operating point: the grid's stride in pixels and the codebook size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OperatingPoint {
    pub stride: usize,
    pub codebook: usize,
}

impl OperatingPoint {
    /// Bits of one index: fixed width, `log2 K`.
    pub fn index_bits(&self) -> u32 {
        self.codebook.trailing_zeros()
    }
    /// Halvings from the core latent (stride 16) down to this grid.
    fn halvings(&self) -> usize {
        (self.stride / 16).trailing_zeros() as usize
    }
}

/// The operating points, from the lowest rate. On a 768×512 image: 96 cells × 10 bits
/// (0.003 bpp with the header), 384 × 10 (0.011 bpp), 1,536 × 7 (0.028 bpp).
pub const POINTS: [OperatingPoint; 3] = [
    OperatingPoint {
        stride: 64,
        codebook: 1024,
    },
    OperatingPoint {
        stride: 32,
        codebook: 1024,
    },
    OperatingPoint {
        stride: 16,
        codebook: 128,
    },
];

/// Width of the caption embedding (all-MiniLM-L6-v2's sentence vectors).
pub const CAPTION_DIM: i64 = 384;
/// The sentence encoder a caption-trained model names in its file (`caption_encoder`).
pub const CAPTION_ENCODER: &str = "all-MiniLM-L6-v2";
/// Noise channels the grid decoder reads at stride 16.
pub const NOISE_CHANNELS: i64 = 8;

/// Widths of the grid networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UltralowConfig {
    /// Channels of the residual blocks.
    pub channels: i64,
    /// Dimension of a code vector.
    pub code_dim: i64,
    /// The core's latent channels (M).
    pub latent_channels: i64,
}

/// Conv → LeakyReLU → conv, added back; optionally modulated by the caption (FiLM).
#[derive(Debug)]
struct Block {
    conv_a: Conv,
    conv_b: Conv,
    /// Caption embedding → (γ, β), zero-initialised, so before caption training it is
    /// the identity. No caption is the zero embedding (its γ, β are the layer's bias,
    /// learnt with the captions dropped in training).
    film: Option<Dense>,
}

impl Block {
    fn new(p: nn::Path, c: i64, caption: bool) -> Block {
        Block {
            conv_a: Conv::down(&p / "conv_a", c, c, 3, 1),
            conv_b: Conv::down(&p / "conv_b", c, c, 3, 1),
            film: caption.then(|| Dense::new(&p / "film", CAPTION_DIM, 2 * c, true)),
        }
    }

    fn forward(&self, h: &Tensor, caption: Option<&Tensor>, precision: ConvPrecision) -> Tensor {
        let mut a = self.conv_a.forward(&h.leaky_relu(), precision).leaky_relu();
        if let Some(film) = &self.film {
            let none;
            let e = match caption {
                Some(e) => e,
                None => {
                    none = Tensor::zeros([h.size()[0], CAPTION_DIM], (Kind::Float, h.device()));
                    &none
                }
            };
            let parts = film.forward(e).unsqueeze(-1).unsqueeze(-1).chunk(2, 1);
            a = a * (&parts[0] + 1.0) + &parts[1];
        }
        h + self.conv_b.forward(&a, precision)
    }
}

/// The grid encoder, codebook and grid decoder of one operating point.
#[derive(Debug)]
pub struct PointNetworks {
    pub point: OperatingPoint,
    enc_in: Conv,
    enc_blocks: Vec<Block>,
    enc_down: Vec<Conv>,
    enc_out: Conv,
    /// `[K, D]`, used unit-normalised.
    pub codebook: Tensor,
    dec_in: Conv,
    dec_blocks: Vec<Block>,
    dec_up: Vec<Conv>,
    dec_up_blocks: Vec<Block>,
    dec_noise: Conv,
    dec_out: Conv,
}

/// What quantizing a grid gives the trainer.
pub struct Quantized {
    /// `[B, h, w]` indices.
    pub indices: Tensor,
    /// `[B, D, h, w]` code vectors with straight-through gradients to the encoder.
    pub codes: Tensor,
    /// Codebook + commitment loss (VQ-VAE, β = 0.25).
    pub vq_loss: Tensor,
    /// The unit-normalised encoder outputs, `[B·h·w, D]` (for dead-code restarts).
    pub encoded: Tensor,
}

impl PointNetworks {
    fn new(p: nn::Path, point: OperatingPoint, config: UltralowConfig) -> PointNetworks {
        let (c, d, m) = (config.channels, config.code_dim, config.latent_channels);
        let n = point.halvings();
        PointNetworks {
            point,
            enc_in: Conv::down(&p / "enc_in", m, c, 3, 1),
            enc_blocks: (0..=n)
                .map(|i| Block::new(&p / format!("enc_block{i}"), c, false))
                .collect(),
            enc_down: (0..n)
                .map(|i| Conv::down(&p / format!("enc_down{i}"), c, c, 3, 2))
                .collect(),
            enc_out: Conv::down(&p / "enc_out", c, d, 1, 1),
            codebook: p.var(
                "codebook",
                &[point.codebook as i64, d],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            ),
            dec_in: Conv::down(&p / "dec_in", d, c, 3, 1),
            dec_blocks: (0..2)
                .map(|i| Block::new(&p / format!("dec_block{i}"), c, true))
                .collect(),
            dec_up: (0..n)
                .map(|i| Conv::down(&p / format!("dec_up{i}"), c, c, 3, 1))
                .collect(),
            dec_up_blocks: (0..n)
                .map(|i| Block::new(&p / format!("dec_up_block{i}"), c, true))
                .collect(),
            dec_noise: Conv::down(&p / "dec_noise", NOISE_CHANNELS, c, 1, 1),
            dec_out: Conv::down(&p / "dec_out", c, m, 3, 1),
        }
    }

    /// The unit-normalised codebook `[K, D]`.
    pub fn unit_codebook(&self) -> Tensor {
        unit(&self.codebook, 1)
    }

    /// Core latent `[B, M, H, W]` (H, W multiples of S/16) → unit encoder outputs
    /// `[B, D, H·16/S, W·16/S]`.
    pub fn encode(&self, y: &Tensor, precision: ConvPrecision) -> Tensor {
        let mut h = self.enc_in.forward(&(y * LATENT_SCALE), precision);
        for (i, block) in self.enc_blocks.iter().enumerate() {
            h = block.forward(&h, None, precision);
            if let Some(down) = self.enc_down.get(i) {
                h = down.forward(&h.leaky_relu(), precision);
            }
        }
        unit(&self.enc_out.forward(&h.leaky_relu(), precision), 1)
    }

    /// Nearest code (largest cosine) of each cell: `[B, h, w]` indices.
    pub fn nearest(&self, encoded: &Tensor) -> Tensor {
        let (b, d, h, w) = encoded.size4().expect("a 4-D grid");
        let flat = encoded.permute([0, 2, 3, 1]).reshape([-1, d]);
        flat.matmul(&self.unit_codebook().tr())
            .argmax(1, false)
            .view([b, h, w])
    }

    /// Indices `[B, h, w]` → code vectors `[B, D, h, w]`.
    pub fn lookup(&self, indices: &Tensor) -> Tensor {
        let (b, h, w) = indices.size3().expect("a 3-D index grid");
        self.unit_codebook()
            .index_select(0, &indices.flatten(0, -1))
            .view([b, h, w, -1])
            .permute([0, 3, 1, 2])
            .contiguous()
    }

    /// Training: encode, quantize with a straight-through estimator, and the VQ losses.
    pub fn quantize(&self, y: &Tensor, precision: ConvPrecision) -> Quantized {
        let encoded = self.encode(y, precision);
        let indices = tch::no_grad(|| self.nearest(&encoded));
        let code = self.lookup(&indices);
        let vq_loss = (&code - encoded.detach()).square().mean(Kind::Float)
            + (&encoded - code.detach()).square().mean(Kind::Float) * 0.25;
        let codes = &encoded + (&code - &encoded).detach();
        let d = encoded.size()[1];
        Quantized {
            indices,
            codes,
            vq_loss,
            encoded: encoded.detach().permute([0, 2, 3, 1]).reshape([-1, d]),
        }
    }

    /// Code vectors `[B, D, h, w]` (+ noise `[B, NOISE_CHANNELS, H, W]` at stride 16,
    /// + caption embedding `[B, CAPTION_DIM]`) → predicted core latent `[B, M, H, W]`.
    pub fn decode(
        &self,
        codes: &Tensor,
        noise: &Tensor,
        caption: Option<&Tensor>,
        precision: ConvPrecision,
    ) -> Tensor {
        let mut h = self.dec_in.forward(codes, precision);
        for block in &self.dec_blocks {
            h = block.forward(&h, caption, precision);
        }
        for (up, block) in self.dec_up.iter().zip(&self.dec_up_blocks) {
            // Nearest-neighbour ×2 then a convolution: no transposed-convolution
            // checkerboard, which the synthesis would turn into a visible grid.
            let (_, _, hh, ww) = h.size4().expect("a 4-D grid");
            h = h.upsample_nearest2d([2 * hh, 2 * ww], None, None);
            h = up.forward(&h.leaky_relu(), precision);
            h = block.forward(&h, caption, precision);
        }
        h += self.dec_noise.forward(noise, precision);
        self.dec_out.forward(&h.leaky_relu(), precision) / LATENT_SCALE
    }
}

/// The core latent is scaled by this on the way in (and back on the way out) so the
/// grid networks see values of about unit size.
const LATENT_SCALE: f64 = 0.25;

fn unit(x: &Tensor, dim: i64) -> Tensor {
    x / x
        .square()
        .sum_dim_intlist(&[dim][..], true, Kind::Float)
        .sqrt()
        .clamp_min(1e-6)
}

/// All operating points' networks.
#[derive(Debug)]
pub struct UltralowModel {
    pub config: UltralowConfig,
    pub points: Vec<PointNetworks>,
    pub precision: ConvPrecision,
}

impl UltralowModel {
    pub fn new(p: &nn::Path, config: UltralowConfig, precision: ConvPrecision) -> UltralowModel {
        UltralowModel {
            config,
            points: POINTS
                .iter()
                .enumerate()
                .map(|(i, &point)| PointNetworks::new(p / format!("point{i}"), point, config))
                .collect(),
            precision,
        }
    }
}

/// A small discriminator on core latents (the adversarial stage): is this latent the
/// analysis of a photo, or predicted from a code? It sees the code grid too
/// (upsampled), as HiFiC's discriminator sees the latent.
#[derive(Debug)]
pub struct LatentDiscriminator {
    convs: Vec<Conv>,
    out: Conv,
}

impl LatentDiscriminator {
    pub fn new(p: &nn::Path, config: UltralowConfig) -> LatentDiscriminator {
        let (m, d, c) = (config.latent_channels, config.code_dim, config.channels);
        LatentDiscriminator {
            convs: vec![
                Conv::down(p / "conv0", m + d, c, 3, 1),
                Conv::down(p / "conv1", c, c, 3, 1),
                Conv::down(p / "conv2", c, c, 3, 2),
                Conv::down(p / "conv3", c, c, 3, 1),
            ],
            out: Conv::down(p / "out", c, 1, 1, 1),
        }
    }

    /// Logits per cell, and the features of every layer (for feature matching).
    pub fn forward(
        &self,
        y: &Tensor,
        codes: &Tensor,
        precision: ConvPrecision,
    ) -> (Tensor, Vec<Tensor>) {
        let (_, _, h, w) = y.size4().expect("a 4-D latent");
        let codes = codes.upsample_nearest2d([h, w], None, None);
        let mut x = Tensor::cat(&[y * LATENT_SCALE, codes], 1);
        let mut features = vec![];
        for conv in &self.convs {
            x = conv.forward(&x, precision).leaky_relu();
            features.push(x.shallow_clone());
        }
        (self.out.forward(&x, precision), features)
    }
}
