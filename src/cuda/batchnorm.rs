//! Launchers for `kernels/batchnorm.cu`: batch normalisation over every axis
//! but the last, with its [`Epilogue`] (residual add, ReLU) fused in, with
//! the signatures and semantics of `ops::batchnorm` (biased variance,
//! statistics in f64, `EPS` and `MOMENTUM` from there).
//!
//! A training step runs two launches forward (`stats`, `apply`), two
//! backward (`grad_sums`, `input_grad`) and `update_running`: five per
//! layer, where the unfused ops took twelve plus the ReLU's and the add's.
//! Each reduction is one launch: its blocks write f64 partials per (term,
//! chunk of rows, channel) into a workspace and the last block to finish
//! adds them in chunk order, so results are bit-identical run to run. The
//! last block is found with the GPU's ticket word ([`Gpu::ticket`]), an
//! integer atomic; no float atomics.
//!
//! The workspace holds the partials, then per-channel f64 coefficients; its
//! length is given by the `*_workspace_len` fns, and the launchers allocate
//! it per call.

use super::launch::{element_ptr, Launch};
use super::{launch_1d, DeviceFloat, Gpu, GpuTensor};
use crate::float::Float;
use crate::layers::batchnorm::{BatchStats, Epilogue, Grads, EPS, MOMENTUM};
use cudarc::driver::LaunchConfig;

/// Threads per reduction block (`REDUCE_THREADS` in batchnorm.cu): a tile of
/// channels by row lanes.
const REDUCE_THREADS: usize = 256;
/// Channels per reduction block at most: a warp reads 32 consecutive
/// channels of one row. Fewer channels take a narrower tile and more row
/// lanes, so no thread idles at 16 channels.
const MAX_TILE_CHANNELS: usize = 32;
/// Blocks a reduction aims for (chunks x tiles): a few per SM of an H200
/// (132 SMs), so the memory system has loads in flight; fixed, so the
/// chunking (and hence the bits) depends on the shape alone.
const TARGET_BLOCKS: usize = 512;
/// Terms each reduction sums per channel: (sum d, sum d^2) forward,
/// (sum g, sum g * xhat) backward.
const TERMS: usize = 2;
/// Rows of the per-channel coefficients: the affine map `[a; b]`, and the
/// input gradient's (`GRAD_COEFS` in batchnorm.cu).
const AFFINE_COEFS: usize = 2;
const GRAD_COEFS: usize = 5;

/// The statistics a train-mode forward normalised with: the CPU op's type,
/// holding GPU tensors.
pub type GpuBatchStats<T> = BatchStats<T>;

/// Device addresses of per-channel statistics: `c` elements of T each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatsPtrs {
    pub mean: u64,
    pub var: u64,
}

/// Device addresses of the backward's gradients, of T: `dx` as many
/// elements as x, `dscale` and `dbias` `c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GradPtrs {
    pub dx: u64,
    pub dscale: u64,
    pub dbias: u64,
}

crate::kernel_params! {
    /// `RowChunks` in batchnorm.cu.
    pub struct RowChunks {
        rows: u64,
        c: u64,
        chunk_rows: u64,
    }
}

crate::kernel_params! {
    /// `StatsParams` in batchnorm.cu.
    pub struct StatsParams {
        x: u64,
        scale: u64,
        bias: u64,
        partials: u64,
        ticket: u64,
        mean: u64,
        var: u64,
        coef: u64,
        g: RowChunks,
        eps: f64,
    }
}

crate::kernel_params! {
    /// `RunningCoefParams` in batchnorm.cu.
    pub struct RunningCoefParams {
        scale: u64,
        bias: u64,
        mean: u64,
        var: u64,
        coef: u64,
        c: u64,
        eps: f64,
    }
}

crate::kernel_params! {
    /// `ApplyParams` in batchnorm.cu.
    pub struct ApplyParams {
        x: u64,
        residual: u64,
        coef: u64,
        y: u64,
        n: u64,
        c: u64,
        relu: u64,
    }
}

crate::kernel_params! {
    /// `GradSumsParams` in batchnorm.cu.
    pub struct GradSumsParams {
        dy: u64,
        x: u64,
        y: u64,
        scale: u64,
        mean: u64,
        var: u64,
        partials: u64,
        ticket: u64,
        dscale: u64,
        dbias: u64,
        coef: u64,
        g: RowChunks,
        eps: f64,
    }
}

crate::kernel_params! {
    /// `InputGradParams` in batchnorm.cu.
    pub struct InputGradParams {
        dy: u64,
        x: u64,
        y: u64,
        coef: u64,
        dx: u64,
        dresidual: u64,
        n: u64,
        c: u64,
        train: u64,
    }
}

crate::kernel_params! {
    /// `UpdateRunningParams` in batchnorm.cu.
    pub struct UpdateRunningParams {
        mean: u64,
        var: u64,
        batch_mean: u64,
        batch_var: u64,
        halted: u64,
        c: u64,
        momentum: f64,
    }
}

/// How a `[rows, c]` channel reduction is cut up: blocks of `tile` channels
/// by `REDUCE_THREADS / tile` row lanes, over `chunks` chunks of
/// `chunk_rows` rows.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Reduction {
    rows: usize,
    c: usize,
    tile: usize,
    chunks: usize,
    chunk_rows: usize,
}

impl Reduction {
    fn new(rows: usize, c: usize) -> Self {
        assert!(
            rows > 0 && c > 0,
            "batch norm of an empty tensor ({rows} rows, {c} channels)"
        );
        assert!(
            rows * c < 1 << 32,
            "batch norm of {rows} x {c} elements: the kernels index below 2^32"
        );
        // A power of two, so a block is whole warps.
        let tile = c.next_power_of_two().min(MAX_TILE_CHANNELS);
        let lanes = REDUCE_THREADS / tile;
        let wanted = (TARGET_BLOCKS / c.div_ceil(tile)).clamp(1, rows.div_ceil(lanes));
        let chunk_rows = rows.div_ceil(wanted);
        Reduction {
            rows,
            c,
            tile,
            chunks: rows.div_ceil(chunk_rows),
            chunk_rows,
        }
    }

    /// The reduction over every axis of `x_shape` but the last.
    fn of(x_shape: &[usize]) -> Self {
        let (&c, lead) = x_shape.split_last().expect("batch norm of a scalar");
        Self::new(lead.iter().product(), c)
    }

    fn row_chunks(&self) -> RowChunks {
        RowChunks {
            rows: self.rows as u64,
            c: self.c as u64,
            chunk_rows: self.chunk_rows as u64,
        }
    }

    /// One block per (chunk, tile of channels).
    fn launch(&self) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (self.chunks as u32, self.c.div_ceil(self.tile) as u32, 1),
            block_dim: (self.tile as u32, (REDUCE_THREADS / self.tile) as u32, 1),
            shared_mem_bytes: 0,
        }
    }

    /// f64 elements of a workspace of the partials then `coefs` rows of
    /// per-channel coefficients.
    fn workspace_len(&self, coefs: usize) -> usize {
        (TERMS * self.chunks + coefs) * self.c
    }

    /// The coefficients' address in a workspace at `base`.
    fn coef(&self, base: u64) -> u64 {
        element_ptr::<f64>(base, TERMS * self.chunks * self.c)
    }
}

/// f64 elements of [`forward_train_plan`]'s workspace for an input of `x_shape`.
pub fn forward_train_workspace_len(x_shape: &[usize]) -> usize {
    Reduction::of(x_shape).workspace_len(AFFINE_COEFS)
}

/// f64 elements of [`forward_eval_plan`]'s workspace (the affine map) for an
/// input of `x_shape`.
pub fn forward_eval_workspace_len(x_shape: &[usize]) -> usize {
    AFFINE_COEFS * x_shape.last().expect("batch norm of a scalar")
}

/// f64 elements of [`backward_plan`]'s workspace for an input of `x_shape`.
pub fn backward_workspace_len(x_shape: &[usize]) -> usize {
    Reduction::of(x_shape).workspace_len(GRAD_COEFS)
}

/// `y = relu((T)(x * a + b) + residual)` over `n` elements with the
/// per-channel `coef = [a; b]`.
fn apply_launch<T: Float>(x: u64, coef: u64, tail: Epilogue<u64>, y: u64, n: usize, c: usize) -> Launch {
    let params = ApplyParams {
        x,
        residual: tail.residual.unwrap_or(0),
        coef,
        y,
        n: n as u64,
        c: c as u64,
        relu: tail.relu.into(),
    };
    Launch::new::<T, _>("batchnorm", "apply", launch_1d(n), params)
}

/// Train mode: `y` = `x` normalised with its batch statistics, which go to
/// `batch`, then `tail` (the residual given by its address). `x`, `y` and a
/// residual hold the elements of `x_shape` (channels last) of T, `scale` and
/// `bias` `c` of T, `workspace` [`forward_train_workspace_len`] f64s;
/// `ticket` is a u32 that is 0 ([`Gpu::ticket`]).
#[allow(clippy::too_many_arguments)] // one per buffer of the op
pub fn forward_train_plan<T: Float>(
    x: u64,
    x_shape: &[usize],
    scale: u64,
    bias: u64,
    tail: Epilogue<u64>,
    y: u64,
    batch: StatsPtrs,
    workspace: u64,
    ticket: u64,
) -> Vec<Launch> {
    let red = Reduction::of(x_shape);
    let coef = red.coef(workspace);
    let stats = StatsParams {
        x,
        scale,
        bias,
        partials: workspace,
        ticket,
        mean: batch.mean,
        var: batch.var,
        coef,
        g: red.row_chunks(),
        eps: EPS,
    };
    vec![
        Launch::new::<T, _>("batchnorm", "stats", red.launch(), stats),
        apply_launch::<T>(x, coef, tail, y, red.rows * red.c, red.c),
    ]
}

/// Eval mode: `y` = `x` normalised with the `running` statistics, then
/// `tail`. Buffers as for [`forward_train_plan`], `workspace`
/// [`forward_eval_workspace_len`] f64s.
#[allow(clippy::too_many_arguments)] // one per buffer of the op
pub fn forward_eval_plan<T: Float>(
    x: u64,
    x_shape: &[usize],
    scale: u64,
    bias: u64,
    running: StatsPtrs,
    tail: Epilogue<u64>,
    y: u64,
    workspace: u64,
) -> Vec<Launch> {
    let c = *x_shape.last().expect("batch norm of a scalar");
    let n: usize = x_shape.iter().product();
    assert!(n < 1 << 32, "batch norm of {n} elements: the kernels index below 2^32");
    let coefficients = RunningCoefParams {
        scale,
        bias,
        mean: running.mean,
        var: running.var,
        coef: workspace,
        c: c as u64,
        eps: EPS,
    };
    vec![
        Launch::new::<T, _>("batchnorm", "running_coefficients", launch_1d(c), coefficients),
        apply_launch::<T>(x, workspace, tail, y, n, c),
    ]
}

/// `running = momentum * running + (1 - momentum) * batch`, for mean and
/// var, in place: `c` elements of T each.
pub fn update_running_plan<T: Float>(running: StatsPtrs, batch: StatsPtrs, halted: u64, c: usize) -> Vec<Launch> {
    let params = UpdateRunningParams {
        mean: running.mean,
        var: running.var,
        batch_mean: batch.mean,
        batch_var: batch.var,
        halted,
        c: c as u64,
        momentum: MOMENTUM,
    };
    vec![Launch::new::<T, _>("batchnorm", "update_running", launch_1d(c), params)]
}

/// The gradients given `dy`; `stats` are the statistics the forward
/// normalised with (the batch's in train mode, the running ones in eval
/// mode), `y` the forward's output (read only when `tail.relu`), and
/// `tail.residual` where the residual's gradient goes, if the forward added
/// one. `dy`, `x`, `y` and the gradients of x's shape hold the elements of
/// `x_shape` (channels last) of T, `scale` `c` of T, `workspace`
/// [`backward_workspace_len`] f64s; `ticket` as for [`forward_train_plan`].
#[allow(clippy::too_many_arguments)] // one per buffer and flag of the op
pub fn backward_plan<T: Float>(
    dy: u64,
    x: u64,
    y: u64,
    x_shape: &[usize],
    scale: u64,
    stats: StatsPtrs,
    train: bool,
    tail: Epilogue<u64>,
    grads: GradPtrs,
    workspace: u64,
    ticket: u64,
) -> Vec<Launch> {
    let red = Reduction::of(x_shape);
    let coef = red.coef(workspace);
    // Null: no ReLU to mask the gradient with.
    let mask = if tail.relu { y } else { 0 };
    let sums = GradSumsParams {
        dy,
        x,
        y: mask,
        scale,
        mean: stats.mean,
        var: stats.var,
        partials: workspace,
        ticket,
        dscale: grads.dscale,
        dbias: grads.dbias,
        coef,
        g: red.row_chunks(),
        eps: EPS,
    };
    let n = red.rows * red.c;
    let input_grad = InputGradParams {
        dy,
        x,
        y: mask,
        coef,
        dx: grads.dx,
        dresidual: tail.residual.unwrap_or(0),
        n: n as u64,
        c: red.c as u64,
        train: train.into(),
    };
    vec![
        Launch::new::<T, _>("batchnorm", "grad_sums", red.launch(), sums),
        Launch::new::<T, _>("batchnorm", "input_grad", launch_1d(n), input_grad),
    ]
}

/// The channels of `x`, checking `scale`, `bias` and a residual as the CPU
/// op does.
fn checked_channels<T>(
    x: &GpuTensor<T>,
    scale: &GpuTensor<T>,
    bias: &GpuTensor<T>,
    tail: Epilogue<&GpuTensor<T>>,
) -> usize {
    let c = *x.shape().last().expect("batch norm of a scalar");
    assert_eq!(scale.shape(), [c], "batch norm scale must have shape [{c}]");
    assert_eq!(bias.shape(), [c], "batch norm bias must have shape [{c}]");
    if let Some(r) = tail.residual {
        assert_eq!(r.shape(), x.shape(), "batch norm residual must have x's shape");
    }
    c
}

fn stats_ptrs<T: DeviceFloat>(gpu: &Gpu, stats: &GpuBatchStats<T>) -> StatsPtrs {
    StatsPtrs {
        mean: gpu.ptr(&stats.mean),
        var: gpu.ptr(&stats.var),
    }
}

fn tail_ptrs<T: DeviceFloat>(gpu: &Gpu, tail: Epilogue<&GpuTensor<T>>) -> Epilogue<u64> {
    Epilogue {
        residual: tail.residual.map(|r| gpu.ptr(r)),
        relu: tail.relu,
    }
}

/// Train mode: normalise with the batch statistics, then `tail`; also
/// returns the statistics.
pub fn forward_train<T: DeviceFloat>(
    gpu: &Gpu,
    x: &GpuTensor<T>,
    scale: &GpuTensor<T>,
    bias: &GpuTensor<T>,
    tail: Epilogue<&GpuTensor<T>>,
) -> (GpuTensor<T>, GpuBatchStats<T>) {
    let c = checked_channels(x, scale, bias, tail);
    let workspace = gpu.alloc::<f64>(&[forward_train_workspace_len(x.shape())]);
    let y = gpu.alloc::<T>(x.shape());
    let stats = GpuBatchStats {
        mean: gpu.alloc::<T>(&[c]),
        var: gpu.alloc::<T>(&[c]),
    };
    let plan = forward_train_plan::<T>(
        gpu.ptr(x),
        x.shape(),
        gpu.ptr(scale),
        gpu.ptr(bias),
        tail_ptrs(gpu, tail),
        gpu.ptr(&y),
        stats_ptrs(gpu, &stats),
        gpu.ptr(&workspace),
        gpu.ticket(),
    );
    // SAFETY: x, y and a residual have x's shape, scale, bias and the
    // statistics c elements (checked above), the workspace its length.
    unsafe { gpu.run(&plan) };
    (y, stats)
}

/// Eval mode: normalise with the running statistics, then `tail`.
pub fn forward_eval<T: DeviceFloat>(
    gpu: &Gpu,
    x: &GpuTensor<T>,
    scale: &GpuTensor<T>,
    bias: &GpuTensor<T>,
    running: &GpuBatchStats<T>,
    tail: Epilogue<&GpuTensor<T>>,
) -> GpuTensor<T> {
    let c = checked_channels(x, scale, bias, tail);
    assert_eq!(running.mean.shape(), [c], "running mean shape");
    assert_eq!(running.var.shape(), [c], "running variance shape");
    let workspace = gpu.alloc::<f64>(&[forward_eval_workspace_len(x.shape())]);
    let y = gpu.alloc::<T>(x.shape());
    let plan = forward_eval_plan::<T>(
        gpu.ptr(x),
        x.shape(),
        gpu.ptr(scale),
        gpu.ptr(bias),
        stats_ptrs(gpu, running),
        tail_ptrs(gpu, tail),
        gpu.ptr(&y),
        gpu.ptr(&workspace),
    );
    // SAFETY: x, y and a residual have x's shape, scale, bias and the
    // running statistics c elements (checked above), the workspace its length.
    unsafe { gpu.run(&plan) };
    y
}

/// `running = momentum * running + (1 - momentum) * batch`, for mean and
/// var, in place: one launch, no allocation (capturable in a CUDA graph).
/// Changes nothing when the u64 at `halted` is nonzero (the epoch's
/// `first_bad_step`, see `cuda::loss::DeviceTotals`); 0 never halts.
pub fn update_running<T: DeviceFloat>(
    gpu: &Gpu,
    running_mean: &mut GpuTensor<T>,
    running_var: &mut GpuTensor<T>,
    batch: &GpuBatchStats<T>,
    halted: u64,
) {
    for t in [&*running_var, &batch.mean, &batch.var] {
        assert_eq!(t.shape(), running_mean.shape(), "running statistics shapes");
    }
    let running = StatsPtrs {
        mean: gpu.ptr_mut(running_mean),
        var: gpu.ptr_mut(running_var),
    };
    let plan = update_running_plan::<T>(running, stats_ptrs(gpu, batch), halted, running_mean.numel());
    // SAFETY: all four hold c elements; the running ones are borrowed mutably.
    unsafe { gpu.run(&plan) };
}

/// The gradients given `dy`, as `ops::batchnorm::backward`; `dscale` and
/// `dbias` are written into `slots` when given (views of the flat gradient
/// buffer: every view of it sees the result), else into new tensors.
#[allow(clippy::too_many_arguments)] // the CPU op's arguments, and the slots
pub fn backward<T: DeviceFloat>(
    gpu: &Gpu,
    dy: &GpuTensor<T>,
    x: &GpuTensor<T>,
    y: &GpuTensor<T>,
    scale: &GpuTensor<T>,
    stats: &GpuBatchStats<T>,
    train: bool,
    tail: Epilogue<()>,
    slots: Option<[&GpuTensor<T>; 2]>,
) -> Grads<T> {
    let c = scale.numel();
    for (t, what) in [(dy, "dy"), (y, "y")] {
        assert_eq!(t.shape(), x.shape(), "batch norm backward: {what} and x shapes");
    }
    assert_eq!(x.shape().last(), Some(&c), "batch norm backward: channels");
    assert_eq!(stats.mean.shape(), [c], "batch norm backward: mean shape");
    assert_eq!(stats.var.shape(), [c], "batch norm backward: variance shape");
    let [dscale, dbias] = match slots {
        Some(slots) => slots.map(Clone::clone),
        None => [gpu.alloc::<T>(&[c]), gpu.alloc::<T>(&[c])],
    };
    assert_eq!(dscale.shape(), [c], "batch norm backward: dscale shape");
    assert_eq!(dbias.shape(), [c], "batch norm backward: dbias shape");
    let workspace = gpu.alloc::<f64>(&[backward_workspace_len(x.shape())]);
    let dx = gpu.alloc::<T>(x.shape());
    let dresidual = tail.residual.map(|()| gpu.alloc::<T>(x.shape()));
    let grads = GradPtrs {
        dx: gpu.ptr(&dx),
        dscale: gpu.ptr(&dscale),
        dbias: gpu.ptr(&dbias),
    };
    let plan = backward_plan::<T>(
        gpu.ptr(dy),
        gpu.ptr(x),
        gpu.ptr(y),
        x.shape(),
        gpu.ptr(scale),
        stats_ptrs(gpu, stats),
        train,
        Epilogue {
            residual: dresidual.as_ref().map(|d| gpu.ptr(d)),
            relu: tail.relu,
        },
        grads,
        gpu.ptr(&workspace),
        gpu.ticket(),
    );
    // SAFETY: dy, x, y, dx and dresidual have x's shape, scale, the
    // statistics, dscale and dbias c elements (checked above), the
    // workspace its length.
    unsafe { gpu.run(&plan) };
    Grads {
        dx,
        dscale,
        dbias,
        dresidual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_row_once() {
        for (rows, c) in [
            (16, 8),
            (512, 40),
            (513, 3),
            (2048, 16),
            (28_800, 12),
            (131_072, 16),
            (8192, 1024),
        ] {
            let red = Reduction::new(rows, c);
            assert!(red.chunks * red.chunk_rows >= rows, "{rows} rows");
            assert!((red.chunks - 1) * red.chunk_rows < rows, "{rows} rows: an empty chunk");
            assert_eq!(red.launch().grid_dim.0 as usize, red.chunks);
            let blocks = red.chunks * c.div_ceil(red.tile);
            assert!(
                blocks <= TARGET_BLOCKS.max(c.div_ceil(red.tile)),
                "{rows} x {c}: {blocks} blocks"
            );
        }
        // ResNet's first layers: 512 chunks of 256 rows, 16 rows per lane.
        let red = Reduction::new(131_072, 16);
        assert_eq!((red.chunks, red.chunk_rows), (512, 256));
    }

    #[test]
    fn tiles_cover_every_channel_with_whole_warps() {
        for (c, tile, tiles) in [
            (3, 4, 1),
            (8, 8, 1),
            (16, 16, 1),
            (24, 32, 1),
            (32, 32, 1),
            (33, 32, 2),
            (184, 32, 6),
        ] {
            let cfg = Reduction::new(131_072, c).launch();
            assert_eq!((cfg.block_dim.0, cfg.grid_dim.1), (tile, tiles), "{c} channels");
            assert_eq!(cfg.block_dim.0 * cfg.block_dim.1, REDUCE_THREADS as u32);
        }
    }

    #[test]
    fn workspace_sizes_and_offsets() {
        let red = Reduction::new(28_800, 12);
        assert_eq!(backward_workspace_len(&[128, 15, 15, 12]), (2 * red.chunks + 5) * 12);
        assert_eq!(forward_train_workspace_len(&[28_800, 12]), (2 * red.chunks + 2) * 12);
        assert_eq!(forward_eval_workspace_len(&[28_800, 12]), 2 * 12);
        assert_eq!(red.coef(0x1000), 0x1000 + 8 * 2 * red.chunks as u64 * 12);
    }

    #[test]
    fn a_training_step_takes_five_launches() {
        let shape = [128, 15, 15, 12];
        let stats = StatsPtrs { mean: 1, var: 2 };
        let grads = GradPtrs {
            dx: 3,
            dscale: 4,
            dbias: 5,
        };
        let tail = Epilogue {
            residual: Some(11),
            relu: true,
        };
        let mut plan = forward_train_plan::<f32>(6, &shape, 7, 8, tail, 9, stats, 10, 12);
        plan.extend(backward_plan::<f32>(
            6, 7, 9, &shape, 8, stats, true, tail, grads, 10, 12,
        ));
        plan.extend(update_running_plan::<f32>(stats, stats, 0, 12));
        let kernels: Vec<_> = plan.iter().map(|l| l.kernel.as_str()).collect();
        assert_eq!(
            kernels,
            [
                "stats_f32",
                "apply_f32",
                "grad_sums_f32",
                "input_grad_f32",
                "update_running_f32"
            ]
        );
        plan.extend(forward_eval_plan::<f64>(6, &shape, 7, 8, stats, Epilogue::NONE, 9, 10));
        crate::cuda::launch::assert_plan_matches_ptx(&plan);
    }
}
