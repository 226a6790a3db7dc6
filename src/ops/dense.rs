//! Dense layer `y = x W + b`, `x: [n, k]`, `W: [k, o]` (Flax layout), `b: [o]`.

use super::channel_sum;
use crate::float::Float;
use crate::layers::dense::{dims, forward_dims};
use crate::tensor::Tensor;

pub fn forward<T: Float>(x: &Tensor<T>, w: &Tensor<T>, b: &Tensor<T>) -> Tensor<T> {
    let (n, k, o) = forward_dims(x, w, b);
    let mut y: Vec<T> = (0..n).flat_map(|_| b.data().iter().copied()).collect();
    T::gemm(
        n,
        k,
        o,
        x.data(),
        (k as isize, 1),
        w.data(),
        (o as isize, 1),
        T::one(),
        &mut y,
        (o as isize, 1),
    );
    Tensor::new(&[n, o], y)
}

/// Gradients `(dx, dw, db)`.
pub fn backward<T: Float>(dy: &Tensor<T>, x: &Tensor<T>, w: &Tensor<T>) -> (Tensor<T>, Tensor<T>, Tensor<T>) {
    let (n, k, o) = dims(x, w);
    let mut dx = vec![T::zero(); n * k];
    // dx = dy W^T
    T::gemm(
        n,
        o,
        k,
        dy.data(),
        (o as isize, 1),
        w.data(),
        (1, o as isize),
        T::zero(),
        &mut dx,
        (k as isize, 1),
    );
    let mut dw = vec![T::zero(); k * o];
    // dw = x^T dy
    T::gemm(
        k,
        n,
        o,
        x.data(),
        (1, k as isize),
        dy.data(),
        (o as isize, 1),
        T::zero(),
        &mut dw,
        (o as isize, 1),
    );
    let db = channel_sum(dy.data(), o);
    (
        Tensor::new(&[n, k], dx),
        Tensor::new(&[k, o], dw),
        Tensor::new(&[o], db),
    )
}
