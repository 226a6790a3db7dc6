//! Launchers for `kernels/elementwise.cu`: ReLU forward/backward and add.
//! Each returns a fresh output tensor, like the CPU ops in `ops::elementwise`;
//! each `*_plan` is its one launch over raw device addresses.

use super::launch::Launch;
use super::{launch_1d, DeviceFloat, Gpu, GpuTensor};
use crate::float::Float;

crate::kernel_params! {
    /// `UnaryParams<T>` in elementwise.cu.
    pub struct UnaryParams {
        x: u64,
        y: u64,
        n: u64,
    }
}
crate::kernel_params! {
    /// `ReluBackwardParams<T>` in elementwise.cu.
    pub struct ReluBackwardParams {
        dy: u64,
        y: u64,
        dx: u64,
        n: u64,
    }
}
crate::kernel_params! {
    /// `BinaryParams<T>` in elementwise.cu.
    pub struct BinaryParams {
        a: u64,
        b: u64,
        y: u64,
        n: u64,
    }
}

/// `y = max(x, 0)`; `x` and `y` hold `n` elements of T.
pub fn relu_plan<T: Float>(x: u64, y: u64, n: usize) -> Vec<Launch> {
    let params = UnaryParams { x, y, n: n as u64 };
    vec![Launch::new::<T, _>("elementwise", "relu_forward", launch_1d(n), params)]
}

/// `dx = dy` where the forward output `y` is positive, else 0; `dy`, `y` and
/// `dx` hold `n` elements of T.
pub fn relu_backward_plan<T: Float>(dy: u64, y: u64, dx: u64, n: usize) -> Vec<Launch> {
    let params = ReluBackwardParams { dy, y, dx, n: n as u64 };
    vec![Launch::new::<T, _>(
        "elementwise",
        "relu_backward",
        launch_1d(n),
        params,
    )]
}

/// `y = a + b`; `a`, `b` and `y` hold `n` elements of T.
pub fn add_plan<T: Float>(a: u64, b: u64, y: u64, n: usize) -> Vec<Launch> {
    let params = BinaryParams { a, b, y, n: n as u64 };
    vec![Launch::new::<T, _>("elementwise", "add", launch_1d(n), params)]
}

pub fn relu<T: DeviceFloat>(gpu: &Gpu, x: &GpuTensor<T>) -> GpuTensor<T> {
    let y = gpu.alloc::<T>(x.shape());
    let plan = relu_plan::<T>(gpu.ptr(x), gpu.ptr(&y), x.numel());
    // SAFETY: x and y hold n elements each.
    unsafe { gpu.run(&plan) };
    y
}

/// `dx = dy` where the forward output `y` was positive, else 0.
pub fn relu_backward<T: DeviceFloat>(gpu: &Gpu, dy: &GpuTensor<T>, y: &GpuTensor<T>) -> GpuTensor<T> {
    assert_eq!(dy.shape(), y.shape(), "relu_backward shapes");
    let dx = gpu.alloc::<T>(dy.shape());
    let plan = relu_backward_plan::<T>(gpu.ptr(dy), gpu.ptr(y), gpu.ptr(&dx), dy.numel());
    // SAFETY: dy, y and dx hold n elements each.
    unsafe { gpu.run(&plan) };
    dx
}

pub fn add<T: DeviceFloat>(gpu: &Gpu, a: &GpuTensor<T>, b: &GpuTensor<T>) -> GpuTensor<T> {
    assert_eq!(a.shape(), b.shape(), "add of mismatched shapes");
    let y = gpu.alloc::<T>(a.shape());
    let plan = add_plan::<T>(gpu.ptr(a), gpu.ptr(b), gpu.ptr(&y), a.numel());
    // SAFETY: a, b and y hold n elements each.
    unsafe { gpu.run(&plan) };
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::launch::assert_plan_matches_ptx;

    #[test]
    fn plans_match_the_kernels() {
        assert_plan_matches_ptx(&relu_plan::<f32>(1, 2, 10));
        assert_plan_matches_ptx(&relu_backward_plan::<f64>(1, 2, 3, 10));
        let add = add_plan::<f64>(1, 2, 3, 10);
        assert_plan_matches_ptx(&add);
        assert_eq!(add[0].kernel, "add_f64");
    }
}
