//! Max-pool and avg-pool over H and W, with Flax's semantics: padded cells
//! never win a max, and an average always divides by the full window area
//! (padded cells count as zeros, like `flax.linen.avg_pool`).
//!
//! Work is split by image; windows of one image only touch that image, so
//! the backward scatter-adds run in parallel without races.

use super::{nhwc, Window};
use crate::float::Float;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Calls `visit(out_offset, in_offsets_of_window)` for each output pixel of
/// one image; offsets are pixel offsets (multiply by channels for elements).
fn for_each_window(h: usize, w: usize, win: &Window, mut visit: impl FnMut(usize, &mut dyn Iterator<Item = usize>)) {
    let [oh, ow] = win.out_hw([h, w]);
    for oy in 0..oh {
        for ox in 0..ow {
            let mut cells = (0..win.size[0]).flat_map(|ky| {
                (0..win.size[1]).filter_map(move |kx| {
                    let iy = win.input_coord(0, oy, ky, h)?;
                    let ix = win.input_coord(1, ox, kx, w)?;
                    Some(iy * w + ix)
                })
            });
            visit(oy * ow + ox, &mut cells);
        }
    }
}

fn out_shape(x_shape: &[usize], win: &Window) -> [usize; 4] {
    let [n, h, w, c] = nhwc(x_shape);
    let [oh, ow] = win.out_hw([h, w]);
    [n, oh, ow, c]
}

/// Max-pool, and the winners for the backward: per output element, the
/// flat index within its image of the input element that won (the first
/// maximum in window order).
pub fn max_forward<T: Float>(x: &Tensor<T>, win: &Window) -> (Tensor<T>, Vec<u32>) {
    let [_, h, w, c] = nhwc(x.shape());
    let shape = out_shape(x.shape(), win);
    let out_per_image = shape[1] * shape[2] * c;
    let mut y = vec![T::zero(); shape.iter().product()];
    let mut arg = vec![0u32; y.len()];
    y.par_chunks_mut(out_per_image)
        .zip(arg.par_chunks_mut(out_per_image))
        .zip(x.data().par_chunks(h * w * c))
        .for_each(|((yi, ai), xi)| {
            for_each_window(h, w, win, |o, cells| {
                let (yo, ao) = (&mut yi[o * c..][..c], &mut ai[o * c..][..c]);
                yo.fill(T::neg_infinity());
                for p in cells {
                    for ch in 0..c {
                        let v = xi[p * c + ch];
                        // A NaN wins, as in XLA's max, so it propagates.
                        if v > yo[ch] || (v.is_nan() && !yo[ch].is_nan()) {
                            yo[ch] = v;
                            ao[ch] = (p * c + ch) as u32;
                        }
                    }
                }
            });
        });
    (Tensor::new(&shape, y), arg)
}

pub fn max_backward<T: Float>(dy: &Tensor<T>, argmax: &[u32], x_shape: &[usize]) -> Tensor<T> {
    let [_, h, w, c] = nhwc(x_shape);
    let out_per_image = dy.numel() / x_shape[0];
    let mut dx = vec![T::zero(); x_shape.iter().product()];
    dx.par_chunks_mut(h * w * c)
        .zip(
            dy.data()
                .par_chunks(out_per_image)
                .zip(argmax.par_chunks(out_per_image)),
        )
        .for_each(|(dxi, (dyi, ai))| {
            for (&g, &a) in dyi.iter().zip(ai) {
                dxi[a as usize] += g;
            }
        });
    Tensor::new(x_shape, dx)
}

pub fn avg_forward<T: Float>(x: &Tensor<T>, win: &Window) -> Tensor<T> {
    let [_, h, w, c] = nhwc(x.shape());
    let shape = out_shape(x.shape(), win);
    let inv_area = T::of(1.0 / (win.size[0] * win.size[1]) as f64);
    let mut y = vec![T::zero(); shape.iter().product()];
    y.par_chunks_mut(shape[1] * shape[2] * c)
        .zip(x.data().par_chunks(h * w * c))
        .for_each(|(yi, xi)| {
            for_each_window(h, w, win, |o, cells| {
                let yo = &mut yi[o * c..][..c];
                for p in cells {
                    for (acc, &v) in yo.iter_mut().zip(&xi[p * c..][..c]) {
                        *acc += v;
                    }
                }
                for v in yo {
                    *v *= inv_area;
                }
            });
        });
    Tensor::new(&shape, y)
}

pub fn avg_backward<T: Float>(dy: &Tensor<T>, x_shape: &[usize], win: &Window) -> Tensor<T> {
    let [_, h, w, c] = nhwc(x_shape);
    let inv_area = T::of(1.0 / (win.size[0] * win.size[1]) as f64);
    let mut dx = vec![T::zero(); x_shape.iter().product()];
    dx.par_chunks_mut(h * w * c)
        .zip(dy.data().par_chunks(dy.numel() / x_shape[0]))
        .for_each(|(dxi, dyi)| {
            for_each_window(h, w, win, |o, cells| {
                for p in cells {
                    for (d, &g) in dxi[p * c..][..c].iter_mut().zip(&dyi[o * c..][..c]) {
                        *d += g * inv_area;
                    }
                }
            });
        });
    Tensor::new(x_shape, dx)
}
