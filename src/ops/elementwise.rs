//! Element-wise ops: ReLU and addition.

use crate::float::Float;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Elements per parallel task: large enough to amortise scheduling.
const GRAIN: usize = 1 << 15;

pub fn relu<T: Float>(x: &Tensor<T>) -> Tensor<T> {
    let mut y = x.data().to_vec();
    y.par_chunks_mut(GRAIN).for_each(|c| {
        for v in c {
            // Not `max`: a NaN must stay NaN (as in JAX) so a diverged run is seen.
            if *v < T::zero() {
                *v = T::zero();
            }
        }
    });
    Tensor::new(x.shape(), y)
}

/// `dx = dy` where the output was positive, else 0 (JAX's convention at 0,
/// and at NaN: `select(y > 0, dy, 0)`, as the CUDA kernel does).
pub fn relu_backward<T: Float>(dy: &Tensor<T>, y: &Tensor<T>) -> Tensor<T> {
    let mut dx = dy.data().to_vec();
    dx.par_chunks_mut(GRAIN)
        .zip(y.data().par_chunks(GRAIN))
        .for_each(|(d, yc)| {
            for (g, &v) in d.iter_mut().zip(yc) {
                // Not `v <= 0`: a NaN output passes no gradient either.
                if v.partial_cmp(&T::zero()) != Some(std::cmp::Ordering::Greater) {
                    *g = T::zero();
                }
            }
        });
    Tensor::new(dy.shape(), dx)
}

pub fn add<T: Float>(a: &Tensor<T>, b: &Tensor<T>) -> Tensor<T> {
    assert_eq!(a.shape(), b.shape(), "add of mismatched shapes");
    let mut y = a.data().to_vec();
    y.par_chunks_mut(GRAIN)
        .zip(b.data().par_chunks(GRAIN))
        .for_each(|(yc, bc)| {
            for (v, &w) in yc.iter_mut().zip(bc) {
                *v += w;
            }
        });
    Tensor::new(a.shape(), y)
}
