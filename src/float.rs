//! The element types the CPU backend computes in.
//!
//! Every CPU op is generic over [`Float`], so the same code runs in `f32`
//! (the trainer's path) and in `f64` (the gradient checks and the fixture
//! tests, which need errors far below float32's resolution).

use num_traits::{Float as NumFloat, FromPrimitive, ToPrimitive};
use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{AddAssign, MulAssign, SubAssign};

/// A real element type: `f32` or `f64`.
pub trait Float:
    NumFloat
    + FromPrimitive
    + ToPrimitive
    + AddAssign
    + SubAssign
    + MulAssign
    + Sum
    + Default
    + Debug
    + Send
    + Sync
    + cudarc::driver::DeviceRepr
    + cudarc::driver::ValidAsZeroBits
    + 'static
{
    /// "f32" / "f64": in logs, and the suffix of a GPU kernel's name.
    const NAME: &'static str;

    /// `c = alpha * a * b + beta * c` for row/column-strided matrices
    /// (`a` is m x k, `b` is k x n, `c` is m x n); strides are in elements.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: &[Self],
        a_strides: (isize, isize),
        b: &[Self],
        b_strides: (isize, isize),
        beta: Self,
        c: &mut [Self],
        c_strides: (isize, isize),
    );

    fn of(v: f64) -> Self {
        Self::from_f64(v).expect("f64 converts to every Float")
    }
    fn f64(self) -> f64 {
        self.to_f64().expect("every Float converts to f64")
    }
}

macro_rules! impl_float {
    ($t:ty, $name:literal, $gemm:path) => {
        impl Float for $t {
            const NAME: &'static str = $name;
            fn gemm(
                m: usize,
                k: usize,
                n: usize,
                a: &[Self],
                (rsa, csa): (isize, isize),
                b: &[Self],
                (rsb, csb): (isize, isize),
                beta: Self,
                c: &mut [Self],
                (rsc, csc): (isize, isize),
            ) {
                // Bounds are the caller's contract; check the last element of
                // each operand so a wrong stride fails loudly, not silently.
                let last = |rows: usize, cols: usize, rs: isize, cs: isize| {
                    if rows == 0 || cols == 0 {
                        0
                    } else {
                        (rows as isize - 1) * rs + (cols as isize - 1) * cs
                    }
                };
                assert!(last(m, k, rsa, csa) < a.len() as isize || m * k == 0);
                assert!(last(k, n, rsb, csb) < b.len() as isize || k * n == 0);
                assert!(last(m, n, rsc, csc) < c.len() as isize || m * n == 0);
                // SAFETY: the asserts above keep every access inside the slices.
                unsafe {
                    $gemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        rsa,
                        csa,
                        b.as_ptr(),
                        rsb,
                        csb,
                        beta,
                        c.as_mut_ptr(),
                        rsc,
                        csc,
                    )
                }
            }
        }
    };
}

impl_float!(f32, "f32", matrixmultiply::sgemm);
impl_float!(f64, "f64", matrixmultiply::dgemm);
