//! The spatial–channel context model of the core (in the spirit of ELIC, He et al. 2022,
//! and of the checkerboard context, He et al. 2021).
//!
//! ```text
//!  hyper-synthesis ─▶ (scale, mean) of every latent channel ──────────────┐
//!                                                                         ▼
//!  group k (uneven channel groups, 16 16 32 64 for M = 128):   (scale, mean) + Δ_k
//!    channel context:  ŷ of groups 0..k ─conv 3×3─▶ ┐                     ▲
//!    spatial context:  ŷ_k at anchors    ─conv 5×5─▶ ├─ 1×1 ─ 1×1 ─ 1×1 ─▶ Δ_k
//!    hyper features:   (scale, mean) of all channels ┘
//! ```
//!
//! Each group is decoded in two passes: first the *anchors* (the checkerboard squares
//! where `(row + column)` is even), whose spatial context is empty, then the other half,
//! which sees its decoded anchor neighbours. So a file decodes in `2 · groups` passes,
//! each a few small convolutions at the latent's resolution.
//!
//! The context only *corrects* the hyper-synthesis's parameters: the last layer of
//! every Δ network starts at zero, so a model warm-started from a plain mean-scale
//! hyperprior begins exactly where that model was and can only learn to do better.
//!
//! The codec runs these networks in `mirage-prior`'s deterministic arithmetic (they
//! choose the entropy coder's tables); this file is the training twin.

use super::layers::{Conv, ConvPrecision};
use tch::{nn, Kind, Tensor};

/// Channel-group sizes for `M` latent channels: ELIC's uneven split (small groups first,
/// where the context helps most), scaled to `M`.
pub fn group_sizes(m: i64) -> Vec<i64> {
    let unit = m / 8;
    vec![unit, unit, 2 * unit, m - 4 * unit]
}

/// Width of the channel-context features and of the Δ network's hidden layers.
pub const CONTEXT_WIDTH: i64 = 64;
pub const HIDDEN_WIDTH: i64 = 128;

/// The networks of one channel group.
#[derive(Debug)]
pub struct GroupContext {
    /// Channels `[start, start + size)` of the latent.
    pub start: i64,
    pub size: i64,
    /// ŷ of the earlier groups → features (absent for the first group).
    pub channel: Option<Conv>,
    /// ŷ of this group at the anchors → features (used for the second pass).
    pub spatial: Conv,
    /// [hyper (2M), spatial (2·size), channel (CONTEXT_WIDTH)] → Δ(scale, mean).
    pub delta: Vec<Conv>,
}

#[derive(Debug)]
pub struct ContextModel {
    pub groups: Vec<GroupContext>,
    pub latent_channels: i64,
    precision: ConvPrecision,
}

/// 1 at the anchors (`(row + column)` even), 0 elsewhere, shaped `[1, 1, H, W]`.
pub fn anchor_mask(h: i64, w: i64) -> Tensor {
    let rows = Tensor::arange(h, (Kind::Int64, tch::Device::Cpu)).view([h, 1]);
    let cols = Tensor::arange(w, (Kind::Int64, tch::Device::Cpu)).view([1, w]);
    ((rows + cols).remainder(2).eq(0))
        .to_kind(Kind::Float)
        .view([1, 1, h, w])
}

impl ContextModel {
    pub fn new(p: &nn::Path, m: i64, precision: ConvPrecision) -> ContextModel {
        let mut start = 0;
        let groups = group_sizes(m)
            .into_iter()
            .enumerate()
            .map(|(k, size)| {
                let g = p / format!("group{k}");
                let channel =
                    (start > 0).then(|| Conv::down(&g / "channel", start, CONTEXT_WIDTH, 3, 1));
                let spatial = Conv::down(&g / "spatial", size, 2 * size, 5, 1);
                let inputs = 2 * m + 2 * size + CONTEXT_WIDTH;
                let delta = vec![
                    Conv::down(&g / "delta0", inputs, HIDDEN_WIDTH, 1, 1),
                    Conv::down(&g / "delta1", HIDDEN_WIDTH, HIDDEN_WIDTH, 1, 1),
                    Conv::down(&g / "delta2", HIDDEN_WIDTH, 2 * size, 1, 1),
                ];
                tch::no_grad(|| {
                    let _ = delta[2].weight.shallow_clone().zero_();
                });
                let group = GroupContext {
                    start,
                    size,
                    channel,
                    spatial,
                    delta,
                };
                start += size;
                group
            })
            .collect();
        ContextModel {
            groups,
            latent_channels: m,
            precision,
        }
    }

    /// Δ(scale, mean) of group `k` from its three inputs (`channel_features` is zeros
    /// for the first group, `spatial_features` zeros for the anchor pass).
    fn delta(
        &self,
        group: &GroupContext,
        hyper: &Tensor,
        spatial_features: &Tensor,
        channel_features: &Tensor,
    ) -> (Tensor, Tensor) {
        let mut h = Tensor::cat(&[hyper, spatial_features, channel_features], 1);
        for (i, conv) in group.delta.iter().enumerate() {
            if i > 0 {
                h = h.leaky_relu();
            }
            h = conv.forward(&h, self.precision);
        }
        let parts = h.chunk(2, 1);
        (parts[0].shallow_clone(), parts[1].shallow_clone())
    }

    /// The training pass: for every group in order, the anchors' parameters, their
    /// straight-through-rounded values, then the non-anchors' parameters. Returns the
    /// full `(scale, mean)` of the latent and the rounded latent `ŷ` the decoder sees.
    /// `y` is the gain-scaled latent, `hyper_scale`/`hyper_mean` the hyper-synthesis's
    /// output.
    pub fn forward_train(
        &self,
        y: &Tensor,
        hyper_scale: &Tensor,
        hyper_mean: &Tensor,
    ) -> (Tensor, Tensor, Tensor) {
        self.forward_rounding(y, hyper_scale, hyper_mean, &super::ste_round)
    }

    /// [`ContextModel::forward_train`] with another rounding of the centred latent
    /// `y − mean` (the encoder's effort refinement anneals a soft rounding into the hard
    /// one, so its gradient sees both neighbouring integers).
    pub fn forward_rounding(
        &self,
        y: &Tensor,
        hyper_scale: &Tensor,
        hyper_mean: &Tensor,
        round: &dyn Fn(&Tensor) -> Tensor,
    ) -> (Tensor, Tensor, Tensor) {
        let (b, _, h, w) = y.size4().expect("latent is [B, M, H, W]");
        let anchors = anchor_mask(h, w);
        let others = -&anchors + 1.0;
        let hyper = Tensor::cat(&[hyper_scale, hyper_mean], 1);
        let (mut scales, mut means, mut decoded) = (vec![], vec![], vec![]);
        for group in &self.groups {
            let range = |t: &Tensor| t.narrow(1, group.start, group.size);
            let y_k = range(y);
            let channel_features = match &group.channel {
                Some(conv) => {
                    let previous = Tensor::cat(&decoded, 1);
                    conv.forward(&previous, self.precision).leaky_relu()
                }
                None => Tensor::zeros([b, CONTEXT_WIDTH, h, w], (Kind::Float, y.device())),
            };
            let no_spatial = Tensor::zeros([b, 2 * group.size, h, w], (Kind::Float, y.device()));
            // Pass 1: anchors.
            let (ds, dm) = self.delta(group, &hyper, &no_spatial, &channel_features);
            let scale_a = range(hyper_scale) + ds;
            let mean_a = range(hyper_mean) + dm;
            let y_hat_a = round(&(&y_k - &mean_a)) + &mean_a;
            // Pass 2: the other half, seeing the decoded anchors.
            let spatial_features = group
                .spatial
                .forward(&(&y_hat_a * &anchors), self.precision);
            let (ds, dm) = self.delta(group, &hyper, &spatial_features, &channel_features);
            let scale_o = range(hyper_scale) + ds;
            let mean_o = range(hyper_mean) + dm;
            let y_hat_o = round(&(&y_k - &mean_o)) + &mean_o;

            let pick = |a: &Tensor, o: &Tensor| a * &anchors + o * &others;
            scales.push(pick(&scale_a, &scale_o));
            means.push(pick(&mean_a, &mean_o));
            decoded.push(pick(&y_hat_a, &y_hat_o));
        }
        (
            Tensor::cat(&scales, 1),
            Tensor::cat(&means, 1),
            Tensor::cat(&decoded, 1),
        )
    }
}
