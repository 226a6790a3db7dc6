//! What a layer is, whichever backend computes it: window geometry, shapes
//! and their checks, batch-norm constants and statistics. Both the CPU
//! reference (`ops/`) and the CUDA launchers (`cuda/`) build on this module,
//! so `cuda/` never imports the CPU reference (issue 10; `tests/imports.rs`
//! checks it). It imports nothing above [`Tensor`](crate::tensor::Tensor).

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
