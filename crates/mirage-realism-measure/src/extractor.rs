//! The Mirage realism extractor: a small CNN, trained by the project itself (see
//! [`super::train`]), whose pooled activations are the features of MFD and MKD.
//!
//! ```text
//!  patch 3×H×W in [0, 1], scaled to [-1, 1]; LReLU = leaky ReLU, slope 0.2
//!   │ stage1  conv 3×3 3→16, LReLU, conv 3×3 16→16, LReLU            (1/1) ─► tap 1 (16)
//!   │ stage2  conv 3×3 /2 16→32, LReLU, conv 3×3 32→32, LReLU         (1/2) ─► tap 2 (32)
//!   │ stage3  conv 3×3 /2 32→32, LReLU, conv 3×3 32→32, LReLU         (1/4) ─► tap 3 (32)
//!   │ stage4  conv 3×3 /2 32→48, LReLU, conv 3×3 48→48, LReLU         (1/8) ─► tap 4 (48)
//!   ▼
//!  features = [spatial mean of taps 1–4 (128) ‖ spatial std of taps 1–4 (128)] = 256
//!
//!  pretext heads (training only, not shipped):
//!   rotation  tap 4 averaged to a 4×4 grid → linear 768→128, ReLU → linear 128→4
//!             (which of 0°, 90°, 180°, 270°; the grid keeps the layout that the
//!             rotation shows in, which global pooling would erase)
//!   noise     conv 1×1 (tap 1 ‖ 2× upsampled tap 2) → 3  (the Gaussian noise that was added)
//! ```
//!
//! Why this shape: blur, ringing, blocking and noise change the *statistics* of local
//! filter responses, so the features are first- and second-order statistics (mean and
//! standard deviation) of every depth, including full resolution, where fine texture
//! lives. No downsampling happens before the first tap for the same reason.

use crate::model::layers::{Conv, ConvPrecision};
use tch::{nn, Kind, Tensor};

/// Channels of the four tapped stages; their sum times two is the feature dimension.
pub const TAP_CHANNELS: [i64; 4] = [16, 32, 32, 48];
/// Length of a feature vector: mean and standard deviation of every tapped channel.
pub const FEATURE_DIM: i64 = 2 * (16 + 32 + 32 + 48);
/// Rotations the pretext task tells apart.
pub const ROTATIONS: i64 = 4;
/// The rotation head sees the deepest tap averaged onto this many cells a side.
const ROTATION_GRID: i64 = 4;

/// Leaky ReLU ("LReLU" in the figure) with slope 0.2. With a plain ReLU, a short training run left 40% of the
/// channels dead (zero on every patch): features that measure nothing.
fn leaky(x: &Tensor) -> Tensor {
    x.maximum(&(x * 0.2))
}

/// Two 3×3 convolutions with leaky ReLU; the first one may halve the resolution.
#[derive(Debug)]
struct Stage {
    conv1: Conv,
    conv2: Conv,
}

impl Stage {
    fn new(p: nn::Path, c_in: i64, c_out: i64, stride: i64) -> Stage {
        let stage = Stage {
            conv1: Conv::down(&p / "conv1", c_in, c_out, 3, stride),
            conv2: Conv::down(&p / "conv2", c_out, c_out, 3, 1),
        };
        // `Conv` starts at PyTorch's default bound 1/√fan_in, which shrinks the signal's
        // variance sixfold per ReLU layer: after eight layers nothing reaches the heads
        // and the rotation task never leaves chance. ×√6 is He initialisation
        // (variance 2/fan_in), which keeps the variance through ReLUs.
        tch::no_grad(|| {
            for conv in [&stage.conv1, &stage.conv2] {
                let _ = conv.weight.shallow_clone().f_mul_scalar_(6f64.sqrt());
            }
        });
        stage
    }

    fn forward(&self, x: &Tensor, precision: ConvPrecision) -> Tensor {
        let h = leaky(&self.conv1.forward(x, precision));
        leaky(&self.conv2.forward(&h, precision))
    }
}

/// The shipped part of the network: the four stages that make the features.
#[derive(Debug)]
pub struct Extractor {
    stages: Vec<Stage>,
    precision: ConvPrecision,
}

impl Extractor {
    /// Variables live under `stage1.conv1.weight` … `stage4.conv2.bias`.
    pub fn new(p: &nn::Path, precision: ConvPrecision) -> Extractor {
        let mut stages = vec![];
        let mut c_in = 3;
        for (i, &c) in TAP_CHANNELS.iter().enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            stages.push(Stage::new(p / format!("stage{}", i + 1), c_in, c, stride));
            c_in = c;
        }
        Extractor { stages, precision }
    }

    /// The four tapped activations of a batch `[B, 3, H, W]` in [0, 1].
    pub fn taps(&self, x: &Tensor) -> Vec<Tensor> {
        let mut h = x * 2.0 - 1.0;
        let mut taps = vec![];
        for stage in &self.stages {
            h = stage.forward(&h, self.precision);
            taps.push(h.shallow_clone());
        }
        taps
    }

    /// Features `[B, FEATURE_DIM]` of a batch `[B, 3, H, W]` in [0, 1].
    pub fn features(&self, x: &Tensor) -> Tensor {
        pooled(&self.taps(x))
    }
}

/// Spatial means of all taps, then their spatial standard deviations.
pub fn pooled(taps: &[Tensor]) -> Tensor {
    let dims = &[2i64, 3][..];
    let means: Vec<Tensor> = taps
        .iter()
        .map(|t| t.mean_dim(dims, false, Kind::Float))
        .collect();
    // The small floor keeps the gradient of the square root finite for dead channels.
    let stds: Vec<Tensor> = taps
        .iter()
        .map(|t| {
            (t.var_dim(dims, false, false) + 1e-6)
                .sqrt()
                .to_kind(Kind::Float)
        })
        .collect();
    Tensor::cat(&[Tensor::cat(&means, 1), Tensor::cat(&stds, 1)], 1)
}

/// The pretext heads, used only while training (see [`super::train`]).
#[derive(Debug)]
pub struct PretextHeads {
    rotation_hidden: nn::Linear,
    rotation: nn::Linear,
    noise: Conv,
}

/// What the pretext heads predict for a batch.
pub struct PretextOutput {
    /// `[B, ROTATIONS]` logits.
    pub rotation_logits: Tensor,
    /// `[B, 3, H, W]`: the additive noise, in the units of the [0, 1] input.
    pub noise: Tensor,
}

impl PretextHeads {
    /// Variables live under `pretext.rotation.*` and `pretext.noise.*`.
    pub fn new(p: &nn::Path) -> PretextHeads {
        let p = p / "pretext";
        PretextHeads {
            rotation_hidden: nn::linear(
                &p / "rotation_hidden",
                TAP_CHANNELS[3] * ROTATION_GRID * ROTATION_GRID,
                128,
                Default::default(),
            ),
            rotation: nn::linear(&p / "rotation", 128, ROTATIONS, Default::default()),
            noise: Conv::down(&p / "noise", TAP_CHANNELS[0] + TAP_CHANNELS[1], 3, 1, 1),
        }
    }

    pub fn forward(&self, taps: &[Tensor]) -> PretextOutput {
        use tch::nn::Module;
        let grid = taps[3]
            .adaptive_avg_pool2d([ROTATION_GRID, ROTATION_GRID])
            .flatten(1, -1);
        let rotation_logits = self
            .rotation
            .forward(&self.rotation_hidden.forward(&grid).relu());
        let (h, w) = (taps[0].size()[2], taps[0].size()[3]);
        let up = taps[1].upsample_nearest2d([h, w], None, None);
        let noise = self
            .noise
            .forward(&Tensor::cat(&[&taps[0], &up], 1), ConvPrecision::F32);
        PretextOutput {
            rotation_logits,
            noise,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device};

    #[test]
    fn shapes_follow_the_figure() {
        let vs = VarStore::new(Device::Cpu);
        let net = Extractor::new(&vs.root(), ConvPrecision::F32);
        let heads = PretextHeads::new(&vs.root());
        let x = Tensor::rand([2, 3, 64, 48], (Kind::Float, Device::Cpu));
        let taps = net.taps(&x);
        let sizes: Vec<Vec<i64>> = taps.iter().map(|t| t.size()).collect();
        assert_eq!(
            sizes,
            vec![
                vec![2, 16, 64, 48],
                vec![2, 32, 32, 24],
                vec![2, 32, 16, 12],
                vec![2, 48, 8, 6]
            ]
        );
        assert_eq!(net.features(&x).size(), vec![2, FEATURE_DIM]);
        let out = heads.forward(&taps);
        assert_eq!(out.rotation_logits.size(), vec![2, ROTATIONS]);
        assert_eq!(out.noise.size(), vec![2, 3, 64, 48]);
    }
}
