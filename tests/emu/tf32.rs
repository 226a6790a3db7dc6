//! The error bound of a TF32 tensor-core product, shared by the emu_ conv
//! tests and the gpu_ conv tests.
//!
//! A result element of `kernels/conv_tc.cu` is y = sum over i < n of a_i b_i
//! (plus a bias, or plus the other chunks' partials), with every operand
//! rounded to TF32 (`cvt.rna`: relative error at most 2^-11) and the sum
//! accumulated in fp32, each of its at most n + 1 additions rounding by at
//! most 2^-24 of a partial sum no larger than S = sum of |a_i b_i|. So:
//!
//! - against the exact sum of the *rounded* operands (the emulator, which
//!   rounds exactly as the hardware does):   |y - ref| <= (n + 1) 2^-24 S;
//! - against the exact sum of the *unrounded* operands (the GPU against the
//!   CPU in f64):  |y - ref| <= ((1 + 2^-11)^2 - 1 + (n + 1) 2^-24) S.
//!
//! Both are per element, with S computed in f64 by the same op on |a|, |b|.

use cifar_kern::cuda::tensor_core_check::round_tf32;
use cifar_kern::Tensor;

/// The reference of a bilinear op (a conv direction) and each element's
/// allowed error.
pub struct Tf32Reference {
    pub value: Tensor<f64>,
    pub allowed: Vec<f64>,
}

fn map(t: &Tensor<f32>, f: impl Fn(f32) -> f64) -> Tensor<f64> {
    Tensor::new(t.shape(), t.data().iter().map(|&v| f(v)).collect())
}

/// `op(a, b)` in f64 and its bound for a reduction of `n` products; with
/// `rounded`, the reference multiplies the TF32-rounded operands.
pub fn reference(
    op: impl Fn(&Tensor<f64>, &Tensor<f64>) -> Tensor<f64>,
    a: &Tensor<f32>,
    b: &Tensor<f32>,
    n: usize,
    rounded: bool,
) -> Tf32Reference {
    let operand = |t: &Tensor<f32>| map(t, |v| if rounded { round_tf32(v) as f64 } else { v as f64 });
    let magnitude = |t: &Tensor<f32>| map(t, |v| (v as f64).abs());
    let value = op(&operand(a), &operand(b));
    let size = op(&magnitude(a), &magnitude(b));
    let u32_ = 2f64.powi(-24);
    let rounding = if rounded {
        0.0
    } else {
        (1.0 + 2f64.powi(-11)).powi(2) - 1.0
    };
    let unit = rounding + (n + 1) as f64 * u32_;
    let allowed = size
        .data()
        .iter()
        .map(|s| unit * s + f32::MIN_POSITIVE as f64)
        .collect();
    Tf32Reference { value, allowed }
}

impl Tf32Reference {
    /// Adds a term computed exactly in fp32 after the sum (the bias): one
    /// more rounding, within the bound's n + 1 additions.
    pub fn plus_bias(mut self, bias: &Tensor<f32>) -> Self {
        let o = bias.numel();
        let values: Vec<f64> = self
            .value
            .data()
            .iter()
            .enumerate()
            .map(|(i, v)| v + bias.data()[i % o] as f64)
            .collect();
        for (i, a) in self.allowed.iter_mut().enumerate() {
            *a += 2f64.powi(-24) * (bias.data()[i % o] as f64).abs() * 2.0;
        }
        self.value = Tensor::new(self.value.shape(), values);
        self
    }

    /// Every element of `got` within its bound (NaN, an unwritten output,
    /// never is).
    pub fn check(&self, got: &Tensor<f32>, what: &str) -> Result<(), String> {
        if got.shape() != self.value.shape() {
            return Err(format!(
                "{what}: shape {:?}, expected {:?}",
                got.shape(),
                self.value.shape()
            ));
        }
        for (i, ((&g, &want), &allowed)) in got.data().iter().zip(self.value.data()).zip(&self.allowed).enumerate() {
            let err = (g as f64 - want).abs();
            if err.is_nan() || err > allowed {
                return Err(format!(
                    "{what}: element {i} is {g}, reference {want}: error {err:e} exceeds its TF32 bound {allowed:e}"
                ));
            }
        }
        Ok(())
    }
}
