//! Launchers for `kernels/batchnorm.cu`: batch normalisation over every axis
//! but the last, with the signatures and semantics of `ops::batchnorm`
//! (biased variance, statistics in f64, `EPS` and `MOMENTUM` from there).
//!
//! Per-channel sums take two launches: `*_partials` writes one f64 partial
//! per (term, chunk of [`CHUNK_ROWS`] rows, channel) into a workspace, then
//! `finish_sums` adds each channel's partials in chunk order. The chunking
//! depends only on the shape, so results are bit-identical run to run.
//! Each op keeps its partials, per-channel sums and per-channel constants in
//! one f64 workspace, whose length a `*_workspace_len` fn gives; the
//! launchers allocate it per call, and it is freed in stream order when it
//! drops.

use super::launch::{element_ptr, Launch};
use super::{launch_1d, DeviceFloat, Gpu, GpuTensor};
use crate::float::Float;
use crate::layers::batchnorm::{BatchStats, EPS, MOMENTUM};
use cudarc::driver::LaunchConfig;

/// Rows per chunk of the first reduction level: 131,072 rows (128x32x32)
/// give 256 chunks.
const CHUNK_ROWS: usize = 512;
/// Block shape of the `*_partials` kernels (the constants of the same names
/// in batchnorm.cu): 32 channels by 8 row lanes.
const TILE_CHANNELS: usize = 32;
const ROW_LANES: usize = 8;
/// Block size of `finish_sums`: one warp per channel.
const FINISH_THREADS: usize = 256;
/// Sums per channel in one partials pass: the forward reduces one at a time
/// (the sum, then the squared deviations), the backward two at once.
const FORWARD_TERMS: usize = 1;
const BACKWARD_TERMS: usize = 2;
/// Rows of the per-channel coefficients: the forward's affine map `[a; b]`,
/// the backward's gradient coefficients (`GRAD_COEFS` in batchnorm.cu).
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
    /// `SumPartialsParams<T>`.
    pub struct SumPartialsParams {
        x: u64,
        partials: u64,
        g: RowChunks,
    }
}
crate::kernel_params! {
    /// `SqDevPartialsParams<T>`.
    pub struct SqDevPartialsParams {
        x: u64,
        mean: u64,
        partials: u64,
        g: RowChunks,
    }
}
crate::kernel_params! {
    /// `GradPartialsParams<T>`.
    pub struct GradPartialsParams {
        dy: u64,
        x: u64,
        mean: u64,
        var: u64,
        partials: u64,
        g: RowChunks,
        eps: f64,
    }
}
crate::kernel_params! {
    /// `FinishParams<T>`.
    pub struct FinishParams {
        partials: u64,
        sums: u64,
        out: u64,
        chunks: u64,
        c: u64,
        divisor: f64,
    }
}
crate::kernel_params! {
    /// `AffineParams<T, S>`.
    pub struct AffineParams {
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
    /// `ApplyAffineParams<T>`.
    pub struct ApplyAffineParams {
        x: u64,
        coef: u64,
        y: u64,
        n: u64,
        c: u64,
    }
}
crate::kernel_params! {
    /// `GradCoefParams<T>`.
    pub struct GradCoefParams {
        scale: u64,
        mean: u64,
        var: u64,
        sums: u64,
        coef: u64,
        c: u64,
        rows: u64,
        eps: f64,
    }
}
crate::kernel_params! {
    /// `InputGradParams<T>`.
    pub struct InputGradParams {
        dy: u64,
        x: u64,
        coef: u64,
        dx: u64,
        n: u64,
        c: u64,
        train: u64,
    }
}
crate::kernel_params! {
    /// `UpdateRunningParams<T>`.
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

/// How a `[rows, c]` channel reduction is cut up.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Reduction {
    rows: usize,
    c: usize,
    chunks: usize,
}

impl Reduction {
    fn new(rows: usize, c: usize) -> Self {
        assert!(
            rows > 0 && c > 0,
            "batch norm of an empty tensor ({rows} rows, {c} channels)"
        );
        Reduction {
            rows,
            c,
            chunks: rows.div_ceil(CHUNK_ROWS),
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
            chunk_rows: CHUNK_ROWS as u64,
        }
    }

    /// One block per (chunk, tile of 32 channels).
    fn partials_launch(&self) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (self.chunks as u32, self.c.div_ceil(TILE_CHANNELS) as u32, 1),
            block_dim: (TILE_CHANNELS as u32, ROW_LANES as u32, 1),
            shared_mem_bytes: 0,
        }
    }

    /// One warp per channel.
    fn finish_launch(&self) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (self.c.div_ceil(FINISH_THREADS / 32) as u32, 1, 1),
            block_dim: (FINISH_THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Adds each channel's partials of term `term` (in chunk order), divides
    /// by `divisor`, and writes the result as f64 to `sums` and as T to
    /// `out` (`c` elements each).
    fn finish<T: Float>(&self, partials: u64, term: usize, divisor: f64, sums: u64, out: u64) -> Launch {
        let params = FinishParams {
            partials: element_ptr::<f64>(partials, term * self.chunks * self.c),
            sums,
            out,
            chunks: self.chunks as u64,
            c: self.c as u64,
            divisor,
        };
        Launch::new::<T, _>("batchnorm", "finish_sums", self.finish_launch(), params)
    }
}

/// Where an op's f64 workspace keeps what: the `partials` (`terms` x chunks
/// x c), then the per-channel `sums` (2 x c: the forward's mean and
/// variance, the backward's sum dy and sum dy * xhat), then the per-channel
/// `coef`ficients (`coefs` x c).
struct Workspace {
    partials: u64,
    sums: u64,
    coef: u64,
}

impl Workspace {
    fn len(red: &Reduction, terms: usize, coefs: usize) -> usize {
        (terms * red.chunks + 2 + coefs) * red.c
    }

    fn at(base: u64, red: &Reduction, terms: usize) -> Self {
        let sums = element_ptr::<f64>(base, terms * red.chunks * red.c);
        Workspace {
            partials: base,
            sums,
            coef: element_ptr::<f64>(sums, 2 * red.c),
        }
    }
}

/// f64 elements of [`forward_train_plan`]'s workspace for an input of `x_shape`.
pub fn forward_train_workspace_len(x_shape: &[usize]) -> usize {
    Workspace::len(&Reduction::of(x_shape), FORWARD_TERMS, AFFINE_COEFS)
}

/// f64 elements of [`forward_eval_plan`]'s workspace (the affine map) for an
/// input of `x_shape`.
pub fn forward_eval_workspace_len(x_shape: &[usize]) -> usize {
    AFFINE_COEFS * x_shape.last().expect("batch norm of a scalar")
}

/// f64 elements of [`backward_plan`]'s workspace for an input of `x_shape`.
pub fn backward_workspace_len(x_shape: &[usize]) -> usize {
    Workspace::len(&Reduction::of(x_shape), BACKWARD_TERMS, GRAD_COEFS)
}

/// The affine coefficients `coef = [a; b]` (`2 * c` f64s) with
/// `a = scale / sqrt(var + eps)`, `b = bias - mean * a`, from statistics held
/// as f64 (`kernel` = "batch_affine") or as T ("running_affine").
fn affine_launch<T: Float>(kernel: &str, scale: u64, bias: u64, stats: StatsPtrs, coef: u64, c: usize) -> Launch {
    let params = AffineParams {
        scale,
        bias,
        mean: stats.mean,
        var: stats.var,
        coef,
        c: c as u64,
        eps: EPS,
    };
    Launch::new::<T, _>("batchnorm", kernel, launch_1d(c), params)
}

/// `y = x * a + b` over `n` elements with the per-channel `coef = [a; b]`.
fn apply_affine_launch<T: Float>(x: u64, coef: u64, y: u64, n: usize, c: usize) -> Launch {
    let params = ApplyAffineParams {
        x,
        coef,
        y,
        n: n as u64,
        c: c as u64,
    };
    Launch::new::<T, _>("batchnorm", "apply_affine", launch_1d(n), params)
}

/// Train mode: `y` = `x` normalised with its batch statistics, which go to
/// `batch`. `x` and `y` hold the elements of `x_shape` (channels last) of T,
/// `scale` and `bias` `c` of T, `workspace` [`forward_train_workspace_len`] f64s.
pub fn forward_train_plan<T: Float>(
    x: u64,
    x_shape: &[usize],
    scale: u64,
    bias: u64,
    y: u64,
    batch: StatsPtrs,
    workspace: u64,
) -> Vec<Launch> {
    let red = Reduction::of(x_shape);
    let ws = Workspace::at(workspace, &red, FORWARD_TERMS);
    // The batch mean, then the biased variance, in f64.
    let moments = StatsPtrs {
        mean: ws.sums,
        var: element_ptr::<f64>(ws.sums, red.c),
    };
    let sum = SumPartialsParams {
        x,
        partials: ws.partials,
        g: red.row_chunks(),
    };
    let sq_dev = SqDevPartialsParams {
        x,
        mean: moments.mean,
        partials: ws.partials,
        g: red.row_chunks(),
    };
    let rows = red.rows as f64;
    vec![
        Launch::new::<T, _>("batchnorm", "sum_partials", red.partials_launch(), sum),
        red.finish::<T>(ws.partials, 0, rows, moments.mean, batch.mean),
        Launch::new::<T, _>("batchnorm", "sq_dev_partials", red.partials_launch(), sq_dev),
        red.finish::<T>(ws.partials, 0, rows, moments.var, batch.var),
        affine_launch::<T>("batch_affine", scale, bias, moments, ws.coef, red.c),
        apply_affine_launch::<T>(x, ws.coef, y, red.rows * red.c, red.c),
    ]
}

/// Eval mode: `y` = `x` normalised with the `running` statistics. `x` and
/// `y` hold the elements of `x_shape` (channels last) of T, `scale` and
/// `bias` `c` of T, `workspace` [`forward_eval_workspace_len`] f64s.
pub fn forward_eval_plan<T: Float>(
    x: u64,
    x_shape: &[usize],
    scale: u64,
    bias: u64,
    running: StatsPtrs,
    y: u64,
    workspace: u64,
) -> Vec<Launch> {
    let c = *x_shape.last().expect("batch norm of a scalar");
    vec![
        affine_launch::<T>("running_affine", scale, bias, running, workspace, c),
        apply_affine_launch::<T>(x, workspace, y, x_shape.iter().product(), c),
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
/// mode). `dy` and `x` hold the elements of `x_shape` (channels last) of T,
/// `scale` `c` of T, `workspace` [`backward_workspace_len`] f64s.
#[allow(clippy::too_many_arguments)] // one per buffer and flag of the op
pub fn backward_plan<T: Float>(
    dy: u64,
    x: u64,
    x_shape: &[usize],
    scale: u64,
    stats: StatsPtrs,
    train: bool,
    grads: GradPtrs,
    workspace: u64,
) -> Vec<Launch> {
    let red = Reduction::of(x_shape);
    let (rows, c) = (red.rows, red.c);
    let ws = Workspace::at(workspace, &red, BACKWARD_TERMS);
    // sums[0] = sum dy (= dbias), sums[1] = sum dy * xhat (= dscale), in f64.
    let (sum_dy, sum_dy_xhat) = (ws.sums, element_ptr::<f64>(ws.sums, c));
    let partials = GradPartialsParams {
        dy,
        x,
        mean: stats.mean,
        var: stats.var,
        partials: ws.partials,
        g: red.row_chunks(),
        eps: EPS,
    };
    let coefficients = GradCoefParams {
        scale,
        mean: stats.mean,
        var: stats.var,
        sums: ws.sums,
        coef: ws.coef,
        c: c as u64,
        rows: rows as u64,
        eps: EPS,
    };
    let input_grad = InputGradParams {
        dy,
        x,
        coef: ws.coef,
        dx: grads.dx,
        n: (rows * c) as u64,
        c: c as u64,
        train: train as u64,
    };
    vec![
        Launch::new::<T, _>("batchnorm", "grad_partials", red.partials_launch(), partials),
        red.finish::<T>(ws.partials, 0, 1.0, sum_dy, grads.dbias),
        red.finish::<T>(ws.partials, 1, 1.0, sum_dy_xhat, grads.dscale),
        Launch::new::<T, _>("batchnorm", "grad_coefficients", launch_1d(c), coefficients),
        Launch::new::<T, _>("batchnorm", "input_grad", launch_1d(rows * c), input_grad),
    ]
}

/// The channels of `x`, checking `scale` and `bias` as the CPU op does.
fn checked_channels<T>(x: &GpuTensor<T>, scale: &GpuTensor<T>, bias: &GpuTensor<T>) -> usize {
    let c = *x.shape().last().expect("batch norm of a scalar");
    assert_eq!(scale.shape(), [c], "batch norm scale must have shape [{c}]");
    assert_eq!(bias.shape(), [c], "batch norm bias must have shape [{c}]");
    c
}

fn stats_ptrs<T: DeviceFloat>(gpu: &Gpu, stats: &GpuBatchStats<T>) -> StatsPtrs {
    StatsPtrs {
        mean: gpu.ptr(&stats.mean),
        var: gpu.ptr(&stats.var),
    }
}

/// Train mode: normalise with the batch statistics, and return them.
pub fn forward_train<T: DeviceFloat>(
    gpu: &Gpu,
    x: &GpuTensor<T>,
    scale: &GpuTensor<T>,
    bias: &GpuTensor<T>,
) -> (GpuTensor<T>, GpuBatchStats<T>) {
    let c = checked_channels(x, scale, bias);
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
        gpu.ptr(&y),
        stats_ptrs(gpu, &stats),
        gpu.ptr(&workspace),
    );
    // SAFETY: x and y have x's shape, scale, bias and the statistics c
    // elements, the workspace its length.
    unsafe { gpu.run(&plan) };
    (y, stats)
}

/// Eval mode: normalise with the running statistics.
pub fn forward_eval<T: DeviceFloat>(
    gpu: &Gpu,
    x: &GpuTensor<T>,
    scale: &GpuTensor<T>,
    bias: &GpuTensor<T>,
    running_mean: &GpuTensor<T>,
    running_var: &GpuTensor<T>,
) -> GpuTensor<T> {
    let c = checked_channels(x, scale, bias);
    assert_eq!(running_mean.shape(), [c], "running mean shape");
    assert_eq!(running_var.shape(), [c], "running variance shape");
    let workspace = gpu.alloc::<f64>(&[forward_eval_workspace_len(x.shape())]);
    let y = gpu.alloc::<T>(x.shape());
    let running = StatsPtrs {
        mean: gpu.ptr(running_mean),
        var: gpu.ptr(running_var),
    };
    let plan = forward_eval_plan::<T>(
        gpu.ptr(x),
        x.shape(),
        gpu.ptr(scale),
        gpu.ptr(bias),
        running,
        gpu.ptr(&y),
        gpu.ptr(&workspace),
    );
    // SAFETY: x and y have x's shape, scale, bias and the running statistics
    // c elements (checked above), the workspace its length.
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

/// Gradients `(dx, dscale, dbias)`. `stats` are the statistics the forward
/// normalised with: the batch's in train mode, the running ones in eval mode.
pub fn backward<T: DeviceFloat>(
    gpu: &Gpu,
    dy: &GpuTensor<T>,
    x: &GpuTensor<T>,
    scale: &GpuTensor<T>,
    stats: &GpuBatchStats<T>,
    train: bool,
) -> (GpuTensor<T>, GpuTensor<T>, GpuTensor<T>) {
    let (dscale, dbias) = (gpu.alloc::<T>(scale.shape()), gpu.alloc::<T>(scale.shape()));
    let dx = backward_into(gpu, dy, x, scale, stats, train, [&dscale, &dbias]);
    (dx, dscale, dbias)
}

/// [`backward`] with `dscale` and `dbias` written into `[dscale, dbias]`,
/// which may be views (parameters' slots in the flat gradient buffer: every
/// view of that buffer sees the result); returns `dx`.
pub fn backward_into<T: DeviceFloat>(
    gpu: &Gpu,
    dy: &GpuTensor<T>,
    x: &GpuTensor<T>,
    scale: &GpuTensor<T>,
    stats: &GpuBatchStats<T>,
    train: bool,
    [dscale, dbias]: [&GpuTensor<T>; 2],
) -> GpuTensor<T> {
    let c = scale.numel();
    assert_eq!(dscale.shape(), [c], "batch norm backward: dscale shape");
    assert_eq!(dbias.shape(), [c], "batch norm backward: dbias shape");
    assert_eq!(dy.shape(), x.shape(), "batch norm backward: dy and x shapes");
    assert_eq!(x.shape().last(), Some(&c), "batch norm backward: channels");
    assert_eq!(stats.mean.shape(), [c], "batch norm backward: mean shape");
    assert_eq!(stats.var.shape(), [c], "batch norm backward: variance shape");
    let workspace = gpu.alloc::<f64>(&[backward_workspace_len(x.shape())]);
    let dx = gpu.alloc::<T>(x.shape());
    let grads = GradPtrs {
        dx: gpu.ptr(&dx),
        dscale: gpu.ptr(dscale),
        dbias: gpu.ptr(dbias),
    };
    let plan = backward_plan::<T>(
        gpu.ptr(dy),
        gpu.ptr(x),
        x.shape(),
        gpu.ptr(scale),
        stats_ptrs(gpu, stats),
        train,
        grads,
        gpu.ptr(&workspace),
    );
    // SAFETY: dy, x and dx have x's shape, scale, the statistics, dscale and
    // dbias c elements (checked above), the workspace its length.
    unsafe { gpu.run(&plan) };
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_row_once() {
        for (rows, chunks) in [(16, 1), (512, 1), (513, 2), (2048, 4), (28_800, 57), (131_072, 256)] {
            let red = Reduction::new(rows, 8);
            assert_eq!(red.chunks, chunks, "{rows} rows");
            assert!(red.chunks * CHUNK_ROWS >= rows && (red.chunks - 1) * CHUNK_ROWS < rows);
            assert_eq!(red.partials_launch().grid_dim.0 as usize, chunks);
        }
    }

    #[test]
    fn tiles_cover_every_channel() {
        for (c, tiles) in [(8, 1), (32, 1), (33, 2), (184, 6), (256, 8)] {
            let cfg = Reduction::new(131_072, c).partials_launch();
            assert_eq!(cfg.grid_dim.1, tiles, "{c} channels");
            assert_eq!(cfg.block_dim, (32, 8, 1));
        }
    }

    #[test]
    fn finish_has_a_warp_per_channel() {
        for c in [8, 12, 184, 256, 257] {
            let cfg = Reduction::new(2048, c).finish_launch();
            assert!(cfg.grid_dim.0 as usize * cfg.block_dim.0 as usize / 32 >= c);
            assert_eq!(cfg.block_dim.0 % 32, 0);
        }
    }

    #[test]
    fn workspace_sizes_and_offsets() {
        let red = Reduction::new(28_800, 12);
        assert_eq!(backward_workspace_len(&[128, 15, 15, 12]), (2 * 57 + 2 + 5) * 12);
        assert_eq!(forward_train_workspace_len(&[28_800, 12]), (57 + 2 + 2) * 12);
        assert_eq!(forward_eval_workspace_len(&[28_800, 12]), 2 * 12);
        let ws = Workspace::at(0x1000, &red, 2);
        assert_eq!((ws.partials, ws.sums), (0x1000, 0x1000 + 8 * 2 * 57 * 12));
        assert_eq!(ws.coef, ws.sums + 8 * 2 * 12);
        assert_eq!(
            red.row_chunks(),
            RowChunks {
                rows: 28_800,
                c: 12,
                chunk_rows: 512
            }
        );
        assert_eq!(element_ptr::<f64>(0x1000, 3), 0x1018);
    }

    #[test]
    fn plans_match_the_kernels() {
        let shape = [128, 15, 15, 12];
        let stats = StatsPtrs { mean: 1, var: 2 };
        let grads = GradPtrs {
            dx: 3,
            dscale: 4,
            dbias: 5,
        };
        let mut plan = forward_train_plan::<f32>(6, &shape, 7, 8, 9, stats, 10);
        assert_eq!(plan.len(), 6);
        plan.extend(forward_eval_plan::<f32>(6, &shape, 7, 8, stats, 9, 10));
        plan.extend(update_running_plan::<f64>(stats, stats, 0, 12));
        let backward = backward_plan::<f64>(6, 7, &shape, 8, stats, true, grads, 10);
        let kernels: Vec<_> = backward.iter().map(|l| l.kernel.as_str()).collect();
        assert_eq!(
            kernels,
            [
                "grad_partials_f64",
                "finish_sums_f64",
                "finish_sums_f64",
                "grad_coefficients_f64",
                "input_grad_f64"
            ]
        );
        plan.extend(backward);
        crate::cuda::launch::assert_plan_matches_ptx(&plan);
    }
}
