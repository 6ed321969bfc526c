//! Growing a trained core's latent from `M` to more channels (Net2Net-style, Chen et al.
//! 2016), so that a wider core starts where the shipped one is instead of from scratch.
//!
//! Why: the core's PSNR gap to AVIF grows with the rate and its curve flattens at the
//! top settings, the sign of a latent too narrow to carry more (published high-rate
//! models use M = 192–320; ours has 128). Training a wider core cold would cost many
//! sessions before it caught up.
//!
//! How the old function survives. Every latent channel keeps its weights, moved to its
//! place in the wider layout (the context model's channel groups grow, so channel `c`
//! of group `k` moves to `start'_k + (c − start_k)`). The new channels start at zero
//! and cost almost nothing:
//! - their analysis rows are zero, so they are 0 in every image;
//! - their hyper-synthesis rows are zero but for the bias: mean 0 and scale
//!   [`NEW_SCALE`], at which a zero costs 0.018 bits. The decoded image is the narrow
//!   core's, and the rate is up to that: for 64 new channels +0.0024 bpp in real files,
//!   +2 % BD-rate on the held-out photos but +4.5 % at quality 10;
//! - every other entry that reads a new input (the hyper-analysis's and the context
//!   networks' columns for the new channels, the weights from new hidden units) is zero,
//!   so the old channels' `(scale, mean)` are exactly what they were;
//! - but their synthesis rows are small, not zero. Zero rows on zero channels would be a
//!   dead start, neither giving the other a gradient; small rows pass the distortion's
//!   gradient to the new channels' analysis rows through the straight-through rounding.
//!
//! New hidden units (the hyper-synthesis's and the context's) keep the wider network's
//! fresh input weights, so the zero weights that read them get a gradient.

use super::context::{group_sizes, CONTEXT_WIDTH};
use super::ModelConfig;
use tch::{Kind, Tensor};

/// The new channels' synthesis rows start at this fraction of a fresh layer's weights.
const SYNTHESIS_START: f64 = 0.1;

/// The scale the new channels start with: above the tables' floor
/// ([`super::SCALE_BOUND`], below which the scale gets no gradient), and small enough
/// that a zero costs little (0.018 bits). (0.13 would cost a hundredth of that; the
/// first grown run, `runs/core-w1`, started at 0.2, and training moves it either way.)
const NEW_SCALE: f64 = 0.2;

/// Where each old index of one tensor dimension goes in the wider tensor, and whether
/// the dimension is one the layer reads (an input: its new entries must be zero).
struct Axis {
    new_positions: Vec<i64>,
    is_input: bool,
}

impl Axis {
    fn input(new_positions: Vec<i64>) -> Axis {
        Axis {
            new_positions,
            is_input: true,
        }
    }
    fn output(new_positions: Vec<i64>) -> Axis {
        Axis {
            new_positions,
            is_input: false,
        }
    }
}

/// The old channel layout and the new one, and the moves between them.
pub struct LatentGrowth {
    old_m: i64,
    new_m: i64,
    old_groups: Vec<i64>,
    new_groups: Vec<i64>,
}

/// `0..n`: dimensions whose old entries keep their indices (hidden units, unchanged
/// widths); new entries, if any, come after them.
fn prefix(n: i64) -> Vec<i64> {
    (0..n).collect()
}

impl LatentGrowth {
    /// Checks that `old` can grow into `new`: same transforms and context, more latent
    /// channels.
    pub fn new(old: ModelConfig, new: ModelConfig) -> Result<LatentGrowth, String> {
        if old.n != new.n || old.context != new.context {
            return Err(format!(
                "only the latent can grow: the file has n = {}, context {}; the run n = {}, context {}",
                old.n, old.context, new.n, new.context
            ));
        }
        if new.m < old.m {
            return Err(format!(
                "a core's latent cannot shrink (the file has m = {}, the run m = {})",
                old.m, new.m
            ));
        }
        // So that every channel group keeps or gains channels (`group_sizes`).
        if new.m % 8 != 0 || old.m % 8 != 0 {
            return Err(format!(
                "m must be a multiple of 8 (the file has {}, the run {})",
                old.m, new.m
            ));
        }
        Ok(LatentGrowth {
            old_m: old.m,
            new_m: new.m,
            old_groups: group_sizes(old.m),
            new_groups: group_sizes(new.m),
        })
    }

    fn start(groups: &[i64], k: usize) -> i64 {
        groups[..k].iter().sum()
    }

    /// New index of each old latent channel (below `limit`).
    fn latent(&self, limit: i64) -> Vec<i64> {
        let mut moves = vec![];
        for k in 0..self.old_groups.len() {
            let (old_start, new_start) = (
                Self::start(&self.old_groups, k),
                Self::start(&self.new_groups, k),
            );
            for i in 0..self.old_groups[k] {
                if old_start + i < limit {
                    moves.push(new_start + i);
                }
            }
        }
        moves
    }

    /// `[scale of every channel | mean of every channel]`, as the hyper-synthesis
    /// writes them.
    fn latent_pair(&self) -> Vec<i64> {
        let one = self.latent(self.old_m);
        one.iter()
            .copied()
            .chain(one.iter().map(|&c| c + self.new_m))
            .collect()
    }

    /// `[first half | second half]` of a group-sized pair (Δscale | Δmean).
    fn group_pair(&self, k: usize) -> Vec<i64> {
        let (old, new) = (self.old_groups[k], self.new_groups[k]);
        (0..old).chain((0..old).map(|i| new + i)).collect()
    }

    /// The Δ network's inputs: `[hyper scale (M), hyper mean (M), spatial features
    /// (2·size), channel features (CONTEXT_WIDTH)]`.
    fn delta_inputs(&self, k: usize) -> Vec<i64> {
        let (old_size, new_size) = (self.old_groups[k], self.new_groups[k]);
        let hyper = self.latent_pair();
        let spatial = (0..2 * old_size).map(|i| 2 * self.new_m + i);
        let channel = (0..CONTEXT_WIDTH).map(|i| 2 * self.new_m + 2 * new_size + i);
        hyper.into_iter().chain(spatial).chain(channel).collect()
    }

    /// The moves of every dimension of the tensor `name` whose shape grows, or `None`
    /// for a tensor this growth does not touch.
    fn axes(&self, name: &str, old_shape: &[i64]) -> Option<Vec<Axis>> {
        let m = self.old_m;
        let latent = || self.latent(m);
        let same = |d: usize| Axis::output(prefix(old_shape[d]));
        // The gain tables have no layer path.
        let (layer, field) = name.rsplit_once('.').unwrap_or((name, ""));
        let is_weight = field == "weight";
        // Convolution weights are [out, in, k, k]; transposed ("up") ones [in, out, k, k].
        let conv = |out: Vec<i64>, input: Vec<i64>, transposed: bool| -> Vec<Axis> {
            if !is_weight {
                return vec![Axis::output(out)];
            }
            let mut axes = if transposed {
                vec![Axis::input(input), Axis::output(out)]
            } else {
                vec![Axis::output(out), Axis::input(input)]
            };
            axes.push(same(2));
            axes.push(same(3));
            axes
        };
        let hidden = |width: i64| prefix(width);
        let n = if is_weight { old_shape[1] } else { 0 };
        let axes = match layer {
            "analysis.conv3" => conv(latent(), prefix(n), false),
            "synthesis.conv0" if is_weight => conv(prefix(old_shape[1]), latent(), true),
            "hyper_analysis.conv0" if is_weight => conv(prefix(old_shape[0]), latent(), false),
            "hyper_synthesis.conv0" => conv(hidden(m), prefix(old_shape[0]), true),
            "hyper_synthesis.conv1" => conv(hidden(m * 3 / 2), hidden(m), true),
            "hyper_synthesis.conv2" => conv(self.latent_pair(), hidden(m * 3 / 2), false),
            "gain" | "inverse_gain" => vec![same(0), Axis::output(latent())],
            _ => {
                let rest = layer.strip_prefix("context.group")?;
                let (k, part) = rest.split_once('.')?;
                let k: usize = k.parse().ok()?;
                let old_size = self.old_groups[k];
                match part {
                    "channel" if is_weight => conv(
                        prefix(CONTEXT_WIDTH),
                        self.latent(Self::start(&self.old_groups, k)),
                        false,
                    ),
                    "spatial" => conv(hidden(2 * old_size), prefix(old_size), false),
                    "delta0" if is_weight => {
                        conv(prefix(old_shape[0]), self.delta_inputs(k), false)
                    }
                    "delta2" => conv(self.group_pair(k), prefix(n), false),
                    _ => return None,
                }
            }
        };
        Some(axes)
    }

    /// The value of the wider tensor `name`: the old values moved into place, zeros
    /// where a new entry reads a new input, `fresh` (the wider network's own initial
    /// values) elsewhere. The gains' new channels take each level's median of the old
    /// ones (gain and inverse gain alike: a trained core learns them apart), so they are
    /// quantized as finely as a typical old channel. Not a mean: at the lowest level a
    /// trained core turns most channels off, some with a gain a little below zero.
    pub fn grow(&self, name: &str, old: &Tensor, fresh: &Tensor) -> Result<Tensor, String> {
        let old_shape = old.size();
        let not_growing = || {
            format!(
                "{name} has shape {old_shape:?}, expected {:?}, and is not part of the latent's growth",
                fresh.size()
            )
        };
        if old.dim() != fresh.dim() {
            return Err(not_growing());
        }
        let axes = self.axes(name, &old_shape).ok_or_else(not_growing)?;
        // Every old index must land inside the wider tensor, before anything is moved.
        if axes.len() != old.dim() {
            return Err(not_growing());
        }
        for (d, axis) in axes.iter().enumerate() {
            let size = fresh.size()[d];
            if axis.new_positions.len() as i64 != old_shape[d]
                || axis.new_positions.iter().any(|&p| p >= size)
            {
                return Err(format!(
                    "{name}: dimension {d} does not grow from {} to {size}",
                    old_shape[d]
                ));
            }
        }
        // What the new entries start from (see the module's notes).
        let fresh = fresh.to_kind(Kind::Float);
        let mut grown = match name {
            "gain" | "inverse_gain" => old
                .to_kind(Kind::Float)
                .median_dim(1, true)
                .0
                .expand_as(&fresh)
                .contiguous(),
            "analysis.conv3.weight" | "analysis.conv3.bias" | "hyper_synthesis.conv2.weight" => {
                fresh.zeros_like()
            }
            "hyper_synthesis.conv2.bias" => {
                let m = fresh.size()[0] / 2;
                Tensor::cat(
                    &[
                        fresh.narrow(0, 0, m).full_like(NEW_SCALE),
                        fresh.narrow(0, m, m).zeros_like(),
                    ],
                    0,
                )
            }
            "synthesis.conv0.weight" => fresh * SYNTHESIS_START,
            _ => fresh.copy(),
        };
        // Zero every entry that reads a new input, but the synthesis's.
        for (d, axis) in axes.iter().enumerate() {
            if axis.is_input && name != "synthesis.conv0.weight" {
                let kept = Tensor::from_slice(&axis.new_positions);
                let mask = Tensor::ones([grown.size()[d]], (Kind::Float, grown.device()))
                    .index_fill(0, &kept, 0.0);
                let mut shape = vec![1; grown.dim()];
                shape[d] = grown.size()[d];
                // 1 at the new input positions, 0 at the kept ones.
                grown = &grown * (-mask.view(shape.as_slice()) + 1.0);
            }
        }
        // Scatter the old values into place, one dimension at a time.
        let mut moved = old.to_kind(Kind::Float);
        let mut placed = Tensor::ones_like(&moved);
        for (d, axis) in axes.iter().enumerate() {
            let positions = Tensor::from_slice(&axis.new_positions);
            let mut size = moved.size();
            size[d] = grown.size()[d];
            moved = Tensor::zeros(size.as_slice(), (Kind::Float, moved.device()))
                .index_copy(d as i64, &positions, &moved);
            placed = Tensor::zeros(size.as_slice(), (Kind::Float, placed.device()))
                .index_copy(d as i64, &positions, &placed);
        }
        Ok(&grown * (-&placed + 1.0) + moved * placed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{layers::ConvPrecision, Hyperprior};
    use tch::{nn, Device};

    fn core(vs: &nn::VarStore, m: i64) -> Hyperprior {
        let config = ModelConfig {
            n: 16,
            m,
            context: true,
            residual_blocks: 0,
            latent_residual: false,
        };
        Hyperprior::new(&vs.root(), config, ConvPrecision::F32)
    }

    /// A core grown from 16 to 24 latent channels decodes the same image at a low and a
    /// high rate,
    /// gives its old channels the same entropy parameters, and its new channels, zero
    /// at first, get a gradient, so training can put them to use.
    #[test]
    fn a_grown_latent_keeps_the_decoded_image_and_the_old_channels_parameters() {
        tch::manual_seed(7);
        let narrow_vs = nn::VarStore::new(Device::Cpu);
        let narrow = core(&narrow_vs, 16);
        // Give the context model's zero-initialised last layers some weight, as a
        // trained core has, so that the test sees the Δ networks' moves too.
        tch::no_grad(|| {
            for (name, mut var) in narrow_vs.variables() {
                if name.contains("delta2") {
                    var.copy_(&(var.rand_like() * 0.1 - 0.05));
                }
                // A trained core turns channels off at the lowest rate, some with a
                // gain a little below zero (the shipped twelfth release has 42 of 128).
                if name == "gain" {
                    let _ = var.get(0).narrow(0, 0, 6).fill_(-0.01);
                }
            }
        });
        let wide_vs = nn::VarStore::new(Device::Cpu);
        let wide = core(&wide_vs, 24);
        let growth = LatentGrowth::new(narrow.config, wide.config).unwrap();
        let narrow_vars = narrow_vs.variables();
        let mut grown = 0;
        tch::no_grad(|| {
            for (name, mut var) in wide_vs.variables() {
                let old = &narrow_vars[&name];
                if old.size() == var.size() {
                    var.copy_(old);
                } else {
                    var.copy_(&growth.grow(&name, old, &var).unwrap());
                    grown += 1;
                }
            }
        });
        assert!(grown >= 20, "{grown} tensors grew");

        let x = Tensor::rand([1, 3, 64, 64], (Kind::Float, Device::Cpu));
        let rate = Tensor::from_slice(&[5.5f32]);
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            let diff = f64::try_from((a - b).abs().max()).unwrap();
            assert!(diff < 1e-4, "{what} differs by {diff}");
        };
        // The old channels' moves, as an index into the wide latent.
        let old_channels = Tensor::from_slice(&growth.latent(16));
        let y_narrow = narrow.analysis(&x);
        let y_wide = wide.analysis(&x);
        close(
            &y_narrow,
            &y_wide.index_select(1, &old_channels),
            "old latent",
        );
        let new_channels: Vec<i64> = (0..24).filter(|c| !growth.latent(16).contains(c)).collect();
        // The new channels start at zero, and decode as zero.
        let new_index = Tensor::from_slice(&new_channels);
        let y_new = y_wide.index_select(1, &new_index);
        assert_eq!(f64::try_from(y_new.abs().max()).unwrap(), 0.0);
        for r in [0.3f32, 5.5] {
            let rate = Tensor::from_slice(&[r]);
            let decoded = wide.decoded_latent(&x, &rate);
            let decoded_new = decoded.index_select(1, &new_index);
            assert_eq!(f64::try_from(decoded_new.abs().max()).unwrap(), 0.0);
            // So the decoded image is the narrow core's, through the whole quantized path.
            close(
                &narrow.synthesis(&narrow.decoded_latent(&x, &rate)),
                &wide.synthesis(&decoded),
                &format!("decoded image at rate {r}"),
            );
        }
        // The old channels' (scale, mean) after the context model.
        let params = |model: &Hyperprior, y: &Tensor| {
            let z = model.hyper_analysis(y).round();
            let (scale, mean) = model.hyper_synthesis(&z);
            let context = model.context.as_ref().unwrap();
            let (scale, mean, _) = context.forward_train(y, &scale, &mean);
            (scale, mean)
        };
        let (scale_n, mean_n) = params(&narrow, &y_narrow);
        let (scale_w, mean_w) = params(&wide, &y_wide);
        close(&scale_n, &scale_w.index_select(1, &old_channels), "scales");
        close(&mean_n, &mean_w.index_select(1, &old_channels), "means");
        // The new channels' own parameters: mean 0, a small scale above the floor.
        let (scale_new, mean_new) = (
            scale_w.index_select(1, &new_index),
            mean_w.index_select(1, &new_index),
        );
        assert_eq!(f64::try_from(mean_new.abs().max()).unwrap(), 0.0);
        close(&scale_new, &scale_new.full_like(NEW_SCALE), "new scales");

        // The distortion reaches the new channels' analysis rows (not a dead start).
        let out = wide.forward_train(&x, &rate);
        out.x_hat.square().sum(Kind::Float).backward();
        let grad = wide_vs.variables()["analysis.conv3.weight"].grad();
        let new_rows = grad.index_select(0, &Tensor::from_slice(&new_channels));
        assert!(f64::try_from(new_rows.abs().max()).unwrap() > 0.0);
    }

    #[test]
    fn a_latent_only_grows() {
        let config = |m| ModelConfig {
            n: 16,
            m,
            context: true,
            residual_blocks: 0,
            latent_residual: false,
        };
        assert!(LatentGrowth::new(config(24), config(16)).is_err());
        assert!(LatentGrowth::new(config(16), config(20)).is_err());
        let wider_n = ModelConfig {
            n: 24,
            ..config(24)
        };
        assert!(LatentGrowth::new(config(16), wider_n).is_err());
    }
}
