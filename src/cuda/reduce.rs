//! Launchers for `kernels/reduce.cu`: the mean over H and W (the global
//! average pool before each network's head) and its backward, as
//! `ops::reduce`. One thread per output element, sums in f64 in pixel order.

use super::launch::Launch;
use super::{launch_1d, DeviceFloat, Gpu, GpuTensor};
use crate::float::Float;
use crate::layers::nhwc;

crate::kernel_params! {
    /// `MeanHwParams<T>` in reduce.cu.
    pub struct MeanHwParams {
        src: u64,
        dst: u64,
        n: u64,
        hw: u64,
        c: u64,
    }
}

/// Kernel `name` from `src` to `dst` (`outputs` elements), for an image
/// batch of `x_shape`.
fn plan<T: Float>(name: &str, src: u64, dst: u64, x_shape: &[usize], outputs: usize) -> Vec<Launch> {
    let [n, h, w, c] = nhwc(x_shape);
    let params = MeanHwParams {
        src,
        dst,
        n: n as u64,
        hw: (h * w) as u64,
        c: c as u64,
    };
    vec![Launch::new::<T, _>("reduce", name, launch_1d(outputs), params)]
}

/// `y = mean of x over H and W`: `x` holds the `[n, h, w, c]` elements of
/// `x_shape`, `y` `n * c`, both of T.
pub fn mean_hw_plan<T: Float>(x: u64, y: u64, x_shape: &[usize]) -> Vec<Launch> {
    let [n, _, _, c] = nhwc(x_shape);
    plan::<T>("mean_hw", x, y, x_shape, n * c)
}

/// `dx` = `dy` spread evenly over each image's pixels: `dy` holds `n * c`
/// elements of T, `dx` the `[n, h, w, c]` of `x_shape`.
pub fn mean_hw_backward_plan<T: Float>(dy: u64, dx: u64, x_shape: &[usize]) -> Vec<Launch> {
    plan::<T>("mean_hw_backward", dy, dx, x_shape, x_shape.iter().product())
}

/// `[n, h, w, c] -> [n, c]`.
pub fn mean_hw<T: DeviceFloat>(gpu: &Gpu, x: &GpuTensor<T>) -> GpuTensor<T> {
    let [n, _, _, c] = nhwc(x.shape());
    let y = gpu.alloc::<T>(&[n, c]);
    let plan = mean_hw_plan::<T>(gpu.ptr(x), gpu.ptr(&y), x.shape());
    // SAFETY: x holds n * h * w * c elements, y n * c.
    unsafe { gpu.run(&plan) };
    y
}

/// Spreads `dy` (`[n, c]`) evenly over the `h x w` pixels of each image.
pub fn mean_hw_backward<T: DeviceFloat>(gpu: &Gpu, dy: &GpuTensor<T>, x_shape: &[usize]) -> GpuTensor<T> {
    let [n, _, _, c] = nhwc(x_shape);
    assert_eq!(dy.shape(), [n, c], "mean_hw backward: dy shape");
    let dx = gpu.alloc::<T>(x_shape);
    let plan = mean_hw_backward_plan::<T>(gpu.ptr(dy), gpu.ptr(&dx), x_shape);
    // SAFETY: dy holds n * c elements (checked above), dx n * h * w * c.
    unsafe { gpu.run(&plan) };
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::launch::assert_plan_matches_ptx;

    #[test]
    fn plans_match_the_kernels() {
        let forward = mean_hw_plan::<f32>(1, 2, &[2, 4, 4, 8]);
        assert_eq!(forward[0].cfg.grid_dim.0, 1);
        assert_plan_matches_ptx(&forward);
        assert_plan_matches_ptx(&mean_hw_backward_plan::<f64>(1, 2, &[2, 4, 4, 8]));
    }
}
