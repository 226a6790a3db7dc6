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
//!
//! What follows a batch norm in these networks (a ReLU, and in ResNet a
//! residual add before it) is part of the op, its [`Epilogue`]: the GPU
//! runs it inside the batch norm's passes (`kernels/batchnorm.cu`), and
//! this reference computes the same thing, rounded as the separate ops
//! round, so fused and unfused give the same bits.

use super::reduce_rows;
use crate::float::Float;
use crate::tensor::Tensor;
use rayon::prelude::*;

pub use crate::layers::batchnorm::{BatchStats, Epilogue, Grads, EPS, MOMENTUM};

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

/// The affine map `y = x * a + b` of normalising with `mean` and `var`:
/// `a = scale / sqrt(var + eps)`, `b = bias - mean * a`, per channel.
fn affine<T: Float>(scale: &Tensor<T>, bias: &Tensor<T>, mean: &[f64], var: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let a: Vec<f64> = (0..mean.len())
        .map(|i| scale.data()[i].f64() / (var[i] + EPS).sqrt())
        .collect();
    let b = (0..mean.len()).map(|i| bias.data()[i].f64() - mean[i] * a[i]).collect();
    (a, b)
}

/// `relu(T(x * a + b) + residual)` per element, in parallel: rounded as the
/// unfused ops round (the affine map to T, then the add in T).
fn normalise<T: Float>(x: &Tensor<T>, (a, b): (Vec<f64>, Vec<f64>), tail: Epilogue<&Tensor<T>>) -> Tensor<T> {
    let c = a.len();
    if let Some(r) = tail.residual {
        assert_eq!(r.shape(), x.shape(), "batch norm residual must have x's shape");
    }
    let residual = tail.residual.map(Tensor::data);
    let mut y = vec![T::zero(); x.numel()];
    y.par_chunks_mut(c)
        .zip(x.data().par_chunks(c))
        .enumerate()
        .for_each(|(row, (yr, xr))| {
            for i in 0..c {
                let mut v = T::of(xr[i].f64() * a[i] + b[i]);
                if let Some(r) = residual {
                    v += r[row * c + i];
                }
                // Not `max`: a NaN must stay NaN, as in ops::elementwise::relu.
                if tail.relu && v < T::zero() {
                    v = T::zero();
                }
                yr[i] = v;
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

/// Train mode: normalise with the batch statistics, then `tail`; also
/// returns the statistics.
pub fn forward_train<T: Float>(
    x: &Tensor<T>,
    scale: &Tensor<T>,
    bias: &Tensor<T>,
    tail: Epilogue<&Tensor<T>>,
) -> (Tensor<T>, BatchStats<T>) {
    let c = channels(x, scale, bias);
    let (mean, var) = moments(x.data(), c);
    let y = normalise(x, affine(scale, bias, &mean, &var), tail);
    let to_t = |v: &[f64]| Tensor::new(&[c], v.iter().map(|&m| T::of(m)).collect());
    (
        y,
        BatchStats {
            mean: to_t(&mean),
            var: to_t(&var),
        },
    )
}

/// Eval mode: normalise with the running statistics, then `tail`.
pub fn forward_eval<T: Float>(
    x: &Tensor<T>,
    scale: &Tensor<T>,
    bias: &Tensor<T>,
    running: &BatchStats<T>,
    tail: Epilogue<&Tensor<T>>,
) -> Tensor<T> {
    channels(x, scale, bias);
    let f64s = |t: &Tensor<T>| t.data().iter().map(|v| v.f64()).collect::<Vec<_>>();
    let (mean, var) = (f64s(&running.mean), f64s(&running.var));
    normalise(x, affine(scale, bias, &mean, &var), tail)
}

/// `running = momentum * running + (1 - momentum) * batch`, for mean and var.
pub fn update_running<T: Float>(running_mean: &mut Tensor<T>, running_var: &mut Tensor<T>, batch: &BatchStats<T>) {
    for (r, b) in [(running_mean, &batch.mean), (running_var, &batch.var)] {
        for (rv, &bv) in r.data_mut().iter_mut().zip(b.data()) {
            *rv = T::of(MOMENTUM * rv.f64() + (1.0 - MOMENTUM) * bv.f64());
        }
    }
}

/// The gradients given `dy`. `y` is the forward's output (read only when
/// `tail` has a ReLU: the gradient passes where `y > 0`); `stats` are the
/// statistics the forward normalised with: the batch's in train mode, the
/// running ones in eval mode.
///
/// With `g` the gradient that reaches the affine map (dy, masked by the
/// ReLU) and xhat = (x - mean) / std, train mode differentiates through the
/// batch statistics: `dx = scale / std * (g - mean(g) - xhat * mean(g * xhat))`;
/// eval mode is an affine map: `dx = scale / std * g`. The residual's
/// gradient is `g`.
pub fn backward<T: Float>(
    dy: &Tensor<T>,
    x: &Tensor<T>,
    y: &Tensor<T>,
    scale: &Tensor<T>,
    stats: &BatchStats<T>,
    train: bool,
    tail: Epilogue<()>,
) -> Grads<T> {
    let c = scale.numel();
    let rows = x.numel() / c;
    let mean: Vec<f64> = stats.mean.data().iter().map(|v| v.f64()).collect();
    let inv_std: Vec<f64> = stats.var.data().iter().map(|v| 1.0 / (v.f64() + EPS).sqrt()).collect();
    // Not `v <= 0`: a NaN output passes no gradient either.
    let passes = |v: T| !tail.relu || v.partial_cmp(&T::zero()) == Some(std::cmp::Ordering::Greater);
    let g: Vec<T> = dy
        .data()
        .par_iter()
        .zip(y.data())
        .map(|(&d, &v)| if passes(v) { d } else { T::zero() })
        .collect();
    let xd = x.data();
    // acc[0..c] = sum g, acc[c..2c] = sum g * xhat
    let sums = reduce_rows(rows, 2 * c, |r, acc| {
        for i in 0..c {
            let gi = g[r * c + i].f64();
            acc[i] += gi;
            acc[c + i] += gi * (xd[r * c + i].f64() - mean[i]) * inv_std[i];
        }
    });
    let (dbias, dscale) = sums.split_at(c);
    let mut dx = vec![T::zero(); x.numel()];
    dx.par_chunks_mut(c)
        .zip(g.par_chunks(c).zip(xd.par_chunks(c)))
        .for_each(|(dxr, (gr, xr))| {
            for i in 0..c {
                let gain = scale.data()[i].f64() * inv_std[i];
                let gi = gr[i].f64();
                dxr[i] = T::of(if train {
                    let xhat = (xr[i].f64() - mean[i]) * inv_std[i];
                    gain * (gi - dbias[i] / rows as f64 - xhat * dscale[i] / rows as f64)
                } else {
                    gain * gi
                });
            }
        });
    let to_t = |v: &[f64]| Tensor::new(&[c], v.iter().map(|&s| T::of(s)).collect());
    Grads {
        dx: Tensor::new(x.shape(), dx),
        dscale: to_t(dscale),
        dbias: to_t(dbias),
        dresidual: tail.residual.map(|()| Tensor::new(x.shape(), g)),
    }
}
