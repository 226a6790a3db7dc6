//! Launchers for `kernels/elementwise.cu`: ReLU forward/backward and add.
//! Each returns a fresh output tensor, like the CPU ops in `ops::elementwise`.

use super::{launch_1d, DeviceFloat, Gpu, GpuTensor};
use cudarc::driver::DeviceRepr;

/// `UnaryParams<T>` in elementwise.cu.
#[repr(C)]
struct UnaryParams {
    x: u64,
    y: u64,
    n: u64,
}
/// `ReluBackwardParams<T>` in elementwise.cu.
#[repr(C)]
struct ReluBackwardParams {
    dy: u64,
    y: u64,
    dx: u64,
    n: u64,
}
/// `BinaryParams<T>` in elementwise.cu.
#[repr(C)]
struct BinaryParams {
    a: u64,
    b: u64,
    y: u64,
    n: u64,
}
// SAFETY: plain #[repr(C)] structs of u64, laid out as their C++ twins.
unsafe impl DeviceRepr for UnaryParams {}
unsafe impl DeviceRepr for ReluBackwardParams {}
unsafe impl DeviceRepr for BinaryParams {}

pub fn relu<T: DeviceFloat>(gpu: &Gpu, x: &GpuTensor<T>) -> GpuTensor<T> {
    let y = gpu.alloc::<T>(x.shape());
    let n = x.numel();
    let params = UnaryParams {
        x: gpu.ptr(x),
        y: gpu.ptr(&y),
        n: n as u64,
    };
    // SAFETY: x and y hold n elements each.
    unsafe { gpu.launch(&gpu.function::<T>("elementwise", "relu_forward"), launch_1d(n), params) };
    y
}

/// `dx = dy` where the forward output `y` was positive, else 0.
pub fn relu_backward<T: DeviceFloat>(gpu: &Gpu, dy: &GpuTensor<T>, y: &GpuTensor<T>) -> GpuTensor<T> {
    assert_eq!(dy.shape(), y.shape(), "relu_backward shapes");
    let dx = gpu.alloc::<T>(dy.shape());
    let n = dy.numel();
    let params = ReluBackwardParams {
        dy: gpu.ptr(dy),
        y: gpu.ptr(y),
        dx: gpu.ptr(&dx),
        n: n as u64,
    };
    // SAFETY: dy, y and dx hold n elements each.
    unsafe { gpu.launch(&gpu.function::<T>("elementwise", "relu_backward"), launch_1d(n), params) };
    dx
}

pub fn add<T: DeviceFloat>(gpu: &Gpu, a: &GpuTensor<T>, b: &GpuTensor<T>) -> GpuTensor<T> {
    assert_eq!(a.shape(), b.shape(), "add of mismatched shapes");
    let y = gpu.alloc::<T>(a.shape());
    let n = a.numel();
    let params = BinaryParams {
        a: gpu.ptr(a),
        b: gpu.ptr(b),
        y: gpu.ptr(&y),
        n: n as u64,
    };
    // SAFETY: a, b and y hold n elements each.
    unsafe { gpu.launch(&gpu.function::<T>("elementwise", "add"), launch_1d(n), params) };
    y
}
