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

pub(crate) use crate::layers::nhwc;
pub use crate::layers::Window;

use crate::float::Float;
use rayon::prelude::*;

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
