//! The realism predictor (ConHa, "conditional hallucination"): from the image and the
//! rate setting, how much hallucination each region should get.
//!
//! ```text
//!  x ─ pixel-unshuffle ×4 ─┐
//!  rate / (levels − 1) ────┴─ conv 3×3 ─► conv 3×3 /2 ×4 ─► conv 3×3 ─► conv 1×1 ─► sigmoid ─► w(x, y)
//!                        1/4 res            1/64 res: one weight per 64×64 cell
//! ```
//!
//! It runs at the encoder, where the original is available, so it can look at what
//! the decoder will not see: whether a region's fine structure is text-like strokes,
//! straight edges or stochastic texture. The unshuffle keeps every pixel (a plain
//! downsample would erase exactly those cues) at a quarter of the resolution. The
//! output grid is the realism map's (`mirage_format::realism_map`), one weight per
//! 64×64 cell; the receptive field spans about three cells, so a cell is judged with
//! its surroundings. About 0.15 M parameters: a few milliseconds per Kodak image.

use super::layers::{Conv, ConvPrecision};
use tch::{nn, Kind, Tensor};

/// Widths of the strided stages.
const WIDTHS: [i64; 5] = [32, 32, 48, 64, 64];
const UNSHUFFLE: i64 = 4;

#[derive(Debug)]
pub struct RealismPredictor {
    input: Conv,
    stages: Vec<Conv>,
    context: Conv,
    head: Conv,
}

impl RealismPredictor {
    pub fn new(p: &nn::Path) -> Self {
        let unshuffled = 3 * UNSHUFFLE * UNSHUFFLE + 1;
        RealismPredictor {
            input: Conv::down(p / "input", unshuffled, WIDTHS[0], 3, 1),
            stages: (0..4)
                .map(|i| Conv::down(p / format!("stage{i}"), WIDTHS[i], WIDTHS[i + 1], 3, 2))
                .collect(),
            context: Conv::down(p / "context", WIDTHS[4], WIDTHS[4], 3, 1),
            head: Conv::down(p / "head", WIDTHS[4], 1, 1, 1),
        }
    }

    /// Images `[B, 3, H, W]` in [0, 1] (H and W multiples of 64) and rate settings `[B]`
    /// normalised to [0, 1] → weights `[B, 1, H/64, W/64]` in (0, 1).
    pub fn forward(&self, x: &Tensor, rate: &Tensor) -> Tensor {
        let f32 = ConvPrecision::F32;
        let u = (x * 2.0 - 1.0).pixel_unshuffle(UNSHUFFLE);
        let size = u.size();
        let r = rate
            .to_kind(Kind::Float)
            .view([-1, 1, 1, 1])
            .expand([size[0], 1, size[2], size[3]], false);
        let mut h = self
            .input
            .forward(&Tensor::cat(&[&u, &r], 1), f32)
            .leaky_relu();
        for stage in &self.stages {
            h = stage.forward(&h, f32).leaky_relu();
        }
        h = &h + self.context.forward(&h, f32).leaky_relu();
        self.head.forward(&h, f32).sigmoid()
    }
}
