//! The spatial–channel context model, in deterministic arithmetic.
//!
//! The latent's channels are split into groups, and each group is coded in two
//! checkerboard passes: the *anchors* (`(row + column)` even), then the rest. The
//! parameters of a pass come from the hyper-synthesis output, from the decoded earlier
//! groups (channel context) and, for the second pass, from the decoded anchors of the
//! same group (spatial context). The encoder and the decoder both walk these passes in
//! [`ContextModel::run`]; only the callback differs (the encoder rounds the latent, the
//! decoder reads the rANS stream), so they compute every table from the same values in
//! the same order.
//!
//! The networks are those of `crates/mirage/src/model/context.rs`, which documents the
//! architecture; both must change together.

use crate::{Conv, FeatureMap, ShapeError, LEAKY_SLOPE};

/// The layers of one channel group.
#[derive(Clone, Debug)]
pub struct GroupLayers {
    /// ŷ of the earlier groups → context features (3×3), absent for the first group.
    pub channel: Option<Conv>,
    /// ŷ of this group at the anchors → spatial features (5×5).
    pub spatial: Conv,
    /// Three 1×1 layers: [hyper (2M), spatial, channel] → Δ(scale, mean).
    pub delta: [Conv; 3],
}

#[derive(Clone, Debug)]
pub struct ContextModel {
    groups: Vec<GroupLayers>,
    /// `(start, size)` of each group's channels.
    ranges: Vec<(usize, usize)>,
    latent_channels: usize,
    context_width: usize,
}

/// The elements one pass codes: channels `channels` at `positions` (row-major indexes
/// into the latent's `H × W`), with their parameters. Element `(i, c)` — the `i`-th
/// position, the `c`-th channel of the range — is at `i * channels.len() + c` in
/// `scales`, `means` and the symbols the callback returns.
pub struct Pass<'a> {
    pub channels: std::ops::Range<usize>,
    pub positions: &'a [usize],
    pub scales: Vec<f32>,
    pub means: Vec<f32>,
}

/// Every latent element's final parameters, channel-first `[M][H][W]`, like
/// [`crate::EntropyParameters`], and the symbols in the same layout.
pub struct ContextOutput {
    pub scales: Vec<f32>,
    pub means: Vec<f32>,
    pub symbols: Vec<i32>,
}

fn leaky_relu(map: &mut FeatureMap) {
    for v in &mut map.data {
        if *v < 0.0 {
            *v *= LEAKY_SLOPE;
        }
    }
}

impl ContextModel {
    /// `groups[k]` codes the next `sizes[k]` channels.
    pub fn new(groups: Vec<GroupLayers>, sizes: &[usize]) -> Result<ContextModel, ShapeError> {
        if groups.len() != sizes.len() || groups.is_empty() {
            return Err(ShapeError("context groups and sizes disagree".into()));
        }
        let latent_channels: usize = sizes.iter().sum();
        let context_width = groups
            .iter()
            .find_map(|g| g.channel.as_ref().map(|c| c.c_out))
            .unwrap_or(0);
        let mut ranges = vec![];
        let mut start = 0;
        for (k, (g, &size)) in groups.iter().zip(sizes).enumerate() {
            let channel_ok = match &g.channel {
                Some(c) => k > 0 && c.c_in == start && c.c_out == context_width && c.kernel == 3,
                None => k == 0,
            };
            let spatial_ok = g.spatial.c_in == size
                && g.spatial.c_out == 2 * size
                && g.spatial.kernel == 5
                && g.spatial.stride == 1;
            let delta_ok = g.delta[0].c_in == 2 * latent_channels + 2 * size + context_width
                && g.delta[0].c_out == g.delta[1].c_in
                && g.delta[1].c_out == g.delta[2].c_in
                && g.delta[2].c_out == 2 * size
                && g.delta.iter().all(|d| d.kernel == 1 && d.stride == 1);
            if !(channel_ok && spatial_ok && delta_ok) {
                return Err(ShapeError(format!("context group {k} has the wrong shape")));
            }
            ranges.push((start, size));
            start += size;
        }
        Ok(ContextModel {
            groups,
            ranges,
            latent_channels,
            context_width,
        })
    }

    pub fn latent_channels(&self) -> usize {
        self.latent_channels
    }

    /// Runs every pass in order. `hyper` is the hyper-synthesis output (`2M` channels,
    /// scales then means); `code` receives each pass's parameters and returns its
    /// symbols (`round(y − mean)` at the encoder, the decoded values at the decoder).
    pub fn run<E: From<ShapeError>>(
        &self,
        hyper: &FeatureMap,
        mut code: impl FnMut(&Pass) -> Result<Vec<i32>, E>,
    ) -> Result<ContextOutput, E> {
        let m = self.latent_channels;
        if hyper.channels != 2 * m {
            return Err(
                ShapeError("hyper-synthesis output does not match the context".into()).into(),
            );
        }
        let (h, w) = (hyper.height, hyper.width);
        let hw = h * w;
        let is_anchor = |p: usize| (p / w + p % w).is_multiple_of(2);
        let anchors: Vec<usize> = (0..hw).filter(|&p| is_anchor(p)).collect();
        let others: Vec<usize> = (0..hw).filter(|&p| !is_anchor(p)).collect();

        let mut out = ContextOutput {
            scales: vec![0.0; m * hw],
            means: vec![0.0; m * hw],
            symbols: vec![0; m * hw],
        };
        // The decoded latent ŷ = symbol + mean, channel-last, filled group by group.
        let mut decoded = FeatureMap::zeros(h, w, m);
        for (group, &(start, size)) in self.groups.iter().zip(&self.ranges) {
            let channel_features = match &group.channel {
                Some(conv) => {
                    let mut previous = FeatureMap::zeros(h, w, start);
                    for p in 0..hw {
                        previous.data[p * start..(p + 1) * start]
                            .copy_from_slice(&decoded.data[p * m..p * m + start]);
                    }
                    let mut f = conv.forward(&previous)?;
                    leaky_relu(&mut f);
                    f
                }
                None => FeatureMap::zeros(h, w, self.context_width),
            };
            let mut spatial_features = FeatureMap::zeros(h, w, 2 * size);
            for (pass, positions) in [&anchors, &others].into_iter().enumerate() {
                if pass == 1 {
                    // This group's anchors, already decoded; zero elsewhere.
                    let mut input = FeatureMap::zeros(h, w, size);
                    for &p in &anchors {
                        input.data[p * size..(p + 1) * size]
                            .copy_from_slice(&decoded.data[p * m + start..p * m + start + size]);
                    }
                    spatial_features = group.spatial.forward_at(&input, positions, is_anchor)?;
                }
                let (scales, means) = self.delta(
                    group,
                    (start, size),
                    hyper,
                    &spatial_features,
                    &channel_features,
                    positions,
                    pass == 1,
                )?;
                let params = Pass {
                    channels: start..start + size,
                    positions,
                    scales,
                    means,
                };
                let symbols = code(&params)?;
                if symbols.len() != positions.len() * size {
                    return Err(
                        ShapeError("a pass returned the wrong number of symbols".into()).into(),
                    );
                }
                for (i, &p) in positions.iter().enumerate() {
                    for c in 0..size {
                        let e = i * size + c;
                        let (s, mu) = (params.scales[e], params.means[e]);
                        let ch = start + c;
                        out.scales[ch * hw + p] = s;
                        out.means[ch * hw + p] = mu;
                        out.symbols[ch * hw + p] = symbols[e];
                        decoded.data[p * m + ch] = symbols[e] as f32 + mu;
                    }
                }
            }
        }
        Ok(out)
    }

    /// `(scale, mean)` of a group at `positions`: the hyper-synthesis's values plus the
    /// Δ network's correction. `spatial_features` is indexed by position in `positions`
    /// order for the second pass (`gathered`) and is all zeros for the first.
    #[allow(clippy::too_many_arguments)]
    fn delta(
        &self,
        group: &GroupLayers,
        (start, size): (usize, usize),
        hyper: &FeatureMap,
        spatial_features: &FeatureMap,
        channel_features: &FeatureMap,
        positions: &[usize],
        gathered: bool,
    ) -> Result<(Vec<f32>, Vec<f32>), ShapeError> {
        let m = self.latent_channels;
        let inputs = 2 * m + 2 * size + self.context_width;
        // The pass's positions as one row each of a `rows × ROW` map, so the 1×1 layers
        // run in parallel over rows; the padding positions are zeros and are dropped.
        const ROW: usize = 32;
        let rows = positions.len().div_ceil(ROW);
        let mut x = FeatureMap::zeros(rows, ROW, inputs);
        for (i, &p) in positions.iter().enumerate() {
            let v = &mut x.data[i * inputs..(i + 1) * inputs];
            v[..2 * m].copy_from_slice(&hyper.data[p * 2 * m..(p + 1) * 2 * m]);
            if gathered {
                v[2 * m..2 * m + 2 * size]
                    .copy_from_slice(&spatial_features.data[i * 2 * size..(i + 1) * 2 * size]);
            }
            let cw = self.context_width;
            v[2 * m + 2 * size..].copy_from_slice(&channel_features.data[p * cw..(p + 1) * cw]);
        }
        for (i, layer) in group.delta.iter().enumerate() {
            if i > 0 {
                leaky_relu(&mut x);
            }
            x = layer.forward(&x)?;
        }
        let n = positions.len();
        let (mut scales, mut means) = (vec![0.0; n * size], vec![0.0; n * size]);
        for (i, &p) in positions.iter().enumerate() {
            let d = &x.data[i * 2 * size..(i + 1) * 2 * size];
            for c in 0..size {
                scales[i * size + c] = hyper.data[p * 2 * m + start + c] + d[c];
                means[i * size + c] = hyper.data[p * 2 * m + m + start + c] + d[size + c];
            }
        }
        Ok((scales, means))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::pseudo_random;

    fn conv(c_in: usize, c_out: usize, k: usize, seed: u64) -> Conv {
        let w = pseudo_random(c_in * c_out * k * k, seed);
        let b = pseudo_random(c_out, seed + 1);
        Conv::new(&w, &b, c_in, c_out, k, 1, false).unwrap()
    }

    /// A small model: M = 8 in groups 1, 1, 2, 4; context width 3; hidden width 5.
    fn small_model() -> ContextModel {
        let sizes = [1, 1, 2, 4];
        let mut start = 0;
        let groups = sizes
            .iter()
            .enumerate()
            .map(|(k, &size)| {
                let seed = 100 * k as u64;
                let g = GroupLayers {
                    channel: (k > 0).then(|| conv(start, 3, 3, seed + 1)),
                    spatial: conv(size, 2 * size, 5, seed + 10),
                    delta: [
                        conv(16 + 2 * size + 3, 5, 1, seed + 20),
                        conv(5, 5, 1, seed + 30),
                        conv(5, 2 * size, 1, seed + 40),
                    ],
                };
                start += size;
                g
            })
            .collect();
        ContextModel::new(groups, &sizes).unwrap()
    }

    fn hyper(h: usize, w: usize) -> FeatureMap {
        FeatureMap {
            height: h,
            width: w,
            channels: 16,
            data: pseudo_random(h * w * 16, 7),
        }
    }

    /// Encodes `y` (channel-first) as the codec does; returns the output and the
    /// symbols in stream order.
    fn encode(model: &ContextModel, hyper: &FeatureMap, y: &[f32]) -> (ContextOutput, Vec<i32>) {
        let hw = hyper.height * hyper.width;
        let mut stream = vec![];
        let out = model
            .run::<ShapeError>(hyper, |pass| {
                let n = pass.channels.len();
                let mut s = vec![];
                for (i, &p) in pass.positions.iter().enumerate() {
                    for (c, ch) in pass.channels.clone().enumerate() {
                        s.push((y[ch * hw + p] - pass.means[i * n + c]).round() as i32);
                    }
                }
                stream.extend_from_slice(&s);
                Ok(s)
            })
            .unwrap();
        (out, stream)
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn decoder_rebuilds_the_encoders_parameters_with_any_thread_count() {
        let model = small_model();
        let (h, w) = (5, 7);
        let hyper = hyper(h, w);
        let y: Vec<f32> = pseudo_random(8 * h * w, 8)
            .iter()
            .map(|v| v * 12.0)
            .collect();
        let pool = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        };
        let (enc, stream) = pool(1).install(|| encode(&model, &hyper, &y));
        // The decoder gets the symbols back one pass at a time, in stream order.
        let dec = pool(2).install(|| {
            let mut next = 0;
            model
                .run::<ShapeError>(&hyper, |pass| {
                    let s = stream[next..next + pass.scales.len()].to_vec();
                    next += s.len();
                    Ok(s)
                })
                .unwrap()
        });
        assert_eq!(bits(&enc.scales), bits(&dec.scales));
        assert_eq!(bits(&enc.means), bits(&dec.means));
        assert_eq!(enc.symbols, dec.symbols);
        // The context does change the parameters (the test would pass vacuously if the
        // Δ networks were ignored).
        let plain: Vec<f32> = (0..8 * h * w)
            .map(|i| hyper.data[(i % (h * w)) * 16 + i / (h * w)])
            .collect();
        assert_ne!(bits(&enc.scales), bits(&plain));
    }

    #[test]
    fn a_symbol_only_affects_the_parameters_coded_after_it() {
        let model = small_model();
        let (h, w) = (4, 6);
        let hyper = hyper(h, w);
        let hw = h * w;
        let y: Vec<f32> = pseudo_random(8 * hw, 9).iter().map(|v| v * 12.0).collect();
        let (a, _) = encode(&model, &hyper, &y);
        // Change one non-anchor element of group 2 (channel 2, position (0, 1)).
        let mut changed = y.clone();
        changed[2 * hw + 1] += 40.0;
        let (b, _) = encode(&model, &hyper, &changed);
        let anchor = |p: usize| (p / w + p % w).is_multiple_of(2);
        for ch in 0..8 {
            for p in 0..hw {
                let i = ch * hw + p;
                let earlier = ch < 2 || (ch < 4 && anchor(p));
                if earlier {
                    assert_eq!(
                        a.means[i].to_bits(),
                        b.means[i].to_bits(),
                        "channel {ch} position {p}"
                    );
                    assert_eq!(a.scales[i].to_bits(), b.scales[i].to_bits());
                }
            }
        }
        // ... and the last group, coded after it, sees it.
        assert_ne!(bits(&a.means[4 * hw..]), bits(&b.means[4 * hw..]));
    }

    #[test]
    fn rejects_mismatched_layers() {
        let mut groups = small_model().groups;
        groups[1].spatial = conv(2, 4, 5, 1);
        assert!(ContextModel::new(groups, &[1, 1, 2, 4]).is_err());
    }
}
