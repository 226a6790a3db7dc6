//! Mean over H and W: the global average pool before each network's head.

use super::nhwc;
use crate::float::Float;
use crate::tensor::Tensor;

/// `[n, h, w, c] -> [n, c]`.
pub fn mean_hw<T: Float>(x: &Tensor<T>) -> Tensor<T> {
    let [n, h, w, c] = nhwc(x.shape());
    let mut y = vec![0.0f64; n * c];
    for (img, yi) in y.chunks_mut(c).enumerate() {
        for px in x.data()[img * h * w * c..][..h * w * c].chunks(c) {
            for (a, v) in yi.iter_mut().zip(px) {
                *a += v.f64();
            }
        }
    }
    let inv = 1.0 / (h * w) as f64;
    Tensor::new(&[n, c], y.into_iter().map(|s| T::of(s * inv)).collect())
}

/// Spreads `dy` (`[n, c]`) evenly over the `h x w` pixels of each image.
pub fn mean_hw_backward<T: Float>(dy: &Tensor<T>, x_shape: &[usize]) -> Tensor<T> {
    let [n, h, w, c] = nhwc(x_shape);
    let inv = T::of(1.0 / (h * w) as f64);
    let mut dx = Vec::with_capacity(n * h * w * c);
    for gi in dy.data().chunks(c) {
        for _ in 0..h * w {
            dx.extend(gi.iter().map(|&g| g * inv));
        }
    }
    Tensor::new(x_shape, dx)
}
