//! Launchers for `kernels/pool.cu`: max-pool and avg-pool forward and
//! backward with the semantics of `ops::pool` (first maximum in window order
//! wins, a NaN wins; averages divide by the full window area).
//!
//! The backward passes gather (each input element adds up the windows that
//! cover it), so they need the window, unlike the CPU's scattering
//! `max_backward`, and use no atomics. The argmax lives in a [`GpuArgmax`]:
//! u32 indices, which a float `GpuTensor` cannot hold.

use super::launch::Launch;
use super::{launch_1d, DeviceBuffer, DeviceFloat, Gpu, GpuTensor};
use crate::float::Float;
use crate::layers::{nhwc, Window};

/// Max-pool's argmax on the GPU: per output element, the index within its
/// image (`(iy * w + ix) * c + ch`) of the input element that won.
pub struct GpuArgmax {
    shape: Vec<usize>,
    data: DeviceBuffer<u32>,
}

impl GpuArgmax {
    /// The shape of the max-pool output it indexes.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The indices, in output order (the CPU op's `Vec<u32>`).
    pub fn download(&self, gpu: &Gpu) -> Vec<u32> {
        gpu.download_buffer(&self.data)
    }
}

crate::kernel_params! {
    /// `PoolGeometry` in pool.cu: a window over an NHWC input, with the
    /// padding before the first row and column.
    pub struct PoolGeometry {
        n: u32,
        h: u32,
        w: u32,
        c: u32,
        oh: u32,
        ow: u32,
        size_h: u32,
        size_w: u32,
        stride_h: u32,
        stride_w: u32,
        pad_h: u32,
        pad_w: u32,
    }
}
crate::kernel_params! {
    /// `PoolParams<T>`.
    pub struct PoolParams {
        src: u64,
        dst: u64,
        g: PoolGeometry,
    }
}
crate::kernel_params! {
    /// `MaxPoolParams<T>`.
    pub struct MaxPoolParams {
        src: u64,
        dst: u64,
        argmax: u64,
        g: PoolGeometry,
    }
}

impl PoolGeometry {
    /// The geometry of `win` over an NHWC input of `x_shape`.
    pub fn new(x_shape: &[usize], win: &Window) -> Self {
        let [n, h, w, c] = nhwc(x_shape);
        let [oh, ow] = win.out_hw([h, w]);
        for d in 0..2 {
            // Flax's padding never reaches the window size; the kernels rely on
            // every window holding a real cell.
            assert!(
                win.stride[d] > 0 && win.pad_lo[d] < win.size[d] && win.pad_hi[d] < win.size[d],
                "pooling window {win:?}: padding must be smaller than the window, stride positive"
            );
        }
        // The argmax is a u32 index within one image.
        assert!(
            h * w * c <= u32::MAX as usize,
            "image of {h}x{w}x{c} too large for u32 indices"
        );
        let u = |v: usize| u32::try_from(v).expect("pooling dimension exceeds u32");
        PoolGeometry {
            n: u(n),
            h: u(h),
            w: u(w),
            c: u(c),
            oh: u(oh),
            ow: u(ow),
            size_h: u(win.size[0]),
            size_w: u(win.size[1]),
            stride_h: u(win.stride[0]),
            stride_w: u(win.stride[1]),
            pad_h: u(win.pad_lo[0]),
            pad_w: u(win.pad_lo[1]),
        }
    }

    /// `[n, h, w, c]`: the shape of x and dx.
    pub fn in_shape(&self) -> [usize; 4] {
        [self.n, self.h, self.w, self.c].map(|v| v as usize)
    }

    /// `[n, oh, ow, c]`: the shape of y, dy and the argmax.
    pub fn out_shape(&self) -> [usize; 4] {
        [self.n, self.oh, self.ow, self.c].map(|v| v as usize)
    }

    fn in_len(&self) -> usize {
        self.in_shape().iter().product()
    }

    fn out_len(&self) -> usize {
        self.out_shape().iter().product()
    }
}

/// Max-pool: `x` holds the input's elements of T ([`PoolGeometry::in_shape`]),
/// `y` the output's ([`PoolGeometry::out_shape`]) and `argmax` as many u32.
pub fn max_forward_plan<T: Float>(x: u64, y: u64, argmax: u64, g: &PoolGeometry) -> Vec<Launch> {
    let params = MaxPoolParams {
        src: x,
        dst: y,
        argmax,
        g: *g,
    };
    vec![Launch::new::<T, _>(
        "pool",
        "max_forward",
        launch_1d(g.out_len()),
        params,
    )]
}

/// Max-pool's backward: `dy` holds the output's elements of T and `argmax`
/// as many u32 (from [`max_forward_plan`] over the same geometry), `dx` the
/// input's elements of T.
pub fn max_backward_plan<T: Float>(dy: u64, argmax: u64, dx: u64, g: &PoolGeometry) -> Vec<Launch> {
    let params = MaxPoolParams {
        src: dy,
        dst: dx,
        argmax,
        g: *g,
    };
    vec![Launch::new::<T, _>(
        "pool",
        "max_backward",
        launch_1d(g.in_len()),
        params,
    )]
}

/// Avg-pool: `x` holds the input's elements of T, `y` the output's.
pub fn avg_forward_plan<T: Float>(x: u64, y: u64, g: &PoolGeometry) -> Vec<Launch> {
    let params = PoolParams { src: x, dst: y, g: *g };
    vec![Launch::new::<T, _>(
        "pool",
        "avg_forward",
        launch_1d(g.out_len()),
        params,
    )]
}

/// Avg-pool's backward: `dy` holds the output's elements of T, `dx` the input's.
pub fn avg_backward_plan<T: Float>(dy: u64, dx: u64, g: &PoolGeometry) -> Vec<Launch> {
    let params = PoolParams {
        src: dy,
        dst: dx,
        g: *g,
    };
    vec![Launch::new::<T, _>(
        "pool",
        "avg_backward",
        launch_1d(g.in_len()),
        params,
    )]
}

/// Max-pool. Also returns, per output element, the index within its image
/// of the input element that won.
pub fn max_forward<T: DeviceFloat>(gpu: &Gpu, x: &GpuTensor<T>, win: &Window) -> (GpuTensor<T>, GpuArgmax) {
    let g = PoolGeometry::new(x.shape(), win);
    let shape = g.out_shape();
    let y = gpu.alloc::<T>(&shape);
    let argmax = GpuArgmax {
        shape: shape.to_vec(),
        data: gpu.alloc_buffer::<u32>(y.numel()),
    };
    let plan = max_forward_plan::<T>(gpu.ptr(x), gpu.ptr(&y), gpu.buffer_ptr(&argmax.data), &g);
    // SAFETY: x holds the input shape's elements; y and argmax the output's.
    unsafe { gpu.run(&plan) };
    (y, argmax)
}

/// Routes each `dy` to the input element that won its window; `win` must be
/// the forward's window.
pub fn max_backward<T: DeviceFloat>(
    gpu: &Gpu,
    dy: &GpuTensor<T>,
    argmax: &GpuArgmax,
    x_shape: &[usize],
    win: &Window,
) -> GpuTensor<T> {
    let g = PoolGeometry::new(x_shape, win);
    assert_eq!(dy.shape(), g.out_shape(), "max-pool backward: dy shape");
    assert_eq!(argmax.shape(), g.out_shape(), "max-pool backward: argmax shape");
    let dx = gpu.alloc::<T>(&g.in_shape());
    let plan = max_backward_plan::<T>(gpu.ptr(dy), gpu.buffer_ptr(&argmax.data), gpu.ptr(&dx), &g);
    // SAFETY: dy and argmax hold the output shape's elements, dx the input's.
    unsafe { gpu.run(&plan) };
    dx
}

pub fn avg_forward<T: DeviceFloat>(gpu: &Gpu, x: &GpuTensor<T>, win: &Window) -> GpuTensor<T> {
    let g = PoolGeometry::new(x.shape(), win);
    let y = gpu.alloc::<T>(&g.out_shape());
    let plan = avg_forward_plan::<T>(gpu.ptr(x), gpu.ptr(&y), &g);
    // SAFETY: x holds the input shape's elements, y the output's.
    unsafe { gpu.run(&plan) };
    y
}

pub fn avg_backward<T: DeviceFloat>(gpu: &Gpu, dy: &GpuTensor<T>, x_shape: &[usize], win: &Window) -> GpuTensor<T> {
    let g = PoolGeometry::new(x_shape, win);
    assert_eq!(dy.shape(), g.out_shape(), "avg-pool backward: dy shape");
    let dx = gpu.alloc::<T>(&g.in_shape());
    let plan = avg_backward_plan::<T>(gpu.ptr(dy), gpu.ptr(&dx), &g);
    // SAFETY: dy holds the output shape's elements (checked above), dx the input's.
    unsafe { gpu.run(&plan) };
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_of_the_networks_pools() {
        let g = PoolGeometry::new(&[128, 32, 32, 96], &Window::valid([3, 3], [2, 2]));
        assert_eq!(g.out_shape(), [128, 15, 15, 96]);
        assert_eq!(g.in_shape(), [128, 32, 32, 96]);
        assert_eq!((g.size_h, g.stride_w, g.pad_h, g.pad_w), (3, 2, 0, 0));
        let g = PoolGeometry::new(&[128, 15, 15, 128], &Window::valid([3, 3], [2, 2]));
        assert_eq!(g.out_shape(), [128, 7, 7, 128]);
        let g = PoolGeometry::new(&[128, 8, 8, 88], &Window::valid([2, 2], [2, 2]));
        assert_eq!(g.out_shape(), [128, 4, 4, 88]);
    }

    #[test]
    fn geometry_keeps_only_the_leading_padding() {
        let win = Window {
            size: [3, 2],
            stride: [2, 1],
            pad_lo: [1, 0],
            pad_hi: [2, 1],
        };
        let g = PoolGeometry::new(&[2, 5, 4, 3], &win);
        assert_eq!(g.out_shape(), [2, 3, 4, 3]);
        assert_eq!((g.pad_h, g.pad_w), (1, 0));
    }

    #[test]
    #[should_panic(expected = "padding must be smaller than the window")]
    fn padding_as_large_as_the_window_is_refused() {
        let win = Window {
            size: [2, 2],
            stride: [1, 1],
            pad_lo: [2, 0],
            pad_hi: [0, 0],
        };
        PoolGeometry::new(&[1, 4, 4, 1], &win);
    }

    #[test]
    fn plans_match_the_kernels() {
        let g = PoolGeometry::new(&[128, 32, 32, 96], &Window::valid([3, 3], [2, 2]));
        let forward = max_forward_plan::<f32>(1, 2, 3, &g);
        assert_eq!(forward[0].kernel, "max_forward_f32");
        let mut plan = forward;
        plan.extend(max_backward_plan::<f32>(1, 2, 3, &g));
        plan.extend(avg_forward_plan::<f64>(1, 2, &g));
        plan.extend(avg_backward_plan::<f64>(1, 2, &g));
        crate::cuda::launch::assert_plan_matches_ptx(&plan);
    }
}
