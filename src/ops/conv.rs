//! 2-D convolution, NHWC activations and HWIO kernels, by im2col + GEMM.
//!
//! For a chunk of images, im2col lays every receptive field out as one row of
//! `col` (rows = output pixels, columns = (ky, kx, c), the HWIO kernel's own
//! order), so the convolution is one GEMM `y = col * W` with W viewed as a
//! `(kh*kw*c) x o` matrix. The backward passes are the two other GEMMs:
//! `dcol = dy * W^T` scattered back by col2im, and `dW = col^T * dy`.
//!
//! Parallelism: the batch is cut into chunks of whole images sized to about
//! `CHUNK_ROWS` output pixels; each chunk runs its own im2col and GEMM on one
//! thread (chunks write disjoint outputs). The weight gradient sums one
//! partial per chunk, in chunk order, so results do not depend on the thread
//! count. A 1x1, stride-1, unpadded conv skips im2col: its `col` is `x`.

use super::{channel_sum, nhwc, Window};
use crate::float::Float;
use crate::tensor::Tensor;
use rayon::prelude::*;

const CHUNK_ROWS: usize = 4096;

/// The shapes of one convolution.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    oh: usize,
    ow: usize,
    o: usize,
    win: Window,
}

impl Geometry {
    fn new(x_shape: &[usize], w_shape: &[usize], win: &Window) -> Self {
        let [n, h, w, c] = nhwc(x_shape);
        let &[kh, kw, ci, o] = w_shape else {
            panic!("conv kernel must be HWIO, got {w_shape:?}")
        };
        assert_eq!(ci, c, "conv kernel expects {ci} input channels, input has {c}");
        assert_eq!([kh, kw], win.size, "conv kernel {kh}x{kw} vs window {:?}", win.size);
        let [oh, ow] = win.out_hw([h, w]);
        Geometry {
            n,
            h,
            w,
            c,
            oh,
            ow,
            o,
            win: *win,
        }
    }
    /// Columns of `col`: one receptive field.
    fn k(&self) -> usize {
        self.win.size[0] * self.win.size[1] * self.c
    }
    fn out_pixels(&self) -> usize {
        self.oh * self.ow
    }
    fn images_per_chunk(&self) -> usize {
        (CHUNK_ROWS / self.out_pixels()).max(1)
    }
    /// `col` is `x` itself: 1x1 kernel, stride 1, no padding.
    fn is_pointwise(&self) -> bool {
        self.win == Window::valid([1, 1], [1, 1])
    }
}

/// Fills `col` (rows = output pixels of `x`'s images, cols = g.k()).
fn im2col<T: Float>(g: &Geometry, x: &[T], col: &mut [T]) {
    let images = x.len() / (g.h * g.w * g.c);
    let k = g.k();
    for img in 0..images {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let row = &mut col[((img * g.oh + oy) * g.ow + ox) * k..][..k];
                for ky in 0..g.win.size[0] {
                    let iy = g.win.input_coord(0, oy, ky, g.h);
                    for kx in 0..g.win.size[1] {
                        let dst = &mut row[(ky * g.win.size[1] + kx) * g.c..][..g.c];
                        match (iy, g.win.input_coord(1, ox, kx, g.w)) {
                            (Some(iy), Some(ix)) => {
                                dst.copy_from_slice(&x[((img * g.h + iy) * g.w + ix) * g.c..][..g.c])
                            }
                            _ => dst.fill(T::zero()),
                        }
                    }
                }
            }
        }
    }
}

/// Adds every row of `col` back onto the input pixels it was read from.
fn col2im<T: Float>(g: &Geometry, col: &[T], dx: &mut [T]) {
    let images = dx.len() / (g.h * g.w * g.c);
    let k = g.k();
    for img in 0..images {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let row = &col[((img * g.oh + oy) * g.ow + ox) * k..][..k];
                for ky in 0..g.win.size[0] {
                    let Some(iy) = g.win.input_coord(0, oy, ky, g.h) else {
                        continue;
                    };
                    for kx in 0..g.win.size[1] {
                        let Some(ix) = g.win.input_coord(1, ox, kx, g.w) else {
                            continue;
                        };
                        let src = &row[(ky * g.win.size[1] + kx) * g.c..][..g.c];
                        let dst = &mut dx[((img * g.h + iy) * g.w + ix) * g.c..][..g.c];
                        for (d, &s) in dst.iter_mut().zip(src) {
                            *d += s;
                        }
                    }
                }
            }
        }
    }
}

/// Runs `f(chunk, col, out_chunk)` in parallel for every chunk of images,
/// where `col` is the chunk's im2col matrix (`x`'s own rows for a pointwise
/// conv) and `out_chunk` the chunk's `out_per_chunk` elements of `out`.
fn for_each_chunk<T: Float>(
    g: &Geometry,
    x: &[T],
    out: &mut [T],
    out_per_chunk: usize,
    f: impl Fn(usize, &[T], &mut [T]) + Sync,
) {
    let x_per_chunk = g.images_per_chunk() * g.h * g.w * g.c;
    x.par_chunks(x_per_chunk)
        .zip(out.par_chunks_mut(out_per_chunk))
        .enumerate()
        .for_each(|(chunk, (xc, oc))| {
            if g.is_pointwise() {
                f(chunk, xc, oc)
            } else {
                let rows = xc.len() / (g.h * g.w * g.c) * g.out_pixels();
                let mut col = vec![T::zero(); rows * g.k()];
                im2col(g, xc, &mut col);
                f(chunk, &col, oc)
            }
        });
}

/// `y = conv(x, w) + b`, shape `[n, oh, ow, o]`.
pub fn forward<T: Float>(x: &Tensor<T>, w: &Tensor<T>, b: Option<&Tensor<T>>, win: &Window) -> Tensor<T> {
    let g = Geometry::new(x.shape(), w.shape(), win);
    let mut y = vec![T::zero(); g.n * g.out_pixels() * g.o];
    let (k, o) = (g.k(), g.o);
    let y_per_chunk = g.images_per_chunk() * g.out_pixels() * o;
    for_each_chunk(&g, x.data(), &mut y, y_per_chunk, |_, col, yc| {
        let rows = yc.len() / o;
        T::gemm(
            rows,
            k,
            o,
            col,
            (k as isize, 1),
            w.data(),
            (o as isize, 1),
            T::zero(),
            yc,
            (o as isize, 1),
        );
    });
    if let Some(b) = b {
        assert_eq!(b.shape(), [o], "conv bias must have shape [{o}]");
        for row in y.chunks_mut(o) {
            for (v, &bias) in row.iter_mut().zip(b.data()) {
                *v += bias;
            }
        }
    }
    Tensor::new(&[g.n, g.oh, g.ow, o], y)
}

/// dL/dx given dL/dy.
pub fn backward_data<T: Float>(dy: &Tensor<T>, x_shape: &[usize], w: &Tensor<T>, win: &Window) -> Tensor<T> {
    let g = Geometry::new(x_shape, w.shape(), win);
    let (k, o) = (g.k(), g.o);
    let per_chunk = g.images_per_chunk();
    let x_per_image = g.h * g.w * g.c;
    let dy_per_image = g.out_pixels() * o;
    let mut dx = vec![T::zero(); g.n * x_per_image];
    dx.par_chunks_mut(per_chunk * x_per_image)
        .zip(dy.data().par_chunks(per_chunk * dy_per_image))
        .for_each(|(dxc, dyc)| {
            let rows = dyc.len() / o;
            // W^T: W is k x o row-major, so its transpose has strides (1, o).
            let wt = (1, o as isize);
            // A pointwise conv's dcol is dx itself; otherwise col2im folds it back.
            let mut dcol = (!g.is_pointwise()).then(|| vec![T::zero(); rows * k]);
            let dst = dcol.as_deref_mut().unwrap_or(&mut *dxc);
            T::gemm(
                rows,
                o,
                k,
                dyc,
                (o as isize, 1),
                w.data(),
                wt,
                T::zero(),
                dst,
                (k as isize, 1),
            );
            if let Some(dcol) = dcol {
                col2im(&g, &dcol, dxc);
            }
        });
    Tensor::new(x_shape, dx)
}

/// dL/dw (HWIO) given dL/dy.
pub fn backward_weight<T: Float>(dy: &Tensor<T>, x: &Tensor<T>, w_shape: &[usize], win: &Window) -> Tensor<T> {
    let g = Geometry::new(x.shape(), w_shape, win);
    let (k, o) = (g.k(), g.o);
    let chunks = g.n.div_ceil(g.images_per_chunk());
    let dy_per_chunk = g.images_per_chunk() * g.out_pixels() * o;
    // One k x o partial per chunk, summed below in chunk order.
    let mut partials = vec![T::zero(); chunks * k * o];
    for_each_chunk(&g, x.data(), &mut partials, k * o, |chunk, col, partial| {
        let dyc = &dy.data()[chunk * dy_per_chunk..((chunk + 1) * dy_per_chunk).min(dy.numel())];
        let rows = dyc.len() / o;
        // col^T is k x rows: col's strides swapped.
        T::gemm(
            k,
            rows,
            o,
            col,
            (1, k as isize),
            dyc,
            (o as isize, 1),
            T::zero(),
            partial,
            (o as isize, 1),
        );
    });
    let mut dw = vec![T::zero(); k * o];
    for p in partials.chunks(k * o) {
        for (d, &v) in dw.iter_mut().zip(p) {
            *d += v;
        }
    }
    Tensor::new(w_shape, dw)
}

/// dL/db given dL/dy: the sum over batch and pixels.
pub fn backward_bias<T: Float>(dy: &Tensor<T>) -> Tensor<T> {
    let o = *dy.shape().last().expect("conv output is 4-D");
    Tensor::new(&[o], channel_sum(dy.data(), o))
}
