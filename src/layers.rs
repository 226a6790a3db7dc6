//! What a layer is, whichever backend computes it: window geometry, shapes
//! and their checks, batch-norm constants and statistics, the loss's epoch
//! totals. Both the CPU reference (`ops/`) and the CUDA launchers (`cuda/`)
//! build on this module, so `cuda/` never imports the CPU reference (issue
//! 10; `tests/imports.rs` checks it). It imports nothing above [`Tensor`](crate::tensor::Tensor).

/// How the GPU multiplies in a convolution. `Fp32` is exact fp32 on the
/// CUDA cores (the CPU's arithmetic, up to summation order); `Tf32` rounds
/// both operands to TF32 (10 mantissa bits) and multiplies on the tensor
/// cores, accumulating in fp32, as PyTorch's and JAX's default "fp32" does.
/// Weights, optimiser state and batch-norm statistics stay fp32 either way;
/// f64 tensors and the CPU always compute exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Math {
    #[default]
    Fp32,
    Tf32,
}

impl Math {
    pub const ALL: [Math; 2] = [Math::Tf32, Math::Fp32];

    pub fn name(self) -> &'static str {
        match self {
            Math::Fp32 => "fp32",
            Math::Tf32 => "tf32",
        }
    }
}

impl std::fmt::Display for Math {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Math {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Math::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown math mode {s:?}: expected tf32 or fp32"))
    }
}

/// A sliding window over H and W: a conv kernel or a pooling window.
/// Padding is explicit per side (`pad_lo` before, `pad_hi` after).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub size: [usize; 2],
    pub stride: [usize; 2],
    pub pad_lo: [usize; 2],
    pub pad_hi: [usize; 2],
}

impl Window {
    /// No padding (Flax "VALID").
    pub fn valid(size: [usize; 2], stride: [usize; 2]) -> Self {
        Window {
            size,
            stride,
            pad_lo: [0, 0],
            pad_hi: [0, 0],
        }
    }

    /// Flax/XLA "SAME": out = ceil(in / stride); total padding
    /// max((out-1)*stride + size - in, 0), the smaller half before.
    pub fn same(size: [usize; 2], stride: [usize; 2], in_hw: [usize; 2]) -> Self {
        let mut w = Self::valid(size, stride);
        for d in 0..2 {
            let out = in_hw[d].div_ceil(stride[d]);
            let total = ((out - 1) * stride[d] + size[d]).saturating_sub(in_hw[d]);
            w.pad_lo[d] = total / 2;
            w.pad_hi[d] = total - total / 2;
        }
        w
    }

    /// Output height and width for an input of `in_hw`.
    pub fn out_hw(&self, in_hw: [usize; 2]) -> [usize; 2] {
        let mut out = [0; 2];
        for d in 0..2 {
            let padded = in_hw[d] + self.pad_lo[d] + self.pad_hi[d];
            assert!(
                padded >= self.size[d],
                "window {:?} does not fit input {:?}",
                self,
                in_hw
            );
            out[d] = (padded - self.size[d]) / self.stride[d] + 1;
        }
        out
    }

    /// The input coordinate under window cell `k` of output position `o`
    /// along dimension `d`, or None where it falls in the padding.
    #[inline]
    pub(crate) fn input_coord(&self, d: usize, o: usize, k: usize, extent: usize) -> Option<usize> {
        let i = (o * self.stride[d] + k) as isize - self.pad_lo[d] as isize;
        (i >= 0 && (i as usize) < extent).then_some(i as usize)
    }
}

/// NHWC dimensions of a 4-D tensor.
pub(crate) fn nhwc(shape: &[usize]) -> [usize; 4] {
    match shape {
        &[n, h, w, c] => [n, h, w, c],
        _ => panic!("expected an NHWC tensor, got shape {shape:?}"),
    }
}

/// Batch normalisation's constants (Flax's `nn.BatchNorm` defaults as the
/// tutorial uses them) and the statistics a train-mode forward reports.
pub mod batchnorm {
    use crate::tensor::Tensor;

    pub const EPS: f64 = 1e-5;
    pub const MOMENTUM: f64 = 0.99;

    /// What follows the normalisation, fused into the batch norm's own
    /// passes: `y = relu(bn(x) + residual)`, the add and the ReLU each
    /// optional (every network's `bn, relu`; ResNet's `bn, add, relu`).
    /// `R` is how the residual is given: a tensor, or a device address.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Epilogue<R> {
        /// Added after the affine map; of x's shape.
        pub residual: Option<R>,
        /// Then `max(y, 0)` (a NaN stays NaN).
        pub relu: bool,
    }

    impl<R> Epilogue<R> {
        /// Nothing after the normalisation.
        pub const NONE: Self = Epilogue {
            residual: None,
            relu: false,
        };
        /// A ReLU after the normalisation.
        pub const RELU: Self = Epilogue {
            residual: None,
            relu: true,
        };
    }

    /// The gradients of a batch norm and its epilogue.
    pub struct Grads<T> {
        pub dx: Tensor<T>,
        pub dscale: Tensor<T>,
        pub dbias: Tensor<T>,
        /// The residual's gradient, when the forward added one.
        pub dresidual: Option<Tensor<T>>,
    }

    /// What a train-mode forward returns besides `y`.
    pub struct BatchStats<T> {
        /// Batch mean per channel.
        pub mean: Tensor<T>,
        /// Biased batch variance per channel.
        pub var: Tensor<T>,
    }
}

/// The dense layer's shapes: `x: [n, k]`, `W: [k, o]` (Flax layout), `b: [o]`.
pub mod dense {
    use crate::tensor::Tensor;

    /// `(n, k, o)` of `x: [n, k]` and `w: [k, o]`, checked.
    pub(crate) fn dims<T>(x: &Tensor<T>, w: &Tensor<T>) -> (usize, usize, usize) {
        let (&[n, k], &[k2, o]) = (x.shape(), w.shape()) else {
            panic!(
                "dense wants x [n, k] and w [k, o], got {:?} and {:?}",
                x.shape(),
                w.shape()
            )
        };
        assert_eq!(k, k2, "dense: x has {k} features, kernel expects {k2}");
        (n, k, o)
    }

    /// [`dims`], and the bias `b: [o]` checked too.
    pub(crate) fn forward_dims<T>(x: &Tensor<T>, w: &Tensor<T>, b: &Tensor<T>) -> (usize, usize, usize) {
        let (n, k, o) = dims(x, w);
        assert_eq!(b.shape(), [o], "dense bias must have shape [{o}]");
        (n, k, o)
    }
}

/// What the training loss adds up over an epoch, step by step: the CPU
/// reference of `accumulate_step` in `kernels/loss.cu`, whose device copy
/// has this layout word for word, so the host reads it once per epoch.
pub mod loss {
    /// An epoch's totals. A non-finite loss is not added: it marks its step
    /// as the first bad one, and from then on nothing is added.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq)]
    pub struct EpochTotals {
        /// The finite losses (each a batch mean), summed.
        pub loss_sum: f64,
        /// Correct predictions of those steps.
        pub correct: u64,
        /// Steps counted, the first bad one included.
        pub steps: u64,
        /// 1-based step of the epoch whose loss was not finite; 0 for none.
        pub first_bad_step: u64,
        /// That loss.
        pub bad_loss: f64,
    }

    /// Words of [`EpochTotals`] (all fields are 8 bytes).
    pub const WORDS: usize = 5;
    /// The word of `first_bad_step`: the flag the optimiser and the
    /// running-statistics kernels read.
    pub const FIRST_BAD_STEP_WORD: usize = 3;

    impl EpochTotals {
        /// Adds one step, as `accumulate_step` does.
        pub fn record(&mut self, loss: f64, correct: u64) {
            if self.first_bad_step != 0 {
                return;
            }
            self.steps += 1;
            if loss.is_finite() {
                self.loss_sum += loss;
                self.correct += correct;
            } else {
                self.first_bad_step = self.steps;
                self.bad_loss = loss;
            }
        }

        /// The totals from their device words.
        pub fn from_words(w: [u64; WORDS]) -> Self {
            EpochTotals {
                loss_sum: f64::from_bits(w[0]),
                correct: w[1],
                steps: w[2],
                first_bad_step: w[3],
                bad_loss: f64::from_bits(w[4]),
            }
        }

        /// The non-finite loss that stopped the epoch, if one did.
        pub fn bad_loss(&self) -> Option<f64> {
            (self.first_bad_step != 0).then_some(self.bad_loss)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_bad_step_stops_the_count() {
            let mut t = EpochTotals::default();
            t.record(2.5, 7);
            t.record(f64::NAN, 3);
            t.record(1.0, 9);
            assert_eq!((t.loss_sum, t.correct, t.steps, t.first_bad_step), (2.5, 7, 2, 2));
            assert!(t.bad_loss().unwrap().is_nan());
            let words = [2.5f64.to_bits(), 7, 2, 2, f64::INFINITY.to_bits()];
            assert_eq!(EpochTotals::from_words(words).bad_loss(), Some(f64::INFINITY));
            assert_eq!(std::mem::size_of::<EpochTotals>(), WORDS * 8);
            assert_eq!(
                std::mem::offset_of!(EpochTotals, first_bad_step),
                FIRST_BAD_STEP_WORD * 8
            );
        }
    }
}
