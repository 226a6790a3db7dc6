//! Launchers for `kernels/batchnorm.cu`: batch normalisation over every axis
//! but the last, with the signatures and semantics of `ops::batchnorm`
//! (biased variance, statistics in f64, `EPS` and `MOMENTUM` from there).
//!
//! Per-channel sums take two launches: `*_partials` writes one f64 partial
//! per (term, chunk of [`CHUNK_ROWS`] rows, channel) into a workspace, then
//! `finish_sums` adds each channel's partials in chunk order. The chunking
//! depends only on the shape, so results are bit-identical run to run.
//! Per-channel constants go through small f64 workspaces; every workspace is
//! allocated per call and freed in stream order when it drops.

use super::{launch_1d, DeviceFloat, Gpu, GpuTensor};
use crate::ops::batchnorm::{EPS, MOMENTUM};
use cudarc::driver::{DeviceRepr, LaunchConfig};

/// Rows per chunk of the first reduction level: 131,072 rows (128x32x32)
/// give 256 chunks.
const CHUNK_ROWS: usize = 512;
/// Block shape of the `*_partials` kernels (the constants of the same names
/// in batchnorm.cu): 32 channels by 8 row lanes.
const TILE_CHANNELS: usize = 32;
const ROW_LANES: usize = 8;
/// Block size of `finish_sums`: one warp per channel.
const FINISH_THREADS: usize = 256;
/// Rows of the backward's gradient-coefficient workspace (`GRAD_COEFS`).
const GRAD_COEFS: usize = 5;

/// The statistics a train-mode forward normalised with: the CPU op's type,
/// holding GPU tensors.
pub type GpuBatchStats<T> = crate::ops::batchnorm::BatchStats<T>;

/// `RowChunks` in batchnorm.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
struct RowChunks {
    rows: u64,
    c: u64,
    chunk_rows: u64,
}

/// `SumPartialsParams<T>`.
#[repr(C)]
struct SumPartialsParams {
    x: u64,
    partials: u64,
    g: RowChunks,
}
/// `SqDevPartialsParams<T>`.
#[repr(C)]
struct SqDevPartialsParams {
    x: u64,
    mean: u64,
    partials: u64,
    g: RowChunks,
}
/// `GradPartialsParams<T>`.
#[repr(C)]
struct GradPartialsParams {
    dy: u64,
    x: u64,
    mean: u64,
    var: u64,
    partials: u64,
    g: RowChunks,
    eps: f64,
}
/// `FinishParams<T>`.
#[repr(C)]
struct FinishParams {
    partials: u64,
    sums: u64,
    out: u64,
    chunks: u64,
    c: u64,
    divisor: f64,
}
/// `AffineParams<T, S>`.
#[repr(C)]
struct AffineParams {
    scale: u64,
    bias: u64,
    mean: u64,
    var: u64,
    coef: u64,
    c: u64,
    eps: f64,
}
/// `ApplyAffineParams<T>`.
#[repr(C)]
struct ApplyAffineParams {
    x: u64,
    coef: u64,
    y: u64,
    n: u64,
    c: u64,
}
/// `GradCoefParams<T>`.
#[repr(C)]
struct GradCoefParams {
    scale: u64,
    mean: u64,
    var: u64,
    sums: u64,
    coef: u64,
    c: u64,
    rows: u64,
    eps: f64,
}
/// `InputGradParams<T>`.
#[repr(C)]
struct InputGradParams {
    dy: u64,
    x: u64,
    coef: u64,
    dx: u64,
    n: u64,
    c: u64,
    train: u64,
}
/// `UpdateRunningParams<T>`.
#[repr(C)]
struct UpdateRunningParams {
    mean: u64,
    var: u64,
    batch_mean: u64,
    batch_var: u64,
    c: u64,
    momentum: f64,
}
// SAFETY: plain #[repr(C)] structs of u64/f64, laid out as their C++ twins.
unsafe impl DeviceRepr for SumPartialsParams {}
unsafe impl DeviceRepr for SqDevPartialsParams {}
unsafe impl DeviceRepr for GradPartialsParams {}
unsafe impl DeviceRepr for FinishParams {}
unsafe impl DeviceRepr for AffineParams {}
unsafe impl DeviceRepr for ApplyAffineParams {}
unsafe impl DeviceRepr for GradCoefParams {}
unsafe impl DeviceRepr for InputGradParams {}
unsafe impl DeviceRepr for UpdateRunningParams {}

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

    /// Elements of the partials workspace for `terms` sums per channel.
    fn partials_len(&self, terms: usize) -> usize {
        terms * self.chunks * self.c
    }

    /// Adds each channel's partials of term `term` (in chunk order), divides
    /// by `divisor`, and writes the result as f64 to `sums` (at `sums_offset`
    /// elements) and as T to `out`.
    fn finish<T: DeviceFloat>(
        &self,
        gpu: &Gpu,
        partials: &GpuTensor<f64>,
        term: usize,
        divisor: f64,
        sums: (&GpuTensor<f64>, usize),
        out: &GpuTensor<T>,
    ) {
        let params = FinishParams {
            partials: element_ptr::<f64>(gpu.ptr(partials), term * self.chunks * self.c),
            sums: element_ptr::<f64>(gpu.ptr(sums.0), sums.1),
            out: gpu.ptr(out),
            chunks: self.chunks as u64,
            c: self.c as u64,
            divisor,
        };
        // SAFETY: partials holds at least (term + 1) * chunks * c f64s,
        // sums at least sums.1 + c f64s, out c elements.
        unsafe {
            gpu.launch(
                &gpu.function::<T>("batchnorm", "finish_sums"),
                self.finish_launch(),
                params,
            )
        };
    }
}

/// The address of element `index` of a device array of E starting at `base`.
fn element_ptr<E>(base: u64, index: usize) -> u64 {
    base + (index * std::mem::size_of::<E>()) as u64
}

/// `(rows, channels)` of `x`, checking `scale` and `bias` as the CPU op does.
fn rows_channels<T>(x: &GpuTensor<T>, scale: &GpuTensor<T>, bias: &GpuTensor<T>) -> (usize, usize) {
    let c = *x.shape().last().expect("batch norm of a scalar");
    assert_eq!(scale.shape(), [c], "batch norm scale must have shape [{c}]");
    assert_eq!(bias.shape(), [c], "batch norm bias must have shape [{c}]");
    (x.numel() / c, c)
}

/// `y = x * a + b` with the per-channel `coef = [a; b]`.
fn apply_affine<T: DeviceFloat>(gpu: &Gpu, x: &GpuTensor<T>, coef: &GpuTensor<f64>, c: usize) -> GpuTensor<T> {
    let y = gpu.alloc::<T>(x.shape());
    let n = x.numel();
    let params = ApplyAffineParams {
        x: gpu.ptr(x),
        coef: gpu.ptr(coef),
        y: gpu.ptr(&y),
        n: n as u64,
        c: c as u64,
    };
    // SAFETY: x and y hold n elements, coef 2 * c.
    unsafe { gpu.launch(&gpu.function::<T>("batchnorm", "apply_affine"), launch_1d(n), params) };
    y
}

/// The affine coefficients `[a; b]` (`a = scale / sqrt(var + eps)`,
/// `b = bias - mean * a`) from statistics held as f64 (`kernel` =
/// "batch_affine") or as T ("running_affine").
fn affine_coefficients<T: DeviceFloat>(
    gpu: &Gpu,
    kernel: &str,
    scale: &GpuTensor<T>,
    bias: &GpuTensor<T>,
    (mean, var): (u64, u64),
    c: usize,
) -> GpuTensor<f64> {
    let coef = gpu.alloc::<f64>(&[2, c]);
    let params = AffineParams {
        scale: gpu.ptr(scale),
        bias: gpu.ptr(bias),
        mean,
        var,
        coef: gpu.ptr(&coef),
        c: c as u64,
        eps: EPS,
    };
    // SAFETY: scale, bias, mean and var hold c elements, coef 2 * c.
    unsafe { gpu.launch(&gpu.function::<T>("batchnorm", kernel), launch_1d(c), params) };
    coef
}

/// Train mode: normalise with the batch statistics, and return them.
pub fn forward_train<T: DeviceFloat>(
    gpu: &Gpu,
    x: &GpuTensor<T>,
    scale: &GpuTensor<T>,
    bias: &GpuTensor<T>,
) -> (GpuTensor<T>, GpuBatchStats<T>) {
    let (rows, c) = rows_channels(x, scale, bias);
    let red = Reduction::new(rows, c);
    let partials = gpu.alloc::<f64>(&[red.partials_len(1)]);
    // moments[0] = mean, moments[1] = biased variance, in f64.
    let moments = gpu.alloc::<f64>(&[2, c]);
    let stats = GpuBatchStats {
        mean: gpu.alloc::<T>(&[c]),
        var: gpu.alloc::<T>(&[c]),
    };

    let params = SumPartialsParams {
        x: gpu.ptr(x),
        partials: gpu.ptr(&partials),
        g: red.row_chunks(),
    };
    // SAFETY: x holds rows * c elements, partials chunks * c.
    unsafe {
        gpu.launch(
            &gpu.function::<T>("batchnorm", "sum_partials"),
            red.partials_launch(),
            params,
        )
    };
    red.finish(gpu, &partials, 0, rows as f64, (&moments, 0), &stats.mean);

    let params = SqDevPartialsParams {
        x: gpu.ptr(x),
        mean: gpu.ptr(&moments),
        partials: gpu.ptr(&partials),
        g: red.row_chunks(),
    };
    // SAFETY: as above; moments starts with the c means.
    unsafe {
        gpu.launch(
            &gpu.function::<T>("batchnorm", "sq_dev_partials"),
            red.partials_launch(),
            params,
        )
    };
    red.finish(gpu, &partials, 0, rows as f64, (&moments, c), &stats.var);

    let mean_var = (gpu.ptr(&moments), element_ptr::<f64>(gpu.ptr(&moments), c));
    let coef = affine_coefficients(gpu, "batch_affine", scale, bias, mean_var, c);
    (apply_affine(gpu, x, &coef, c), stats)
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
    let (_, c) = rows_channels(x, scale, bias);
    assert_eq!(running_mean.shape(), [c], "running mean shape");
    assert_eq!(running_var.shape(), [c], "running variance shape");
    let mean_var = (gpu.ptr(running_mean), gpu.ptr(running_var));
    let coef = affine_coefficients(gpu, "running_affine", scale, bias, mean_var, c);
    apply_affine(gpu, x, &coef, c)
}

/// `running = momentum * running + (1 - momentum) * batch`, for mean and
/// var, in place: one launch, no allocation (capturable in a CUDA graph).
pub fn update_running<T: DeviceFloat>(
    gpu: &Gpu,
    running_mean: &mut GpuTensor<T>,
    running_var: &mut GpuTensor<T>,
    batch: &GpuBatchStats<T>,
) {
    let c = running_mean.numel();
    for t in [&*running_var, &batch.mean, &batch.var] {
        assert_eq!(t.shape(), running_mean.shape(), "running statistics shapes");
    }
    let params = UpdateRunningParams {
        mean: gpu.ptr(running_mean),
        var: gpu.ptr(running_var),
        batch_mean: gpu.ptr(&batch.mean),
        batch_var: gpu.ptr(&batch.var),
        c: c as u64,
        momentum: MOMENTUM,
    };
    // SAFETY: all four hold c elements; the running ones are borrowed mutably.
    unsafe { gpu.launch(&gpu.function::<T>("batchnorm", "update_running"), launch_1d(c), params) };
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
    let c = scale.numel();
    assert_eq!(dy.shape(), x.shape(), "batch norm backward: dy and x shapes");
    assert_eq!(x.shape().last(), Some(&c), "batch norm backward: channels");
    assert_eq!(stats.mean.shape(), [c], "batch norm backward: mean shape");
    assert_eq!(stats.var.shape(), [c], "batch norm backward: variance shape");
    let rows = x.numel() / c;
    let red = Reduction::new(rows, c);
    let partials = gpu.alloc::<f64>(&[red.partials_len(2)]);
    // sums[0] = sum dy (= dbias), sums[1] = sum dy * xhat (= dscale), in f64.
    let sums = gpu.alloc::<f64>(&[2, c]);
    let (dscale, dbias) = (gpu.alloc::<T>(&[c]), gpu.alloc::<T>(&[c]));

    let params = GradPartialsParams {
        dy: gpu.ptr(dy),
        x: gpu.ptr(x),
        mean: gpu.ptr(&stats.mean),
        var: gpu.ptr(&stats.var),
        partials: gpu.ptr(&partials),
        g: red.row_chunks(),
        eps: EPS,
    };
    // SAFETY: dy and x hold rows * c elements, mean and var c, partials 2 * chunks * c.
    unsafe {
        gpu.launch(
            &gpu.function::<T>("batchnorm", "grad_partials"),
            red.partials_launch(),
            params,
        )
    };
    red.finish(gpu, &partials, 0, 1.0, (&sums, 0), &dbias);
    red.finish(gpu, &partials, 1, 1.0, (&sums, c), &dscale);

    let coef = gpu.alloc::<f64>(&[GRAD_COEFS, c]);
    let params = GradCoefParams {
        scale: gpu.ptr(scale),
        mean: gpu.ptr(&stats.mean),
        var: gpu.ptr(&stats.var),
        sums: gpu.ptr(&sums),
        coef: gpu.ptr(&coef),
        c: c as u64,
        rows: rows as u64,
        eps: EPS,
    };
    // SAFETY: scale, mean and var hold c elements, sums 2 * c, coef GRAD_COEFS * c.
    unsafe {
        gpu.launch(
            &gpu.function::<T>("batchnorm", "grad_coefficients"),
            launch_1d(c),
            params,
        )
    };

    let dx = gpu.alloc::<T>(x.shape());
    let n = x.numel();
    let params = InputGradParams {
        dy: gpu.ptr(dy),
        x: gpu.ptr(x),
        coef: gpu.ptr(&coef),
        dx: gpu.ptr(&dx),
        n: n as u64,
        c: c as u64,
        train: train as u64,
    };
    // SAFETY: dy, x and dx hold n elements, coef GRAD_COEFS * c.
    unsafe { gpu.launch(&gpu.function::<T>("batchnorm", "input_grad"), launch_1d(n), params) };
    (dx, dscale, dbias)
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
        assert_eq!(red.partials_len(2), 2 * 57 * 12);
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
}
