//! The op interface: forward and backward of every layer the four networks
//! use, as plain functions on [`Tensor`]s.
//!
//! This is the reference backend: simple, exact, generic over `f32`/`f64`,
//! multi-threaded with rayon where the work is large. Every function is
//! deterministic: parallel reductions split the work into chunks whose
//! boundaries do not depend on the thread count and add the partial results
//! in a fixed order, so a run gives the same bits on any machine.
//!
//! The autograd tape (`crate::autograd`) calls only these functions; the CUDA
//! backend implements the same signatures with kernels.

pub mod batchnorm;
pub mod concat;
pub mod conv;
pub mod dense;
pub mod elementwise;
pub mod loss;
pub mod pool;
pub mod reduce;

use crate::float::Float;
use rayon::prelude::*;

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

/// Rows per parallel chunk in channel reductions. Fixed, so the partial sums
/// (and so the result's bits) do not depend on how many threads run.
const REDUCE_CHUNK_ROWS: usize = 2048;

/// Sums `width` accumulators over `rows` rows: `visit(row, acc)` adds row
/// `row`'s contributions into `acc`. Rows are processed in parallel chunks;
/// partials are added in chunk order, in f64.
pub(crate) fn reduce_rows(rows: usize, width: usize, visit: impl Fn(usize, &mut [f64]) + Sync) -> Vec<f64> {
    let chunks = rows.div_ceil(REDUCE_CHUNK_ROWS);
    let partials: Vec<Vec<f64>> = (0..chunks)
        .into_par_iter()
        .map(|chunk| {
            let mut acc = vec![0.0; width];
            let end = ((chunk + 1) * REDUCE_CHUNK_ROWS).min(rows);
            for row in chunk * REDUCE_CHUNK_ROWS..end {
                visit(row, &mut acc);
            }
            acc
        })
        .collect();
    let mut total = vec![0.0; width];
    for p in partials {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    total
}

/// Sum over all leading dimensions of a `[.., c]` tensor: the gradient of a
/// per-channel bias.
pub fn channel_sum<T: Float>(dy: &[T], c: usize) -> Vec<T> {
    reduce_rows(dy.len() / c, c, |r, acc| {
        for (a, v) in acc.iter_mut().zip(&dy[r * c..(r + 1) * c]) {
            *a += v.f64();
        }
    })
    .into_iter()
    .map(T::of)
    .collect()
}
