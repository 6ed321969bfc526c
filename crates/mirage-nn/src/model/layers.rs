//! The building blocks of the transforms: strided convolutions and GDN.
//!
//! Variable names match the checkpoint keys (`<path>.weight`, `<path>.beta`, ...), so a
//! weight in a safetensors file can be found by grepping for the field that uses it.

use tch::{nn, Kind, Tensor};

/// Precision used for the convolutions' arithmetic.
///
/// On a CPU with AVX-512 BF16 instructions, bf16 convolutions run about twice as fast
/// as f32. libtorch's `autocast` is CUDA-only, so the cast is done by hand, per layer;
/// everything that is not a convolution (GDN, likelihoods, losses) stays in f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPrecision {
    F32,
    Bf16,
}

impl ConvPrecision {
    /// The faster precision for training on this CPU: bf16 only where the CPU has
    /// AVX-512 BF16. Elsewhere (an AVX2-only CPU, for one) libtorch falls back to a
    /// scalar bf16 GEMM and a training step is about ten times slower than in f32.
    pub fn fastest_for_training() -> ConvPrecision {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512bf16") {
            return ConvPrecision::Bf16;
        }
        ConvPrecision::F32
    }
}

/// A 2-D convolution, or a transposed ("up") one, with "same"-style padding so that a
/// stride-2 layer exactly halves (or doubles) the spatial size.
#[derive(Debug)]
pub struct Conv {
    pub weight: Tensor,
    pub bias: Tensor,
    stride: i64,
    padding: i64,
    transposed: bool,
}

impl Conv {
    /// A downsampling (or, with `stride = 1`, size-preserving) convolution.
    pub fn down(p: nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64) -> Conv {
        Self::new(p, c_in, c_out, kernel, stride, false)
    }

    /// A transposed convolution that multiplies the spatial size by `stride`.
    pub fn up(p: nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64) -> Conv {
        Self::new(p, c_in, c_out, kernel, stride, true)
    }

    /// A size-preserving convolution that starts at zero (weights and bias), for the
    /// last layer of a residual branch that must begin as the identity.
    pub fn zeroed(p: nn::Path, c_in: i64, c_out: i64, kernel: i64) -> Conv {
        Self::with_bound(p, c_in, c_out, kernel, 1, false, 0.0)
    }

    fn new(p: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64, transposed: bool) -> Conv {
        // He-style uniform initialisation over the fan-in (like PyTorch's default).
        let fan_in = (if transposed { c_out } else { c_in } * k * k) as f64;
        Self::with_bound(p, c_in, c_out, k, stride, transposed, 1.0 / fan_in.sqrt())
    }

    fn with_bound(
        p: nn::Path,
        c_in: i64,
        c_out: i64,
        k: i64,
        stride: i64,
        transposed: bool,
        bound: f64,
    ) -> Conv {
        let shape = if transposed {
            [c_in, c_out, k, k]
        } else {
            [c_out, c_in, k, k]
        };
        let weight = p.var(
            "weight",
            &shape,
            nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        );
        let bias = p.var("bias", &[c_out], nn::Init::Const(0.0));
        Conv {
            weight,
            bias,
            stride,
            padding: k / 2,
            transposed,
        }
    }

    /// A handle sharing the same weights.
    pub fn replica(&self) -> Conv {
        Conv {
            weight: self.weight.shallow_clone(),
            bias: self.bias.shallow_clone(),
            ..*self
        }
    }

    pub fn forward(&self, x: &Tensor, precision: ConvPrecision) -> Tensor {
        match precision {
            ConvPrecision::F32 => self.apply(x, &self.weight, &self.bias),
            ConvPrecision::Bf16 => {
                let kind = Kind::BFloat16;
                self.apply(
                    &x.to_kind(kind),
                    &self.weight.to_kind(kind),
                    &self.bias.to_kind(kind),
                )
                .to_kind(Kind::Float)
            }
        }
    }

    fn apply(&self, x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
        let s = [self.stride, self.stride];
        let pad = [self.padding, self.padding];
        if self.transposed {
            let out_pad = [self.stride - 1, self.stride - 1];
            x.conv_transpose2d(w, Some(b), s, pad, out_pad, 1, [1, 1])
        } else {
            x.conv2d(w, Some(b), s, pad, [1, 1], 1)
        }
    }
}

/// The residual bottleneck block of ELIC's transforms (He et al. 2022): a 1×1 layer to
/// half the width, a 3×3 layer, a 1×1 layer back, added to the input.
///
/// Its last layer starts at zero, so a new block is the identity: blocks can be added to
/// a trained core (`train core --residual-blocks`) without changing what it computes,
/// and training then grows them from there. That is how the core gains depth without the
/// cold start that no session can fit. At half width a block is cheap: at N = 96 on the
/// 1/4-resolution stage it adds 1,872 multiply–adds per pixel, on the 1/8 stage 468,
/// against about 48,000 for the two transforms together.
#[derive(Debug)]
pub struct ResidualBottleneck {
    reduce: Conv,
    mix: Conv,
    expand: Conv,
}

impl ResidualBottleneck {
    pub fn new(p: nn::Path, channels: i64) -> ResidualBottleneck {
        let half = channels / 2;
        ResidualBottleneck {
            reduce: Conv::down(&p / "reduce", channels, half, 1, 1),
            mix: Conv::down(&p / "mix", half, half, 3, 1),
            expand: Conv::zeroed(&p / "expand", half, channels, 1),
        }
    }

    pub fn forward(&self, x: &Tensor, precision: ConvPrecision) -> Tensor {
        let h = self.reduce.forward(x, precision).leaky_relu();
        let h = self.mix.forward(&h, precision).leaky_relu();
        x + self.expand.forward(&h, precision)
    }

    /// A handle sharing the same weights.
    pub fn replica(&self) -> ResidualBottleneck {
        ResidualBottleneck {
            reduce: self.reduce.replica(),
            mix: self.mix.replica(),
            expand: self.expand.replica(),
        }
    }
}

/// A dense (fully connected) layer, with checkpoint keys `<path>.weight` / `<path>.bias`
/// like [`Conv`]. `zero` initialises it to output zeros, for conditioning layers
/// (FiLM) that should start as the identity.
#[derive(Debug)]
pub struct Dense {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Dense {
    pub fn new(p: nn::Path, c_in: i64, c_out: i64, zero: bool) -> Dense {
        let bound = if zero {
            0.0
        } else {
            1.0 / (c_in as f64).sqrt()
        };
        Dense {
            weight: p.var(
                "weight",
                &[c_out, c_in],
                nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            ),
            bias: p.var("bias", &[c_out], nn::Init::Const(0.0)),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, Some(&self.bias))
    }

    /// A handle sharing the same weights.
    pub fn replica(&self) -> Dense {
        Dense {
            weight: self.weight.shallow_clone(),
            bias: self.bias.shallow_clone(),
        }
    }
}

/// Generalized divisive normalization (Ballé et al. 2016):
/// `y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)`, or its approximate inverse
/// (multiply instead of divide) in the synthesis transform.
///
/// `beta` and `gamma` are stored as square roots plus a small pedestal and bounded
/// from below, the reparameterisation of the paper, so that they stay positive
/// and their gradients stay well scaled near zero.
#[derive(Debug)]
pub struct Gdn {
    pub beta: Tensor,
    pub gamma: Tensor,
    inverse: bool,
}

const PEDESTAL: f64 = 1.0 / (1u64 << 36) as f64;

/// The lower bound of the stored (square-root) β, so that β ≥ 1e-6.
fn beta_bound() -> f64 {
    (1e-6 + PEDESTAL).sqrt()
}

/// The lower bound of the stored (square-root) γ, so that γ ≥ 0.
fn gamma_bound() -> f64 {
    PEDESTAL.sqrt()
}

impl Gdn {
    pub fn new(p: nn::Path, channels: i64, inverse: bool) -> Gdn {
        let beta = p.var(
            "beta",
            &[channels],
            nn::Init::Const((1.0 + PEDESTAL).sqrt()),
        );
        let gamma_init = (Tensor::eye(channels, (Kind::Float, p.device())) * 0.1 + PEDESTAL).sqrt();
        let gamma = p.var_copy("gamma", &gamma_init);
        Gdn {
            beta,
            gamma,
            inverse,
        }
    }

    /// A handle sharing the same weights.
    pub fn replica(&self) -> Gdn {
        Gdn {
            beta: self.beta.shallow_clone(),
            gamma: self.gamma.shallow_clone(),
            inverse: self.inverse,
        }
    }

    /// Puts β and γ back on their lower bounds wherever an optimizer step took them
    /// below. `forward` clamps them there anyway, so no output changes; but `clamp_min`
    /// passes no gradient below its bound, so a parameter left there would stay there
    /// for good. Without this, training had switched off most of the GDN terms (in the
    /// seventh core release only 17 of 96 diagonal γ of the first inverse GDN were above
    /// the bound; 82 in v1), and with them most of the transforms' nonlinearity. On the bound, the
    /// gradient passes again (`clamp_min` lets it through at equality), so a term the
    /// loss wants can grow back. Trainers call it after every optimizer step.
    pub fn project_to_bounds(&self) {
        tch::no_grad(|| {
            let _ = self.beta.shallow_clone().clamp_min_(beta_bound());
            let _ = self.gamma.shallow_clone().clamp_min_(gamma_bound());
        });
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let c = self.beta.size()[0];
        let beta = self.beta.clamp_min(beta_bound()).square() - PEDESTAL;
        let gamma = self.gamma.clamp_min(gamma_bound()).square() - PEDESTAL;
        let norm = x.square().conv2d(
            &gamma.view([c, c, 1, 1]),
            Some(&beta),
            [1, 1],
            [0, 0],
            [1, 1],
            1,
        );
        if self.inverse {
            x * norm.sqrt()
        } else {
            x * norm.rsqrt()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A γ pushed below its bound is dead under `clamp_min` (no gradient ever reaches
    /// it again); put back on the bound it changes no output and takes gradients again.
    #[test]
    fn a_gdn_term_below_its_bound_is_revived_by_the_projection() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let gdn = Gdn::new(vs.root() / "gdn", 2, false);
        let x = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.25]).view([1, 2, 2, 1]);
        tch::no_grad(|| {
            // An off-diagonal term an optimizer step took below the bound.
            let _ = gdn.gamma.get(0).get(1).fill_(-0.01);
        });
        let before = gdn.forward(&x);
        let push_up = |gdn: &Gdn| {
            // A loss that wants the term larger: its gradient is negative.
            let loss = -gdn.forward(&x).sum(Kind::Float);
            gdn.gamma.shallow_clone().zero_grad();
            loss.backward();
            gdn.gamma.grad().get(0).get(1).double_value(&[])
        };
        assert_eq!(push_up(&gdn), 0.0, "below the bound no gradient arrives");
        gdn.project_to_bounds();
        assert_eq!(
            gdn.gamma.get(0).get(1).double_value(&[]),
            gamma_bound() as f32 as f64
        );
        let after = gdn.forward(&x);
        assert_eq!(f64::try_from((&after - &before).abs().max()).unwrap(), 0.0);
        assert!(push_up(&gdn) != 0.0, "on the bound the gradient passes");
    }
}
