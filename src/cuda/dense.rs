//! Launchers for `kernels/dense.cu`: the dense layer `y = x W + b` and its
//! backward, mirroring `ops::dense` with fresh outputs. All three products
//! go through one strided matmul kernel; [`Operand`] says how a matrix is
//! read (as stored, or transposed) so no transpose is ever materialised.

use super::launch::Launch;
use super::{launch_1d, DeviceFloat, Gpu, GpuTensor};
use crate::float::Float;
use crate::layers::dense::{dims, forward_dims};

crate::kernel_params! {
    /// `MatmulParams<T>` in dense.cu.
    pub struct MatmulParams {
        a: u64,
        b: u64,
        bias: u64,
        c: u64,
        rows: u64,
        cols: u64,
        inner: u64,
        a_row_stride: i64,
        a_col_stride: i64,
        b_row_stride: i64,
        b_col_stride: i64,
    }
}
crate::kernel_params! {
    /// `ColumnSumParams<T>` in dense.cu.
    pub struct ColumnSumParams {
        x: u64,
        sum: u64,
        rows: u64,
        cols: u64,
    }
}

/// A row-major matrix of `rows x cols` as stored, read either as is or
/// transposed.
#[derive(Clone, Copy)]
struct Operand {
    rows: usize,
    cols: usize,
    transposed: bool,
}

impl Operand {
    /// Shape of the matrix as the product reads it.
    fn dims(self) -> (usize, usize) {
        if self.transposed {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }

    /// (row, column) strides of the matrix as the product reads it.
    fn strides(self) -> (i64, i64) {
        let stored_row = self.cols as i64;
        if self.transposed {
            (1, stored_row)
        } else {
            (stored_row, 1)
        }
    }
}

/// The parameters of `c = bias + op(a) op(b)` for a contiguous `c`.
fn matmul_params(a: Operand, b: Operand, ptrs: [u64; 4]) -> (MatmulParams, usize) {
    let ((rows, inner), (inner_b, cols)) = (a.dims(), b.dims());
    assert_eq!(inner, inner_b, "matmul: inner dimensions differ");
    let ((a_row_stride, a_col_stride), (b_row_stride, b_col_stride)) = (a.strides(), b.strides());
    let [a, b, bias, c] = ptrs;
    let params = MatmulParams {
        a,
        b,
        bias,
        c,
        rows: rows as u64,
        cols: cols as u64,
        inner: inner as u64,
        a_row_stride,
        a_col_stride,
        b_row_stride,
        b_col_stride,
    };
    (params, rows * cols)
}

/// The launch of `c = bias + op(a) op(b)` into a contiguous `c`; `bias` 0
/// adds nothing.
fn matmul<T: Float>((a, a_op): (u64, Operand), (b, b_op): (u64, Operand), bias: u64, c: u64) -> Launch {
    let (params, outputs) = matmul_params(a_op, b_op, [a, b, bias, c]);
    Launch::new::<T, _>("dense", "matmul", launch_1d(outputs), params)
}

fn plain(rows: usize, cols: usize) -> Operand {
    Operand {
        rows,
        cols,
        transposed: false,
    }
}

fn transposed(rows: usize, cols: usize) -> Operand {
    Operand {
        rows,
        cols,
        transposed: true,
    }
}

/// `y = x w + b` for `n` rows of `k` inputs and `o` outputs: `x` holds
/// `n * k` elements of T, `w` `k * o`, `b` `o` (0: no bias), `y` `n * o`.
pub fn forward_plan<T: Float>(x: u64, w: u64, b: u64, y: u64, (n, k, o): (usize, usize, usize)) -> Vec<Launch> {
    vec![matmul::<T>((x, plain(n, k)), (w, plain(k, o)), b, y)]
}

/// `(dx, dw, db)` given `dy`, for the dims of [`forward_plan`]: `dy` holds
/// `n * o` elements of T, `x` and `dx` `n * k`, `w` and `dw` `k * o`, `db` `o`.
pub fn backward_plan<T: Float>(
    dy: u64,
    x: u64,
    w: u64,
    (dx, dw, db): (u64, u64, u64),
    (n, k, o): (usize, usize, usize),
) -> Vec<Launch> {
    let column_sum = ColumnSumParams {
        x: dy,
        sum: db,
        rows: n as u64,
        cols: o as u64,
    };
    vec![
        matmul::<T>((dy, plain(n, o)), (w, transposed(k, o)), 0, dx),
        matmul::<T>((x, transposed(n, k)), (dy, plain(n, o)), 0, dw),
        Launch::new::<T, _>("dense", "column_sum", launch_1d(o), column_sum),
    ]
}

pub fn forward<T: DeviceFloat>(gpu: &Gpu, x: &GpuTensor<T>, w: &GpuTensor<T>, b: &GpuTensor<T>) -> GpuTensor<T> {
    let (n, k, o) = forward_dims(x, w, b);
    let y = gpu.alloc::<T>(&[n, o]);
    let plan = forward_plan::<T>(gpu.ptr(x), gpu.ptr(w), gpu.ptr(b), gpu.ptr(&y), (n, k, o));
    // SAFETY: x, w, b and y have the shapes of the dims checked above.
    unsafe { gpu.run(&plan) };
    y
}

/// Gradients `(dx, dw, db)`.
pub fn backward<T: DeviceFloat>(
    gpu: &Gpu,
    dy: &GpuTensor<T>,
    x: &GpuTensor<T>,
    w: &GpuTensor<T>,
) -> (GpuTensor<T>, GpuTensor<T>, GpuTensor<T>) {
    let (dw, db) = (gpu.alloc::<T>(w.shape()), gpu.alloc::<T>(&[w.shape()[1]]));
    let dx = backward_into(gpu, dy, x, w, [&dw, &db]);
    (dx, dw, db)
}

/// [`backward`] with `dw` and `db` written into `[dw, db]`, which may be
/// views (parameters' slots in the flat gradient buffer: every view of that
/// buffer sees the result); returns `dx`.
pub fn backward_into<T: DeviceFloat>(
    gpu: &Gpu,
    dy: &GpuTensor<T>,
    x: &GpuTensor<T>,
    w: &GpuTensor<T>,
    [dw, db]: [&GpuTensor<T>; 2],
) -> GpuTensor<T> {
    let (n, k, o) = dims(x, w);
    assert_eq!(dy.shape(), [n, o], "dense backward: dy shape");
    assert_eq!(dw.shape(), [k, o], "dense backward: dw shape");
    assert_eq!(db.shape(), [o], "dense backward: db shape");
    let dx = gpu.alloc::<T>(&[n, k]);
    let grads = (gpu.ptr(&dx), gpu.ptr(dw), gpu.ptr(db));
    let plan = backward_plan::<T>(gpu.ptr(dy), gpu.ptr(x), gpu.ptr(w), grads, (n, k, o));
    // SAFETY: dy, x, w and the gradients have the shapes of the dims checked above.
    unsafe { gpu.run(&plan) };
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::launch::assert_plan_matches_ptx;

    #[test]
    fn parameter_structs_match_the_kernels() {
        for suffix in ["f32", "f64"] {
            let bytes = |name: &str| crate::cuda::ptx_param_bytes("dense", &format!("{name}_{suffix}"));
            if let Some(matmul) = bytes("matmul") {
                assert_eq!(matmul, std::mem::size_of::<MatmulParams>());
                assert_eq!(bytes("column_sum"), Some(std::mem::size_of::<ColumnSumParams>()));
            }
        }
    }

    /// Reads `op(m)[r][c]` through the strides the kernel would use.
    fn read(m: &[f64], op: Operand, r: usize, c: usize) -> f64 {
        let (rs, cs) = op.strides();
        m[(r as i64 * rs + c as i64 * cs) as usize]
    }

    /// The host model of the kernel's indexing gives the backward's products.
    #[test]
    fn strides_read_transposes() {
        // A 2x3 matrix stored row-major; its transpose is 3x2.
        let m = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let t = transposed(2, 3);
        assert_eq!(t.dims(), (3, 2));
        assert_eq!(read(&m, t, 2, 1), 6.0);
        assert_eq!(read(&m, t, 1, 0), 2.0);
        let p = plain(2, 3);
        assert_eq!(p.dims(), (2, 3));
        assert_eq!(read(&m, p, 1, 0), 4.0);
    }

    #[test]
    fn params_describe_the_backward_products() {
        let (n, k, o) = (128, 184, 10);
        let (dx, outputs) = matmul_params(plain(n, o), transposed(k, o), [0; 4]);
        assert_eq!((dx.rows, dx.cols, dx.inner, outputs), (128, 184, 10, n * k));
        assert_eq!((dx.b_row_stride, dx.b_col_stride), (1, 10));
        let (dw, outputs) = matmul_params(transposed(n, k), plain(n, o), [0; 4]);
        assert_eq!((dw.rows, dw.cols, dw.inner, outputs), (184, 10, 128, k * o));
        assert_eq!((dw.a_row_stride, dw.a_col_stride), (1, 184));
    }

    #[test]
    #[should_panic(expected = "inner dimensions")]
    fn mismatched_products_are_refused() {
        matmul_params(plain(4, 3), plain(4, 3), [0; 4]);
    }

    #[test]
    fn plans_match_the_kernels() {
        assert_plan_matches_ptx(&forward_plan::<f32>(1, 2, 3, 4, (128, 184, 10)));
        let backward = backward_plan::<f64>(1, 2, 3, (4, 5, 6), (128, 184, 10));
        let kernels: Vec<_> = backward.iter().map(|l| l.kernel.as_str()).collect();
        assert_eq!(kernels, ["matmul_f64", "matmul_f64", "column_sum_f64"]);
        assert_plan_matches_ptx(&backward);
    }
}
