//! Launchers for `kernels/conv.cu` (CUDA cores, exact fp32 and f64) and
//! `kernels/conv_tc.cu` (tensor cores, TF32): 2-D convolution forward and its
//! three gradients, with the signatures of `ops::conv` (NHWC activations,
//! HWIO kernels, any [`Window`]) plus the [`Math`] to compute in.
//!
//! [`Math::Fp32`] (and every f64 conv) runs conv.cu: the forward and the
//! data gradient are one implicit-GEMM launch each, a 64 x 64 result tile
//! per block. [`Math::Tf32`] on f32 runs conv_tc.cu with the [`Variant`]
//! (tile, weight-gradient chunks) that [`super::conv_tiles`] picks for the
//! shape and card; the data gradient of a strided conv is one launch with a
//! GEMM per output phase. The weight and bias gradients reduce over
//! every output pixel in two deterministic levels: fixed chunks of rows write
//! partials to a workspace (of [`weight_workspace_len`] or
//! [`bias_workspace_len`] elements), then a second kernel adds them in chunk
//! order. The chunking is a function of the shapes alone, never of the
//! device, so a result has the same bits on every card. Kernel indices are
//! 32-bit: every tensor and workspace is checked to fit.

use super::conv_shape::index;
pub use super::conv_shape::ConvShape;
use super::conv_tiles::{chunk_rows, Direction, Variant};
use super::launch::Launch;
use super::{launch_1d, DeviceFloat, Gpu, GpuTensor};
use crate::float::Float;
use crate::layers::{Math, Window};
use cudarc::driver::LaunchConfig;

/// `GEMM_TILE`, `GEMM_BK` and `GEMM_THREADS` in conv.cu.
const GEMM_TILE: usize = 64;
const GEMM_BK: usize = 16;
const GEMM_THREADS: u32 = 256;
/// `BIAS_CHANNELS` x `BIAS_LANES` threads per bias-gradient block.
const BIAS_CHANNELS: usize = 32;
const BIAS_LANES: usize = 8;
/// Rows of dy per bias-gradient partial sum.
const BIAS_CHUNK_ROWS: usize = 1024;
/// The weight gradient splits its rows into enough chunks for about this
/// many blocks, so small kernels still fill the GPU...
const WEIGHT_TARGET_BLOCKS: usize = 512;
/// ...but no chunk is much shorter than this, so partials stay few.
const WEIGHT_MIN_CHUNK_ROWS: usize = 256;

crate::kernel_params! {
    /// `ForwardParams<T>` in conv_params.cuh (conv.cu and conv_tc.cu).
    pub struct ForwardParams {
        x: u64,
        w: u64,
        /// 0: no bias.
        bias: u64,
        y: u64,
        s: ConvShape,
    }
}
crate::kernel_params! {
    /// `BackwardDataParams<T>` in conv_params.cuh.
    pub struct BackwardDataParams {
        dy: u64,
        w: u64,
        dx: u64,
        s: ConvShape,
    }
}
crate::kernel_params! {
    /// `WeightPartialParams<T>` in conv_params.cuh.
    pub struct WeightPartialParams {
        dy: u64,
        x: u64,
        partials: u64,
        chunk_rows: i32,
        s: ConvShape,
    }
}
impl WeightPartialParams {
    /// Chunk z of `chunk_rows` rows writes the partial result z.
    fn new(dy: u64, x: u64, partials: u64, chunk_rows: usize, s: &ConvShape) -> Self {
        WeightPartialParams {
            dy,
            x,
            partials,
            chunk_rows: chunk_rows as i32,
            s: *s,
        }
    }
}
crate::kernel_params! {
    /// `BiasPartialParams<T>` in conv.cu.
    pub struct BiasPartialParams {
        dy: u64,
        partials: u64,
        rows: i32,
        channels: i32,
        chunk_rows: i32,
    }
}
crate::kernel_params! {
    /// `TotalParams<P, T>` in conv.cu.
    pub struct TotalParams {
        partials: u64,
        out: u64,
        count: i32,
        chunks: i32,
    }
}

/// A GEMM kernel's launch: one block per 64 x 64 tile of a `rows x cols`
/// result, `depth` such results (the weight gradient's chunks) along z.
fn gemm_launch(rows: usize, cols: usize, depth: usize) -> LaunchConfig {
    let tiles = |v: usize| u32::try_from(v.div_ceil(GEMM_TILE)).expect("grid too large");
    LaunchConfig {
        grid_dim: (tiles(rows), tiles(cols), u32::try_from(depth).expect("grid too large")),
        block_dim: (GEMM_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Rows of dy per weight-gradient chunk, for `rows` output pixels and a
/// result of `tiles` GEMM tiles: a multiple of GEMM_BK that cuts the rows
/// into about max(1, WEIGHT_TARGET_BLOCKS / tiles) chunks, and into no more
/// chunks than WEIGHT_MIN_CHUNK_ROWS allows.
fn weight_chunk_rows(rows: usize, tiles: usize) -> usize {
    let most = rows.div_ceil(WEIGHT_MIN_CHUNK_ROWS);
    let chunks = WEIGHT_TARGET_BLOCKS.div_ceil(tiles).clamp(1, most.max(1));
    rows.div_ceil(chunks).next_multiple_of(GEMM_BK)
}

/// `(chunk_rows, chunks)` of the weight gradient of `s`.
fn weight_chunks(s: &ConvShape) -> (usize, usize) {
    let (rows, k, o) = (s.out_rows(), s.k(), s.o as usize);
    let cfg = gemm_launch(k, o, 1);
    let tiles = (cfg.grid_dim.0 * cfg.grid_dim.1) as usize;
    let chunk_rows = weight_chunk_rows(rows, tiles);
    let chunks = rows.div_ceil(chunk_rows);
    index(chunks * k * o, "the weight-gradient workspace");
    (chunk_rows, chunks)
}

/// Elements of T in [`backward_weight_plan`]'s `partials` workspace: a
/// `k x o` partial result per chunk of rows.
pub fn weight_workspace_len(s: &ConvShape) -> usize {
    let (_, chunks) = weight_chunks(s);
    chunks * s.k() * s.o as usize
}

/// f64 elements in [`backward_bias_plan`]'s `partials` workspace: a partial
/// sum per chunk of rows and channel.
pub fn bias_workspace_len(rows: usize, channels: usize) -> usize {
    rows.div_ceil(BIAS_CHUNK_ROWS) * channels
}

/// `out = sum over chunks of partials[chunk]` (in chunk order) by kernel
/// `name`: `partials` holds `chunks * count` elements, `out` `count` of T.
fn total_launch<T: Float>(name: &str, partials: u64, out: u64, count: usize, chunks: usize) -> Launch {
    let params = TotalParams {
        partials,
        out,
        count: index(count, name),
        chunks: index(chunks, name),
    };
    Launch::new::<T, _>("conv", name, launch_1d(count), params)
}

/// Which kernels compute one convolution on the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKernel {
    /// conv.cu on the CUDA cores: exact fp32 (or f64).
    Simt,
    /// conv_tc.cu on the tensor cores (TF32, f32 only).
    TensorCore(Variant),
}

/// The kernel `math` asks for, for direction `dir` of `s` on `gpu`: the
/// tensor cores for f32 in TF32, else the CUDA cores.
pub fn kernel_for<T: Float>(gpu: &Gpu, math: Math, dir: Direction, s: &ConvShape) -> ConvKernel {
    match math {
        Math::Tf32 if T::NAME == "f32" => ConvKernel::TensorCore(gpu.conv_variant(dir, s)),
        _ => ConvKernel::Simt,
    }
}

/// `THREADS` in conv_tc.cu.
const TC_THREADS: u32 = 128;

/// 16-byte copies (`_v4` kernels) need every operand 16-byte aligned and
/// the channel counts they run along multiples of 4.
fn vec_width(channels_ok: bool, ptrs: &[u64]) -> usize {
    if channels_ok && ptrs.iter().all(|p| p % 16 == 0) {
        4
    } else {
        1
    }
}

fn tc_launch(
    direction: &str,
    v: &Variant,
    vec: usize,
    grid: (usize, usize, usize),
    params: impl crate::cuda::launch::ParamLayout + 'static,
) -> Launch {
    let dim = |n: usize| u32::try_from(n).expect("grid too large");
    let cfg = LaunchConfig {
        grid_dim: (dim(grid.0), dim(grid.1), dim(grid.2)),
        block_dim: (TC_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let name = format!("conv_tc_{direction}_{}_v{vec}", v.tile);
    Launch::new::<f32, _>("conv_tc", &name, cfg, params)
}

/// [`forward_plan`] on the tensor cores in variant `v` (f32 tensors).
pub fn tc_forward_plan(x: u64, w: u64, bias: u64, y: u64, s: &ConvShape, v: &Variant) -> Vec<Launch> {
    let vec = vec_width(s.c % 4 == 0 && s.o % 4 == 0, &[x, w]);
    let (rows, cols, _) = Direction::Forward.gemm(s);
    let grid = (rows.div_ceil(v.tile.rows), cols.div_ceil(v.tile.cols), 1);
    vec![tc_launch(
        "forward",
        v,
        vec,
        grid,
        ForwardParams { x, w, bias, y, s: *s },
    )]
}

/// [`backward_data_plan`] on the tensor cores in variant `v`: one GEMM per
/// output phase (blockIdx.z), the grid sized for the largest.
pub fn tc_backward_data_plan(dy: u64, w: u64, dx: u64, s: &ConvShape, v: &Variant) -> Vec<Launch> {
    let vec = vec_width(s.o % 4 == 0, &[dy, w]);
    let (rows, cols, _) = Direction::BackwardData.gemm(s);
    let phases = (s.stride_h * s.stride_w) as usize;
    let grid = (rows.div_ceil(v.tile.rows), cols.div_ceil(v.tile.cols), phases);
    vec![tc_launch(
        "backward_data",
        v,
        vec,
        grid,
        BackwardDataParams { dy, w, dx, s: *s },
    )]
}

/// `(chunk_rows, chunks)` of the tensor-core weight gradient of `s` in `v`.
fn tc_weight_chunks(s: &ConvShape, v: &Variant) -> (usize, usize) {
    let rows = s.out_rows();
    let chunk = chunk_rows(rows, v.splits);
    let chunks = rows.div_ceil(chunk).max(1);
    index(chunks * s.k() * s.o as usize, "the weight-gradient workspace");
    (chunk, chunks)
}

/// Elements of f32 in [`tc_backward_weight_plan`]'s `partials` workspace.
pub fn tc_weight_workspace_len(s: &ConvShape, v: &Variant) -> usize {
    tc_weight_chunks(s, v).1 * s.k() * s.o as usize
}

/// [`backward_weight_plan`] on the tensor cores in variant `v`: `v.splits`
/// chunks of rows write partials, conv.cu's total kernel adds them.
pub fn tc_backward_weight_plan(dy: u64, x: u64, partials: u64, dw: u64, s: &ConvShape, v: &Variant) -> Vec<Launch> {
    let vec = vec_width(s.c % 4 == 0 && s.o % 4 == 0, &[dy, x]);
    let (k, o) = (s.k(), s.o as usize);
    let (chunk_rows, chunks) = tc_weight_chunks(s, v);
    let grid = (k.div_ceil(v.tile.rows), o.div_ceil(v.tile.cols), chunks);
    let params = WeightPartialParams::new(dy, x, partials, chunk_rows, s);
    vec![
        tc_launch("weight_partial", v, vec, grid, params),
        total_launch::<f32>("conv_weight_total", partials, dw, k * o, chunks),
    ]
}

/// `y = conv(x, w) + bias`, all of T: `x` holds the `[n, h, w, c]` elements
/// of `s`, `w` `[kh, kw, c, o]`, `bias` `o` (0: no bias), `y` the
/// [`ConvShape::y_shape`].
pub fn forward_plan<T: Float>(x: u64, w: u64, bias: u64, y: u64, s: &ConvShape) -> Vec<Launch> {
    let params = ForwardParams { x, w, bias, y, s: *s };
    let cfg = gemm_launch(s.out_rows(), s.o as usize, 1);
    vec![Launch::new::<T, _>("conv", "conv_forward", cfg, params)]
}

/// dL/dx given dL/dy, all of T: `dy` holds the `y_shape` elements of `s`,
/// `w` `[kh, kw, c, o]`, `dx` `[n, h, w, c]`.
pub fn backward_data_plan<T: Float>(dy: u64, w: u64, dx: u64, s: &ConvShape) -> Vec<Launch> {
    let params = BackwardDataParams { dy, w, dx, s: *s };
    let cfg = gemm_launch(s.in_rows(), s.c as usize, 1);
    vec![Launch::new::<T, _>("conv", "conv_backward_data", cfg, params)]
}

/// dL/dw given dL/dy, all of T: `dy` holds the `y_shape` elements of `s`,
/// `x` `[n, h, w, c]`, `partials` [`weight_workspace_len`], `dw`
/// `[kh, kw, c, o]`. Chunks of rows write partials, then a second kernel
/// adds them.
pub fn backward_weight_plan<T: Float>(dy: u64, x: u64, partials: u64, dw: u64, s: &ConvShape) -> Vec<Launch> {
    let (k, o) = (s.k(), s.o as usize);
    let (chunk_rows, chunks) = weight_chunks(s);
    let params = WeightPartialParams::new(dy, x, partials, chunk_rows, s);
    vec![
        Launch::new::<T, _>("conv", "conv_weight_partial", gemm_launch(k, o, chunks), params),
        total_launch::<T>("conv_weight_total", partials, dw, k * o, chunks),
    ]
}

/// dL/db given dL/dy, the sum over its `rows` in f64: `dy` holds `rows *
/// channels` elements of T, `partials` [`bias_workspace_len`] f64s, `db`
/// `channels` elements of T.
pub fn backward_bias_plan<T: Float>(dy: u64, partials: u64, db: u64, rows: usize, channels: usize) -> Vec<Launch> {
    let chunks = rows.div_ceil(BIAS_CHUNK_ROWS);
    index(rows * channels, "dy");
    let params = BiasPartialParams {
        dy,
        partials,
        rows: index(rows, "dy"),
        channels: index(channels, "dy"),
        chunk_rows: BIAS_CHUNK_ROWS as i32,
    };
    let cfg = LaunchConfig {
        grid_dim: (
            u32::try_from(chunks).expect("grid too large"),
            u32::try_from(channels.div_ceil(BIAS_CHANNELS)).expect("grid too large"),
            1,
        ),
        block_dim: ((BIAS_CHANNELS * BIAS_LANES) as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    vec![
        Launch::new::<T, _>("conv", "conv_bias_partial", cfg, params),
        total_launch::<T>("conv_bias_total", partials, db, channels, chunks),
    ]
}

/// Device addresses of one convolution's operands for [`plan`]: 0 where a
/// direction does not use one (`bias` 0: no bias).
#[derive(Clone, Copy, Debug, Default)]
pub struct ConvPtrs {
    pub x: u64,
    pub w: u64,
    pub bias: u64,
    pub y: u64,
    pub dy: u64,
    pub dx: u64,
    pub dw: u64,
    /// The weight gradient's workspace ([`workspace_len`] elements of T).
    pub partials: u64,
}

/// Elements of T the workspace of direction `dir` of `s` needs in `kernel`
/// (only the weight gradient has one).
pub fn workspace_len(dir: Direction, s: &ConvShape, kernel: ConvKernel) -> usize {
    match (dir, kernel) {
        (Direction::BackwardWeight, ConvKernel::Simt) => weight_workspace_len(s),
        (Direction::BackwardWeight, ConvKernel::TensorCore(v)) => tc_weight_workspace_len(s, &v),
        _ => 0,
    }
}

/// The launches of direction `dir` of `s` by `kernel`, over the tensors of T
/// at `p`.
pub fn plan<T: Float>(s: &ConvShape, dir: Direction, kernel: ConvKernel, p: &ConvPtrs) -> Vec<Launch> {
    if dir == Direction::BackwardWeight {
        assert_ne!(p.partials, 0, "the weight gradient needs its workspace");
    }
    match (dir, kernel) {
        (Direction::Forward, ConvKernel::Simt) => forward_plan::<T>(p.x, p.w, p.bias, p.y, s),
        (Direction::Forward, ConvKernel::TensorCore(v)) => tc_forward_plan(p.x, p.w, p.bias, p.y, s, &f32_only::<T>(v)),
        (Direction::BackwardData, ConvKernel::Simt) => backward_data_plan::<T>(p.dy, p.w, p.dx, s),
        (Direction::BackwardData, ConvKernel::TensorCore(v)) => {
            tc_backward_data_plan(p.dy, p.w, p.dx, s, &f32_only::<T>(v))
        }
        (Direction::BackwardWeight, ConvKernel::Simt) => backward_weight_plan::<T>(p.dy, p.x, p.partials, p.dw, s),
        (Direction::BackwardWeight, ConvKernel::TensorCore(v)) => {
            tc_backward_weight_plan(p.dy, p.x, p.partials, p.dw, s, &f32_only::<T>(v))
        }
    }
}

/// The tensor cores take f32 only: TF32 rounds fp32 operands.
fn f32_only<T: Float>(v: Variant) -> Variant {
    assert_eq!(T::NAME, "f32", "the tensor-core conv kernels take f32 tensors");
    v
}

/// Runs direction `dir` of `s` by `kernel` over `p` (whose tensors the
/// caller has checked against `s`), with a workspace of its own.
fn run<T: DeviceFloat>(gpu: &Gpu, s: &ConvShape, dir: Direction, kernel: ConvKernel, mut p: ConvPtrs) {
    let workspace = (dir == Direction::BackwardWeight).then(|| gpu.alloc::<T>(&[workspace_len(dir, s, kernel)]));
    if let Some(w) = &workspace {
        p.partials = gpu.ptr(w);
    }
    // SAFETY: the caller checked every tensor of p against s; the workspace
    // has the plan's length and is freed in stream order after it.
    unsafe { gpu.run(&plan::<T>(s, dir, kernel, &p)) };
}

/// `y = conv(x, w) + b` in `math`, shape `[n, oh, ow, o]`.
pub fn forward<T: DeviceFloat>(
    gpu: &Gpu,
    x: &GpuTensor<T>,
    w: &GpuTensor<T>,
    b: Option<&GpuTensor<T>>,
    win: &Window,
    math: Math,
) -> GpuTensor<T> {
    let s = ConvShape::new(x.shape(), w.shape(), win);
    forward_with(gpu, x, w, b, win, kernel_for::<T>(gpu, math, Direction::Forward, &s))
}

/// [`forward`] by the given kernel (tests and benches force variants).
pub fn forward_with<T: DeviceFloat>(
    gpu: &Gpu,
    x: &GpuTensor<T>,
    w: &GpuTensor<T>,
    b: Option<&GpuTensor<T>>,
    win: &Window,
    kernel: ConvKernel,
) -> GpuTensor<T> {
    let s = ConvShape::new(x.shape(), w.shape(), win);
    if let Some(b) = b {
        assert_eq!(b.shape(), [s.o as usize], "conv bias must have shape [{}]", s.o);
    }
    let y = gpu.alloc::<T>(&s.y_shape());
    let p = ConvPtrs {
        x: gpu.ptr(x),
        w: gpu.ptr(w),
        bias: b.map_or(0, |b| gpu.ptr(b)),
        y: gpu.ptr(&y),
        ..ConvPtrs::default()
    };
    run::<T>(gpu, &s, Direction::Forward, kernel, p);
    y
}

/// dL/dx given dL/dy, in `math`.
pub fn backward_data<T: DeviceFloat>(
    gpu: &Gpu,
    dy: &GpuTensor<T>,
    x_shape: &[usize],
    w: &GpuTensor<T>,
    win: &Window,
    math: Math,
) -> GpuTensor<T> {
    let s = ConvShape::new(x_shape, w.shape(), win);
    let kernel = kernel_for::<T>(gpu, math, Direction::BackwardData, &s);
    backward_data_with(gpu, dy, x_shape, w, win, kernel)
}

/// [`backward_data`] by the given kernel.
pub fn backward_data_with<T: DeviceFloat>(
    gpu: &Gpu,
    dy: &GpuTensor<T>,
    x_shape: &[usize],
    w: &GpuTensor<T>,
    win: &Window,
    kernel: ConvKernel,
) -> GpuTensor<T> {
    let s = ConvShape::new(x_shape, w.shape(), win);
    assert_eq!(dy.shape(), s.y_shape(), "conv backward_data: dy shape");
    let dx = gpu.alloc::<T>(x_shape);
    let p = ConvPtrs {
        dy: gpu.ptr(dy),
        w: gpu.ptr(w),
        dx: gpu.ptr(&dx),
        ..ConvPtrs::default()
    };
    run::<T>(gpu, &s, Direction::BackwardData, kernel, p);
    dx
}

/// dL/dw (HWIO) given dL/dy, in `math`.
pub fn backward_weight<T: DeviceFloat>(
    gpu: &Gpu,
    dy: &GpuTensor<T>,
    x: &GpuTensor<T>,
    w_shape: &[usize],
    win: &Window,
    math: Math,
) -> GpuTensor<T> {
    let dw = gpu.alloc::<T>(w_shape);
    backward_weight_into(gpu, dy, x, &dw, win, math);
    dw
}

/// [`backward_weight`] written into `dw`, which may be a view (a
/// parameter's slot in the flat gradient buffer: every view of that buffer
/// sees the result).
pub fn backward_weight_into<T: DeviceFloat>(
    gpu: &Gpu,
    dy: &GpuTensor<T>,
    x: &GpuTensor<T>,
    dw: &GpuTensor<T>,
    win: &Window,
    math: Math,
) {
    let s = ConvShape::new(x.shape(), dw.shape(), win);
    let kernel = kernel_for::<T>(gpu, math, Direction::BackwardWeight, &s);
    backward_weight_with(gpu, dy, x, dw, win, kernel);
}

/// [`backward_weight_into`] by the given kernel.
pub fn backward_weight_with<T: DeviceFloat>(
    gpu: &Gpu,
    dy: &GpuTensor<T>,
    x: &GpuTensor<T>,
    dw: &GpuTensor<T>,
    win: &Window,
    kernel: ConvKernel,
) {
    let s = ConvShape::new(x.shape(), dw.shape(), win);
    assert_eq!(dy.shape(), s.y_shape(), "conv backward_weight: dy shape");
    let p = ConvPtrs {
        dy: gpu.ptr(dy),
        x: gpu.ptr(x),
        dw: gpu.ptr(dw),
        ..ConvPtrs::default()
    };
    run::<T>(gpu, &s, Direction::BackwardWeight, kernel, p);
}

/// dL/db given dL/dy: the sum over batch and pixels, accumulated in f64.
pub fn backward_bias<T: DeviceFloat>(gpu: &Gpu, dy: &GpuTensor<T>) -> GpuTensor<T> {
    let db = gpu.alloc::<T>(&[*dy.shape().last().expect("conv output is 4-D")]);
    backward_bias_into(gpu, dy, &db);
    db
}

/// [`backward_bias`] written into `db`, which may be a view (as for
/// [`backward_weight_into`]).
pub fn backward_bias_into<T: DeviceFloat>(gpu: &Gpu, dy: &GpuTensor<T>, db: &GpuTensor<T>) {
    let channels = *dy.shape().last().expect("conv output is 4-D");
    assert_eq!(db.shape(), [channels], "conv backward_bias: db shape");
    let rows = dy.numel() / channels;
    let partials = gpu.alloc::<f64>(&[bias_workspace_len(rows, channels)]);
    let plan = backward_bias_plan::<T>(gpu.ptr(dy), gpu.ptr(&partials), gpu.ptr(db), rows, channels);
    // SAFETY: dy holds rows x channels elements, db channels; partials has
    // the workspace's length.
    unsafe { gpu.run(&plan) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_structs_have_their_cuda_sizes() {
        // sizeof of the C++ twins (pointers, then 32-bit fields, padded to 8).
        use std::mem::size_of;
        assert_eq!(size_of::<ConvShape>(), 52);
        assert_eq!(size_of::<ForwardParams>(), 88);
        assert_eq!(size_of::<BackwardDataParams>(), 80);
        assert_eq!(size_of::<WeightPartialParams>(), 80);
        assert_eq!(size_of::<BiasPartialParams>(), 32);
        assert_eq!(size_of::<TotalParams>(), 24);
    }

    #[test]
    fn plans_match_the_kernels() {
        let win = Window::same([3, 3], [2, 2], [16, 16]);
        let s = ConvShape::new(&[128, 16, 16, 32], &[3, 3, 32, 64], &win);
        let weight = backward_weight_plan::<f32>(1, 2, 3, 4, &s);
        let kernels: Vec<_> = weight.iter().map(|l| l.kernel.as_str()).collect();
        assert_eq!(kernels, ["conv_weight_partial_f32", "conv_weight_total_f32"]);
        // The partial kernel fills exactly the workspace.
        let chunks = weight[0].cfg.grid_dim.2 as usize;
        assert_eq!(weight_workspace_len(&s), chunks * s.k() * 64);
        let bias = backward_bias_plan::<f64>(1, 2, 3, s.out_rows(), 64);
        assert_eq!(
            bias_workspace_len(s.out_rows(), 64),
            bias[0].cfg.grid_dim.0 as usize * 64
        );
        let mut plan = forward_plan::<f32>(1, 2, 0, 3, &s);
        plan.extend(backward_data_plan::<f64>(1, 2, 3, &s));
        plan.extend(weight);
        plan.extend(bias);
        crate::cuda::launch::assert_plan_matches_ptx(&plan);
    }

    #[test]
    fn gemm_launch_covers_the_result() {
        let cfg = gemm_launch(128 * 32 * 32, 16, 1);
        assert_eq!(cfg.grid_dim, (2048, 1, 1));
        assert_eq!(gemm_launch(65, 129, 7).grid_dim, (2, 3, 7));
        assert_eq!(cfg.block_dim, (GEMM_THREADS, 1, 1));
    }

    #[test]
    fn weight_chunks_cover_the_rows_in_whole_steps() {
        for rows in [1, 15, 16, 17, 255, 257, 8 * 8 * 128, 15 * 15 * 128, 32 * 32 * 128] {
            for tiles in [1, 3, 9, 40, 600] {
                let chunk = weight_chunk_rows(rows, tiles);
                let chunks = rows.div_ceil(chunk);
                assert_eq!(chunk % GEMM_BK, 0, "rows {rows} tiles {tiles}");
                assert!((chunks - 1) * chunk < rows && chunks * chunk >= rows);
                assert!(chunks <= rows.div_ceil(WEIGHT_MIN_CHUNK_ROWS).max(1));
                assert!(
                    chunks * tiles <= WEIGHT_TARGET_BLOCKS + tiles,
                    "rows {rows} tiles {tiles}"
                );
            }
        }
        // ResNet's first 3x3 conv (K = 144: 3 tiles) at 32x32, batch 128:
        // 171 chunks of 768 rows.
        assert_eq!(weight_chunk_rows(32 * 32 * 128, 3), 768);
        assert_eq!(weight_chunk_rows(10, 1), 16);
    }
}
