//! Launchers for `kernels/reduce.cu`: the mean over H and W (the global
//! average pool before each network's head) and its backward, as
//! `ops::reduce`. One thread per output element, sums in f64 in pixel order.

use super::{launch_1d, DeviceFloat, Gpu, GpuTensor};
use crate::ops::nhwc;
use cudarc::driver::DeviceRepr;

/// `MeanHwParams<T>` in reduce.cu.
#[repr(C)]
struct MeanHwParams {
    src: u64,
    dst: u64,
    n: u64,
    hw: u64,
    c: u64,
}
// SAFETY: a plain #[repr(C)] struct of u64s, laid out as its C++ twin.
unsafe impl DeviceRepr for MeanHwParams {}

/// Runs `kernel` from `src` into a fresh tensor of `dst_shape`, for an
/// image batch of `x_shape`.
fn launch<T: DeviceFloat>(
    gpu: &Gpu,
    kernel: &str,
    src: &GpuTensor<T>,
    dst_shape: &[usize],
    x_shape: &[usize],
) -> GpuTensor<T> {
    let [n, h, w, c] = nhwc(x_shape);
    let dst = gpu.alloc::<T>(dst_shape);
    let params = MeanHwParams {
        src: gpu.ptr(src),
        dst: gpu.ptr(&dst),
        n: n as u64,
        hw: (h * w) as u64,
        c: c as u64,
    };
    // SAFETY: the callers check src's shape; x holds n * h * w * c elements, y n * c.
    unsafe { gpu.launch(&gpu.function::<T>("reduce", kernel), launch_1d(dst.numel()), params) };
    dst
}

/// `[n, h, w, c] -> [n, c]`.
pub fn mean_hw<T: DeviceFloat>(gpu: &Gpu, x: &GpuTensor<T>) -> GpuTensor<T> {
    let [n, _, _, c] = nhwc(x.shape());
    launch(gpu, "mean_hw", x, &[n, c], x.shape())
}

/// Spreads `dy` (`[n, c]`) evenly over the `h x w` pixels of each image.
pub fn mean_hw_backward<T: DeviceFloat>(gpu: &Gpu, dy: &GpuTensor<T>, x_shape: &[usize]) -> GpuTensor<T> {
    let [n, _, _, c] = nhwc(x_shape);
    assert_eq!(dy.shape(), [n, c], "mean_hw backward: dy shape");
    launch(gpu, "mean_hw_backward", dy, x_shape, x_shape)
}
