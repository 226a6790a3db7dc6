//! Batch normalisation over every axis but the last (channels), as Flax's
//! `nn.BatchNorm`: train mode normalises with the batch mean and the biased
//! variance and reports both so the caller can update the running
//! statistics (`r = momentum * r + (1 - momentum) * batch`); eval mode uses
//! the running statistics.
//!
//! Statistics accumulate in f64 whatever `T` is: a 128x32x32 batch sums
//! 131,072 values per channel, beyond what float32 adds exactly. The variance
//! is computed in two passes (mean first), which equals Flax's
//! E[x^2] - E[x]^2 mathematically and is better conditioned.

use super::reduce_rows;
use crate::float::Float;
use crate::tensor::Tensor;
use rayon::prelude::*;

pub use crate::layers::batchnorm::{BatchStats, EPS, MOMENTUM};

/// Per-channel `(mean, biased variance)` of a `[.., c]` tensor, in f64.
fn moments<T: Float>(x: &[T], c: usize) -> (Vec<f64>, Vec<f64>) {
    let rows = x.len() / c;
    let sums = reduce_rows(rows, c, |r, acc| {
        for (a, v) in acc.iter_mut().zip(&x[r * c..(r + 1) * c]) {
            *a += v.f64();
        }
    });
    let mean: Vec<f64> = sums.iter().map(|s| s / rows as f64).collect();
    let sq = reduce_rows(rows, c, |r, acc| {
        for ((a, v), m) in acc.iter_mut().zip(&x[r * c..(r + 1) * c]).zip(&mean) {
            let d = v.f64() - m;
            *a += d * d;
        }
    });
    let var = sq.iter().map(|s| s / rows as f64).collect();
    (mean, var)
}

/// `y = (x - mean) * scale / sqrt(var + eps) + bias`, per channel, in parallel.
fn normalise<T: Float>(x: &Tensor<T>, scale: &Tensor<T>, bias: &Tensor<T>, mean: &[f64], var: &[f64]) -> Tensor<T> {
    let c = mean.len();
    // y = x * a + b with a = scale / std, b = bias - mean * a.
    let a: Vec<f64> = (0..c).map(|i| scale.data()[i].f64() / (var[i] + EPS).sqrt()).collect();
    let b: Vec<f64> = (0..c).map(|i| bias.data()[i].f64() - mean[i] * a[i]).collect();
    let mut y = vec![T::zero(); x.numel()];
    y.par_chunks_mut(c).zip(x.data().par_chunks(c)).for_each(|(yr, xr)| {
        for i in 0..c {
            yr[i] = T::of(xr[i].f64() * a[i] + b[i]);
        }
    });
    Tensor::new(x.shape(), y)
}

fn channels<T: Float>(x: &Tensor<T>, scale: &Tensor<T>, bias: &Tensor<T>) -> usize {
    let c = *x.shape().last().expect("batch norm of a scalar");
    assert_eq!(scale.shape(), [c], "batch norm scale must have shape [{c}]");
    assert_eq!(bias.shape(), [c], "batch norm bias must have shape [{c}]");
    c
}

/// Train mode: normalise with the batch statistics, and return them.
pub fn forward_train<T: Float>(x: &Tensor<T>, scale: &Tensor<T>, bias: &Tensor<T>) -> (Tensor<T>, BatchStats<T>) {
    let c = channels(x, scale, bias);
    let (mean, var) = moments(x.data(), c);
    let y = normalise(x, scale, bias, &mean, &var);
    let to_t = |v: &[f64]| Tensor::new(&[c], v.iter().map(|&m| T::of(m)).collect());
    (
        y,
        BatchStats {
            mean: to_t(&mean),
            var: to_t(&var),
        },
    )
}

/// Eval mode: normalise with the running statistics.
pub fn forward_eval<T: Float>(
    x: &Tensor<T>,
    scale: &Tensor<T>,
    bias: &Tensor<T>,
    running_mean: &Tensor<T>,
    running_var: &Tensor<T>,
) -> Tensor<T> {
    channels(x, scale, bias);
    let f64s = |t: &Tensor<T>| t.data().iter().map(|v| v.f64()).collect::<Vec<_>>();
    normalise(x, scale, bias, &f64s(running_mean), &f64s(running_var))
}

/// `running = momentum * running + (1 - momentum) * batch`, for mean and var.
pub fn update_running<T: Float>(running_mean: &mut Tensor<T>, running_var: &mut Tensor<T>, batch: &BatchStats<T>) {
    for (r, b) in [(running_mean, &batch.mean), (running_var, &batch.var)] {
        for (rv, &bv) in r.data_mut().iter_mut().zip(b.data()) {
            *rv = T::of(MOMENTUM * rv.f64() + (1.0 - MOMENTUM) * bv.f64());
        }
    }
}

/// Gradients `(dx, dscale, dbias)`. `stats` are the statistics the forward
/// normalised with: the batch's in train mode, the running ones in eval mode.
///
/// Train mode differentiates through the batch statistics: with
/// xhat = (x - mean) / std, `dx = scale / std * (dy - mean(dy) - xhat * mean(dy * xhat))`.
/// Eval mode is an affine map: `dx = scale / std * dy`.
pub fn backward<T: Float>(
    dy: &Tensor<T>,
    x: &Tensor<T>,
    scale: &Tensor<T>,
    stats: &BatchStats<T>,
    train: bool,
) -> (Tensor<T>, Tensor<T>, Tensor<T>) {
    let c = scale.numel();
    let rows = x.numel() / c;
    let mean: Vec<f64> = stats.mean.data().iter().map(|v| v.f64()).collect();
    let inv_std: Vec<f64> = stats.var.data().iter().map(|v| 1.0 / (v.f64() + EPS).sqrt()).collect();
    let (dyd, xd) = (dy.data(), x.data());
    // acc[0..c] = sum dy, acc[c..2c] = sum dy * xhat
    let sums = reduce_rows(rows, 2 * c, |r, acc| {
        for i in 0..c {
            let g = dyd[r * c + i].f64();
            acc[i] += g;
            acc[c + i] += g * (xd[r * c + i].f64() - mean[i]) * inv_std[i];
        }
    });
    let (dbias, dscale) = sums.split_at(c);
    let mut dx = vec![T::zero(); x.numel()];
    dx.par_chunks_mut(c)
        .zip(dyd.par_chunks(c).zip(xd.par_chunks(c)))
        .for_each(|(dxr, (dyr, xr))| {
            for i in 0..c {
                let gain = scale.data()[i].f64() * inv_std[i];
                let g = dyr[i].f64();
                dxr[i] = T::of(if train {
                    let xhat = (xr[i].f64() - mean[i]) * inv_std[i];
                    gain * (g - dbias[i] / rows as f64 - xhat * dscale[i] / rows as f64)
                } else {
                    gain * g
                });
            }
        });
    let to_t = |v: &[f64]| Tensor::new(&[c], v.iter().map(|&s| T::of(s)).collect());
    (Tensor::new(x.shape(), dx), to_t(dscale), to_t(dbias))
}
