//! Deterministic entropy parameters for Mirage.
//!
//! The decoder must rebuild the encoder's probability tables exactly, or the rANS stream
//! desynchronises. The tables are selected by the hyper-synthesis output (the mean and
//! scale of each latent element), so that network is evaluated here, in plain Rust,
//! rather than by libtorch, whose kernels change their summation order with the thread
//! count, the SIMD width and the library version.
//!
//! How determinism is guaranteed:
//! - every output element is accumulated in one fixed order (kernel row, kernel column,
//!   input channel), using only IEEE-754 f32 `*` and `+`, which are exactly rounded;
//!   Rust never fuses them into FMA unless asked, and no `libm` function is called;
//! - parallelism and SIMD only split *which* outputs are computed where: rows go to
//!   threads, output channels to vector lanes, and no sum is ever split between them;
//! - the rate-dependent gain is a linear interpolation, again only `*` and `+`.
//!
//! Feature maps are stored channel-last (`[H][W][C]`) so that the innermost loop runs
//! over contiguous output channels, which vectorises without changing any sum's order.

pub mod context;
pub mod latent;

use rayon::prelude::*;

/// `acc[i] += a * w[i]` over a row of output channels (see [`multiply_add_kernel`]).
type MultiplyAdd = dyn Fn(&mut [f32], f32, &[f32]) + Sync;

/// PyTorch's default negative slope, which the trained network used.
pub(crate) const LEAKY_SLOPE: f32 = 0.01;

/// A channel-last feature map.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureMap {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    /// `data[(y * width + x) * channels + c]`
    pub data: Vec<f32>,
}

impl FeatureMap {
    pub fn zeros(height: usize, width: usize, channels: usize) -> FeatureMap {
        FeatureMap {
            height,
            width,
            channels,
            data: vec![0.0; height * width * channels],
        }
    }

    /// From a channel-first (`[C][H][W]`, PyTorch order) buffer.
    pub fn from_chw(data: &[f32], channels: usize, height: usize, width: usize) -> FeatureMap {
        assert_eq!(
            data.len(),
            channels * height * width,
            "buffer size mismatch"
        );
        let mut map = FeatureMap::zeros(height, width, channels);
        for c in 0..channels {
            for i in 0..height * width {
                map.data[i * channels + c] = data[c * height * width + i];
            }
        }
        map
    }

    /// To a channel-first (`[C][H][W]`) buffer.
    pub fn to_chw(&self) -> Vec<f32> {
        let hw = self.height * self.width;
        let mut out = vec![0.0; self.channels * hw];
        for i in 0..hw {
            for c in 0..self.channels {
                out[c * hw + i] = self.data[i * self.channels + c];
            }
        }
        out
    }
}

/// Weight-shape or size mismatch when building or running the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError(pub String);

impl std::fmt::Display for ShapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "hyper-synthesis weights: {}", self.0)
    }
}
impl std::error::Error for ShapeError {}

/// One convolution layer, plain or transposed, with "same" padding (`kernel / 2`) and,
/// for transposed layers, `output_padding = stride - 1`, matching the training model.
#[derive(Clone, Debug)]
pub struct Conv {
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    transposed: bool,
    /// `w[((ky * k + kx) * c_in + ci) * c_out + co]`: the taps for one input value are
    /// contiguous over output channels.
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl Conv {
    /// From PyTorch-layout weights: `[c_out, c_in, k, k]` for a convolution,
    /// `[c_in, c_out, k, k]` for a transposed one.
    pub fn new(
        torch_weight: &[f32],
        bias: &[f32],
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        transposed: bool,
    ) -> Result<Conv, ShapeError> {
        let k = kernel;
        if torch_weight.len() != c_in * c_out * k * k || bias.len() != c_out {
            return Err(ShapeError(format!(
                "expected {c_in}x{c_out}x{k}x{k} weights and {c_out} biases, got {} and {}",
                torch_weight.len(),
                bias.len()
            )));
        }
        let mut weight = vec![0.0; torch_weight.len()];
        for co in 0..c_out {
            for ci in 0..c_in {
                for ky in 0..k {
                    for kx in 0..k {
                        let src = if transposed {
                            ((ci * c_out + co) * k + ky) * k + kx
                        } else {
                            ((co * c_in + ci) * k + ky) * k + kx
                        };
                        weight[((ky * k + kx) * c_in + ci) * c_out + co] = torch_weight[src];
                    }
                }
            }
        }
        Ok(Conv {
            c_in,
            c_out,
            kernel,
            stride,
            transposed,
            weight,
            bias: bias.to_vec(),
        })
    }

    fn output_size(&self, size: usize) -> usize {
        if self.transposed {
            size * self.stride
        } else {
            size.div_ceil(self.stride)
        }
    }

    /// The input position feeding output `o` through tap `t`, if any.
    fn source(&self, o: usize, t: usize, size: usize) -> Option<usize> {
        let pad = self.kernel / 2;
        if self.transposed {
            // out = in * stride - pad + t  ⇔  in = (out + pad - t) / stride
            let num = (o + pad).checked_sub(t)?;
            (num % self.stride == 0)
                .then_some(num / self.stride)
                .filter(|&i| i < size)
        } else {
            // in = out * stride - pad + t
            (o * self.stride + t).checked_sub(pad).filter(|&i| i < size)
        }
    }

    /// Computes one output row. The order of the sum for every element is: bias, then
    /// taps by (ky, kx), then input channels — the same whatever thread runs the row.
    fn row(&self, input: &FeatureMap, oy: usize, out: &mut [f32], kernel: &MultiplyAdd) {
        let (k, c_in, c_out) = (self.kernel, self.c_in, self.c_out);
        let out_w = self.output_size(input.width);
        for ox in 0..out_w {
            let acc = &mut out[ox * c_out..(ox + 1) * c_out];
            acc.copy_from_slice(&self.bias);
            for ky in 0..k {
                let Some(iy) = self.source(oy, ky, input.height) else {
                    continue;
                };
                for kx in 0..k {
                    let Some(ix) = self.source(ox, kx, input.width) else {
                        continue;
                    };
                    let pixel = &input.data[(iy * input.width + ix) * c_in..][..c_in];
                    let taps = &self.weight[(ky * k + kx) * c_in * c_out..][..c_in * c_out];
                    for (ci, &a) in pixel.iter().enumerate() {
                        kernel(acc, a, &taps[ci * c_out..(ci + 1) * c_out]);
                    }
                }
            }
        }
    }

    /// A stride-1 convolution evaluated only at `positions` (row-major indexes), reading
    /// only the input positions for which `reads(position)` holds (the others are known
    /// to be zero, and skipping them saves half the work of a checkerboard context).
    /// Returns a `1 × positions.len()` map in `positions` order. Each output's sum runs
    /// in the same fixed order as [`Conv::forward`] over the taps it reads.
    pub fn forward_at(
        &self,
        input: &FeatureMap,
        positions: &[usize],
        reads: impl Fn(usize) -> bool + Sync,
    ) -> Result<FeatureMap, ShapeError> {
        if input.channels != self.c_in || self.stride != 1 || self.transposed {
            return Err(ShapeError("forward_at needs a stride-1 convolution".into()));
        }
        let (k, c_in, c_out) = (self.kernel, self.c_in, self.c_out);
        let mut out = FeatureMap::zeros(1, positions.len(), c_out);
        let kernel = multiply_add_kernel();
        out.data
            .par_chunks_mut(c_out)
            .zip(positions.par_iter())
            .for_each(|(acc, &p)| {
                let (oy, ox) = (p / input.width, p % input.width);
                acc.copy_from_slice(&self.bias);
                for ky in 0..k {
                    let Some(iy) = self.source(oy, ky, input.height) else {
                        continue;
                    };
                    for kx in 0..k {
                        let Some(ix) = self.source(ox, kx, input.width) else {
                            continue;
                        };
                        let q = iy * input.width + ix;
                        if !reads(q) {
                            continue;
                        }
                        let pixel = &input.data[q * c_in..][..c_in];
                        let taps = &self.weight[(ky * k + kx) * c_in * c_out..][..c_in * c_out];
                        for (ci, &a) in pixel.iter().enumerate() {
                            kernel(acc, a, &taps[ci * c_out..(ci + 1) * c_out]);
                        }
                    }
                }
            });
        Ok(out)
    }

    pub fn forward(&self, input: &FeatureMap) -> Result<FeatureMap, ShapeError> {
        if input.channels != self.c_in {
            return Err(ShapeError(format!(
                "layer expects {} input channels, got {}",
                self.c_in, input.channels
            )));
        }
        let (out_h, out_w) = (
            self.output_size(input.height),
            self.output_size(input.width),
        );
        let mut out = FeatureMap::zeros(out_h, out_w, self.c_out);
        let kernel = multiply_add_kernel();
        out.data
            .par_chunks_mut(out_w * self.c_out)
            .enumerate()
            .for_each(|(oy, row)| self.row(input, oy, row, &kernel));
        Ok(out)
    }
}

/// `acc[i] += a * w[i]`, element by element: a separate rounding after the multiply
/// and after the add, never a fused multiply-add.
#[inline(always)]
fn multiply_add(acc: &mut [f32], a: f32, w: &[f32]) {
    for (s, &wi) in acc.iter_mut().zip(w) {
        *s += a * wi;
    }
}

/// The same loop compiled for AVX2 (8 lanes instead of SSE2's 4). Each lane computes an
/// independent output channel with the same two roundings, so the result is bit-identical
/// to [`multiply_add`]; `tests::avx2_twin_is_bit_identical` checks it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn multiply_add_avx2(acc: &mut [f32], a: f32, w: &[f32]) {
    multiply_add(acc, a, w)
}

/// Picks the widest multiply-add this CPU runs. (AVX-512 is not used: on many CPUs it
/// lowers the clock, and AVX2 already makes the hyper-synthesis a few ms.)
pub fn multiply_add_kernel() -> impl Fn(&mut [f32], f32, &[f32]) + Sync {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::is_x86_feature_detected!("avx2");
        move |acc: &mut [f32], a: f32, w: &[f32]| {
            if avx2 {
                // SAFETY: the CPU supports AVX2 (checked above).
                unsafe { multiply_add_avx2(acc, a, w) }
            } else {
                multiply_add(acc, a, w)
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        multiply_add
    }
}

/// The hyper-synthesis: transposed conv (5×5, ×2), leaky ReLU, transposed conv (5×5,
/// ×2), leaky ReLU, conv (3×3); its output channels are `[scales..., means...]`.
#[derive(Clone, Debug)]
pub struct HyperSynthesis {
    pub layers: Vec<Conv>,
    /// Latent channels `M` (the output has `2M`).
    pub latent_channels: usize,
}

/// Mean and (unclamped) scale for every latent element, channel-first `[M][H][W]`.
#[derive(Clone, Debug, PartialEq)]
pub struct EntropyParameters {
    pub scales: Vec<f32>,
    pub means: Vec<f32>,
    pub height: usize,
    pub width: usize,
}

impl HyperSynthesis {
    pub fn new(layers: Vec<Conv>) -> Result<HyperSynthesis, ShapeError> {
        let last = layers
            .last()
            .ok_or_else(|| ShapeError("no layers".into()))?;
        if last.c_out % 2 != 0 {
            return Err(ShapeError("odd number of output channels".into()));
        }
        for pair in layers.windows(2) {
            if pair[0].c_out != pair[1].c_in {
                return Err(ShapeError("consecutive layers disagree on channels".into()));
            }
        }
        Ok(HyperSynthesis {
            latent_channels: last.c_out / 2,
            layers,
        })
    }

    pub fn input_channels(&self) -> usize {
        self.layers[0].c_in
    }

    /// Runs the network on the dequantized hyper-latent: `z_hat[c] * inverse_gain[c]`
    /// (`z_hat` channel-first `[C][H][W]`).
    pub fn run(
        &self,
        z_hat: &[i32],
        inverse_gain: &[f32],
        height: usize,
        width: usize,
    ) -> Result<EntropyParameters, ShapeError> {
        let h = self.features(z_hat, inverse_gain, height, width)?;
        let chw = h.to_chw();
        let half = chw.len() / 2;
        Ok(EntropyParameters {
            scales: chw[..half].to_vec(),
            means: chw[half..].to_vec(),
            height: h.height,
            width: h.width,
        })
    }

    /// The raw output map (channel-last, `[scales..., means...]`), which the context
    /// model reads.
    pub fn features(
        &self,
        z_hat: &[i32],
        inverse_gain: &[f32],
        height: usize,
        width: usize,
    ) -> Result<FeatureMap, ShapeError> {
        let c = self.input_channels();
        if z_hat.len() != c * height * width || inverse_gain.len() != c {
            return Err(ShapeError("hyper-latent size mismatch".into()));
        }
        let mut h = FeatureMap::zeros(height, width, c);
        for ch in 0..c {
            for i in 0..height * width {
                h.data[i * c + ch] = z_hat[ch * height * width + i] as f32 * inverse_gain[ch];
            }
        }
        for (i, layer) in self.layers.iter().enumerate() {
            if i > 0 {
                for v in &mut h.data {
                    if *v < 0.0 {
                        *v *= LEAKY_SLOPE;
                    }
                }
            }
            h = layer.forward(&h)?;
        }
        Ok(h)
    }
}

/// Maps the header's integer rate setting (`0..=rate_max`) to the two gain levels to
/// blend and the blend weight: `r = rate · (levels − 1) / rate_max`.
pub fn rate_position(rate: u16, rate_max: u16, levels: usize) -> (usize, f32) {
    let r = rate.min(rate_max) as f32 * (levels - 1) as f32 / rate_max as f32;
    let low = (r as usize).min(levels - 2);
    (low, r - low as f32)
}

/// Linear interpolation between the two nearest rows of a `[levels][channels]` gain
/// table: `g_low · (1 − t) + g_high · t`.
pub fn interpolate_gain(table: &[f32], levels: usize, rate: u16, rate_max: u16) -> Vec<f32> {
    let channels = table.len() / levels;
    let (low, t) = rate_position(rate, rate_max, levels);
    let (a, b) = (
        &table[low * channels..][..channels],
        &table[(low + 1) * channels..][..channels],
    );
    a.iter()
        .zip(b)
        .map(|(&ga, &gb)| ga * (1.0 - t) + gb * t)
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small xorshift so the tests need no dependencies and are reproducible.
    pub(crate) fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Direct, obviously-correct reference of PyTorch's conv / conv_transpose semantics
    /// (in f64, so it checks the indexing, not the rounding).
    fn reference(conv: &Conv, torch_w: &[f32], input: &FeatureMap) -> FeatureMap {
        let (k, ci_n, co_n, s, p) = (
            conv.kernel,
            conv.c_in,
            conv.c_out,
            conv.stride,
            conv.kernel / 2,
        );
        let (oh, ow) = (
            conv.output_size(input.height),
            conv.output_size(input.width),
        );
        let mut out = vec![0f64; oh * ow * co_n];
        for (o, v) in out.iter_mut().enumerate() {
            *v = conv.bias[o % co_n] as f64;
        }
        for iy in 0..input.height {
            for ix in 0..input.width {
                for ci in 0..ci_n {
                    let a = input.data[(iy * input.width + ix) * ci_n + ci] as f64;
                    for co in 0..co_n {
                        for ky in 0..k {
                            for kx in 0..k {
                                let (oy, ox, w) = if conv.transposed {
                                    let oy = (iy * s + ky) as isize - p as isize;
                                    let ox = (ix * s + kx) as isize - p as isize;
                                    (oy, ox, torch_w[((ci * co_n + co) * k + ky) * k + kx])
                                } else {
                                    // Scatter form of the plain convolution: input iy
                                    // feeds output oy with iy = oy*s - p + ky.
                                    let ny = iy as isize + p as isize - ky as isize;
                                    let nx = ix as isize + p as isize - kx as isize;
                                    if ny % s as isize != 0 || nx % s as isize != 0 {
                                        continue;
                                    }
                                    (
                                        ny / s as isize,
                                        nx / s as isize,
                                        torch_w[((co * ci_n + ci) * k + ky) * k + kx],
                                    )
                                };
                                if oy < 0 || ox < 0 || oy >= oh as isize || ox >= ow as isize {
                                    continue;
                                }
                                out[((oy as usize) * ow + ox as usize) * co_n + co] += a * w as f64;
                            }
                        }
                    }
                }
            }
        }
        FeatureMap {
            height: oh,
            width: ow,
            channels: co_n,
            data: out.into_iter().map(|v| v as f32).collect(),
        }
    }

    fn check_against_reference(transposed: bool, kernel: usize, stride: usize) {
        let (c_in, c_out) = (5, 7);
        let w = pseudo_random(c_in * c_out * kernel * kernel, 1);
        let b = pseudo_random(c_out, 2);
        let conv = Conv::new(&w, &b, c_in, c_out, kernel, stride, transposed).unwrap();
        let input = FeatureMap {
            height: 6,
            width: 4,
            channels: c_in,
            data: pseudo_random(6 * 4 * c_in, 3),
        };
        let got = conv.forward(&input).unwrap();
        let want = reference(&conv, &w, &input);
        assert_eq!((got.height, got.width), (want.height, want.width));
        for (g, w) in got.data.iter().zip(&want.data) {
            // f32 accumulation of ~100 terms of size ~0.25 against an f64 reference.
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
    }

    #[test]
    fn transposed_conv_matches_reference() {
        check_against_reference(true, 5, 2);
    }

    #[test]
    fn conv_matches_reference() {
        check_against_reference(false, 3, 1);
        check_against_reference(false, 5, 2);
    }

    #[test]
    fn avx2_twin_is_bit_identical() {
        let a = pseudo_random(1, 9)[0];
        let w = pseudo_random(301, 10);
        let mut scalar = pseudo_random(301, 11);
        let mut wide = scalar.clone();
        multiply_add(&mut scalar, a, &w);
        multiply_add_kernel()(&mut wide, a, &w);
        assert_eq!(
            scalar.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            wide.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    fn small_network() -> HyperSynthesis {
        let layer = |c_in, c_out, k, s, t, seed| {
            let w = pseudo_random(c_in * c_out * k * k, seed);
            let b = pseudo_random(c_out, seed + 1);
            Conv::new(&w, &b, c_in, c_out, k, s, t).unwrap()
        };
        HyperSynthesis::new(vec![
            layer(6, 8, 5, 2, true, 20),
            layer(8, 12, 5, 2, true, 30),
            layer(12, 16, 3, 1, false, 40),
        ])
        .unwrap()
    }

    #[test]
    fn same_bits_with_one_or_two_threads() {
        let net = small_network();
        let z: Vec<i32> = pseudo_random(6 * 3 * 5, 50)
            .iter()
            .map(|v| (v * 20.0) as i32)
            .collect();
        let gain = vec![0.7; 6];
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let a = one.install(|| net.run(&z, &gain, 3, 5).unwrap());
        let b = two.install(|| net.run(&z, &gain, 3, 5).unwrap());
        assert_eq!(a.height, 12);
        assert_eq!(a.width, 20);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.scales), bits(&b.scales));
        assert_eq!(bits(&a.means), bits(&b.means));
    }

    #[test]
    fn gain_interpolation_hits_levels_and_blends() {
        let table = [1.0, 10.0, 2.0, 20.0, 4.0, 40.0]; // 3 levels × 2 channels
        assert_eq!(interpolate_gain(&table, 3, 0, 1000), vec![1.0, 10.0]);
        assert_eq!(interpolate_gain(&table, 3, 500, 1000), vec![2.0, 20.0]);
        assert_eq!(interpolate_gain(&table, 3, 1000, 1000), vec![4.0, 40.0]);
        assert_eq!(interpolate_gain(&table, 3, 250, 1000), vec![1.5, 15.0]);
        // Out-of-range settings are clamped, never indexed out of bounds.
        assert_eq!(interpolate_gain(&table, 3, 5000, 1000), vec![4.0, 40.0]);
    }

    #[test]
    fn rejects_mismatched_shapes() {
        assert!(Conv::new(&[0.0; 10], &[0.0; 2], 3, 2, 3, 1, false).is_err());
        let net = small_network();
        assert!(net.run(&[0; 5], &[1.0; 6], 3, 5).is_err());
    }
}
