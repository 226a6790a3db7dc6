//! `cifar-kern bench`: how fast the GPU trains and evaluates the four
//! networks, and how fast it computes each of their convolutions, in TF32
//! (tensor cores) and exact fp32 (CUDA cores); `--json` writes the figures
//! for the PyTorch peer harness (`benches/peers/peers.py --ours`).
//!
//! What is timed, always with CUDA events on the GPU's stream and reported
//! as the median:
//! - a training step: the real [`train_step`] on a batch of
//!   random images and labels already on the GPU, [`STEP_WARMUP`] untimed
//!   steps, then [`STEP_ITERS`] timed ones, each between its own pair of
//!   events (host launch gaps count where the GPU waits for the host, as in
//!   training). Twice over the same state and optimiser: captured as a CUDA
//!   graph and replayed (as `train` runs it; skipped with `--no-graph`),
//!   then eagerly (as `train --no-graph` runs it), each with the runtime's
//!   counts per step (`src/counters.rs`);
//! - the kernels of a step: [`KERNEL_SUM_STEPS`] eager steps with an event
//!   pair around every launch ([`Gpu::time_launches`]), the median of their
//!   per-step sums. A replayed graph runs exactly those kernels with no host
//!   in between, so graph step / kernel sum says how much of the step is
//!   still not kernels (issue 12's target: at most [`GRAPH_TARGET`], with
//!   one launch and no allocation per replayed step);
//! - an eval batch: one eval-mode forward (no tape) of [`EVAL_BATCH`]
//!   random images already on the GPU, logits left there;
//! - a conv: each distinct conv shape of the networks, by direction
//!   (forward, data gradient, weight gradient; no bias), the kernel alone
//!   launched from a prepared plan, the GPU kept busy by a long copy queued
//!   first so that the host's launch time does not count (as
//!   `peers.py` times cuDNN). Fp32 runs conv.cu ([`ConvKernel::Simt`]),
//!   TF32 the tensor-core variant the GPU chooses (the committed tile
//!   table, `--tiles`, or the heuristic).
//!
//! Per network and mode the conv sum is Σ count × (fwd + bwd_data +
//! bwd_weight) over its conv shapes, the same sum `peers.py` forms from
//! cuDNN's times.
//!
//! `--capture-safe` times nothing: it runs [`CAPTURE_SAFE_STEPS`] eager
//! steps per network with the arena sealed and waits forbidden after the
//! first, and fails unless those steps allocated nothing, never waited for
//! the GPU and copied nothing to the host: what a step must do to be
//! captured, checked where a failure can name the network and the cause
//! (a failed capture only falls back to eager steps).
//!
//! The other kernels' cases (batch norm, pools, concat, element-wise, loss,
//! optimiser at the networks' shapes) are in [`op_cases`], so that their
//! launch plans are checked against the PTX without a GPU; the `gpu_ops`
//! bench times them.

use crate::autograd::{Tape, Var};
use crate::backend::{Backend, PlacedBatch, StepGraph, StepTotals};
use crate::counters::{self, Counts, Event};
use crate::cuda::conv::{self, ConvKernel, ConvPtrs, ConvShape};
use crate::cuda::conv_tiles::{Direction, TileTable, Variant};
use crate::cuda::launch::Launch;
use crate::cuda::{self, Gpu};
use crate::data::Batch;
use crate::evaluate::EVAL_BATCH;
use crate::failure::panic_message;
use crate::layers::{Math, Window};
use crate::models::conv_shapes::{shared_convs, SharedConv};
use crate::models::{Ctx, ModelKind, ModelState, NUM_CLASSES};
use crate::optim::OptimizerConfig;
use crate::tensor::Tensor;
use crate::train::{math_parser, train_step, TrainOptimizer, TRAIN_MATH};
use anyhow::{anyhow, bail, Context, Result};
use rand::SeedableRng;
use serde_json::{json, Map, Value};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub mod op_cases;

/// Untimed training steps before timing (the first ones allocate and load).
pub const STEP_WARMUP: usize = 10;
/// Timed training steps.
pub const STEP_ITERS: usize = 50;
/// Untimed and timed eval batches.
pub const EVAL_WARMUP: usize = 5;
pub const EVAL_ITERS: usize = 20;
/// Untimed and timed launches of a conv direction.
pub const CONV_WARMUP: usize = 10;
pub const CONV_ITERS: usize = 50;
/// Eager steps whose kernels are timed one by one (after the timed steps,
/// so the arena is planned and the kernels are warm).
pub const KERNEL_SUM_STEPS: usize = 10;
/// The most a replayed step may take over the sum of its kernels (issue 12).
pub const GRAPH_TARGET: f64 = 1.10;
/// Eager steps of `--capture-safe`: the first plans, the rest are checked.
pub const CAPTURE_SAFE_STEPS: usize = 20;

/// `bench`'s command line.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// googlenet, resnet, preactresnet, densenet (any case) or all.
    #[arg(value_name = "MODEL|all")]
    pub networks: Networks,
    /// Only this math mode (tf32: tensor cores; fp32: exact, CUDA cores)
    /// [default: tf32, as `train`; both modes for `all`].
    #[arg(long, value_parser = math_parser())]
    pub math: Option<Math>,
    /// Images per training step (the conv shapes' batch too).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch_size: u32,
    /// Write the figures as JSON for `benches/peers/peers.py --ours` to
    /// PATH (`--json` alone: stdout, the tables then go to stderr).
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "-")]
    pub json: Option<PathBuf>,
    /// Choose the TF32 conv variants from this tile table (as `cifar-kern
    /// tune --out` writes it) instead of the committed one.
    #[arg(long, value_name = "PATH")]
    pub tiles: Option<PathBuf>,
    /// Time the training step eagerly only, as `train --no-graph` runs it
    /// (no CUDA graph is captured or replayed).
    #[arg(long)]
    pub no_graph: bool,
    /// Time nothing: check that every network's training steps after the
    /// first allocate nothing, never wait for the GPU and copy nothing to
    /// the host, as a CUDA graph capture needs (20 eager steps each).
    #[arg(long, conflicts_with_all = ["json", "no_graph"])]
    pub capture_safe: bool,
}

/// One network or all four.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Networks {
    All,
    One(ModelKind),
}

impl Networks {
    pub fn kinds(self) -> Vec<ModelKind> {
        match self {
            Networks::All => ModelKind::ALL.to_vec(),
            Networks::One(kind) => vec![kind],
        }
    }
}

impl FromStr for Networks {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("all") {
            return Ok(Networks::All);
        }
        s.parse::<ModelKind>()
            .map(Networks::One)
            .map_err(|e| format!("{e}, or all"))
    }
}

/// The GPU `command` needs, or the one-line error that it has none.
pub fn need_gpu(command: &str) -> Result<&'static Gpu> {
    Gpu::global().map_err(|why| anyhow!("{command} needs a GPU: {why}"))
}

/// Reads a conv tile table file and makes the GPU use it (before it opens).
pub fn use_tiles_file(path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let table = TileTable::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    cuda::use_conv_tiles(table).map_err(|e| anyhow!(e))
}

/// The median of `xs` (the mean of the middle two for an even count).
pub fn median(xs: &[f32]) -> f64 {
    assert!(!xs.is_empty(), "the median of nothing");
    let mut v: Vec<f64> = xs.iter().map(|&x| x as f64).collect();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// A host tensor of `shape` with values uniform in [-1, 1) (timing does
/// not depend on the values, only on their being ordinary numbers).
pub fn random_tensor(shape: &[usize], seed: u64) -> Tensor<f32> {
    Tensor::uniform(shape, -1.0, 1.0, &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed))
}

// ---------------------------------------------------------------------------
// Convolutions
// ---------------------------------------------------------------------------

/// The operands of one conv shape on the GPU, every direction's.
pub struct ConvBuffers {
    pub shape: ConvShape,
    pub win: Window,
    x: Tensor<f32>,
    w: Tensor<f32>,
    y: Tensor<f32>,
    dy: Tensor<f32>,
    dx: Tensor<f32>,
    dw: Tensor<f32>,
}

impl ConvBuffers {
    /// Random x, w and dy of the conv of `x_shape` by `w_shape` over `win`.
    pub fn new(gpu: &Gpu, x_shape: &[usize; 4], w_shape: &[usize; 4], win: &Window) -> Self {
        let shape = ConvShape::new(x_shape, w_shape, win);
        let y_shape = shape.y_shape();
        ConvBuffers {
            shape,
            win: *win,
            x: gpu.upload(&random_tensor(x_shape, 1)),
            w: gpu.upload(&random_tensor(w_shape, 2)),
            y: gpu.alloc(&y_shape),
            dy: gpu.upload(&random_tensor(&y_shape, 3)),
            dx: gpu.alloc(x_shape),
            dw: gpu.alloc(w_shape),
        }
    }

    /// The launches of direction `dir` in `kernel`, no bias; `partials`:
    /// a workspace of [`conv::workspace_len`] elements (the weight gradient).
    pub fn plan(&self, gpu: &Gpu, dir: Direction, kernel: ConvKernel, partials: Option<&Tensor<f32>>) -> Vec<Launch> {
        let p = |t: &Tensor<f32>| gpu.ptr(t);
        let ptrs = ConvPtrs {
            x: p(&self.x),
            w: p(&self.w),
            bias: 0,
            y: p(&self.y),
            dy: p(&self.dy),
            dx: p(&self.dx),
            dw: p(&self.dw),
            partials: partials.map_or(0, p),
        };
        conv::plan::<f32>(&self.shape, dir, kernel, &ptrs)
    }

    /// A workspace for direction `dir` in `kernel`, if it has one.
    pub fn workspace(&self, gpu: &Gpu, dir: Direction, kernel: ConvKernel) -> Option<Tensor<f32>> {
        (dir == Direction::BackwardWeight).then(|| gpu.alloc::<f32>(&[conv::workspace_len(dir, &self.shape, kernel)]))
    }

    /// Times direction `dir` in `kernel`: GPU ms of each of `iters`
    /// launches of its plan after `warmup` untimed ones.
    pub fn time(&self, timer: &ConvTimer, dir: Direction, kernel: ConvKernel, warmup: usize, iters: usize) -> Vec<f32> {
        let gpu = timer.gpu;
        let partials = self.workspace(gpu, dir, kernel);
        let plan = self.plan(gpu, dir, kernel, partials.as_ref());
        timer.time(&plan, warmup, iters)
    }
}

/// Bytes a direction of `s` must move at least, f32: every direction reads
/// two of x (or dx), w (or dw) and y (or dy) and writes the third, once.
pub fn conv_bytes(s: &ConvShape) -> f64 {
    let x = s.in_rows() * s.c as usize;
    let y = s.out_rows() * s.o as usize;
    let w = s.k() * s.o as usize;
    4.0 * (x + w + y) as f64
}

/// Times launch plans on the GPU alone: before the timed launches a long
/// device-to-device copy is queued, so the GPU is still busy while the
/// host queues them and the launch overhead of the host never shows.
pub struct ConvTimer {
    pub gpu: &'static Gpu,
    hold_src: Tensor<f32>,
    hold_dst: Tensor<f32>,
    /// GPU ms of one copy of the hold buffers.
    hold_ms: f64,
}

/// Elements of each hold buffer (64 MiB).
const HOLD_ELEMENTS: usize = 16 << 20;
/// Host ms to allow for queueing one timed launch plan with its events.
const HOST_MS_PER_CALL: f64 = 0.03;

impl ConvTimer {
    pub fn new(gpu: &'static Gpu) -> Self {
        let hold_src = gpu.upload(&Tensor::zeros(&[HOLD_ELEMENTS]));
        let hold_dst = gpu.alloc(&[HOLD_ELEMENTS]);
        let copies = gpu.time_each_ms(5, |_| {
            gpu.copy(&hold_src, &hold_dst);
            Ok::<(), Infallible>(())
        });
        let hold_ms = median(&copies.unwrap_or_else(|e| match e {})).max(1e-3);
        ConvTimer {
            gpu,
            hold_src,
            hold_dst,
            hold_ms,
        }
    }

    /// Keeps the GPU busy for about `calls` host calls' worth of time.
    fn hold(&self, calls: usize) {
        let copies = ((calls as f64 * HOST_MS_PER_CALL) / self.hold_ms).ceil() as usize;
        for _ in 0..copies.clamp(1, 4000) {
            self.gpu.copy(&self.hold_src, &self.hold_dst);
        }
    }

    /// GPU ms of each of `iters` runs of `plan`, after `warmup` untimed runs.
    pub fn time(&self, plan: &[Launch], warmup: usize, iters: usize) -> Vec<f32> {
        for _ in 0..warmup {
            // SAFETY: the plan's caller keeps its buffers alive (they are
            // freed in stream order, after these launches).
            unsafe { self.gpu.run(plan) };
        }
        self.hold(iters);
        let times = self.gpu.time_each_ms(iters, |_| {
            // SAFETY: as above.
            unsafe { self.gpu.run(plan) };
            Ok::<(), Infallible>(())
        });
        times.unwrap_or_else(|e| match e {})
    }

    /// GPU ms of `iters` runs of `plan` back to back, between one pair of
    /// events (criterion's `iter_custom`).
    pub fn time_total(&self, plan: &[Launch], iters: usize) -> f64 {
        self.hold(iters);
        let times = self.gpu.time_each_ms(1, |_| {
            for _ in 0..iters {
                // SAFETY: as in `time`.
                unsafe { self.gpu.run(plan) };
            }
            Ok::<(), Infallible>(())
        });
        times.unwrap_or_else(|e| match e {})[0] as f64
    }

    /// The card's copy bandwidth in GB/s (bytes read plus written per
    /// second) of a 256 MiB device-to-device copy, median of 10.
    pub fn copy_gbps(&self) -> f64 {
        let n = 64 << 20;
        let (src, dst) = (
            self.gpu.upload(&Tensor::<f32>::zeros(&[n])),
            self.gpu.alloc::<f32>(&[n]),
        );
        self.gpu.copy(&src, &dst);
        let times = self.gpu.time_each_ms(10, |_| {
            self.gpu.copy(&src, &dst);
            Ok::<(), Infallible>(())
        });
        2.0 * 4.0 * n as f64 / (median(&times.unwrap_or_else(|e| match e {})) * 1e-3) / 1e9
    }
}

/// What a direction of a conv achieves: TFLOP/s and GB/s of its
/// multiply-adds and compulsory traffic at `ms`.
pub fn achieved(dir: Direction, s: &ConvShape, ms: f64) -> (f64, f64) {
    let seconds = ms * 1e-3;
    (dir.flops(s) / seconds / 1e12, conv_bytes(s) / seconds / 1e9)
}

/// The largest GEMM our kernels compute here: a 1x1 conv of 128 x 32 x 32
/// pixels, 512 channels in and out (a 131,072 x 512 x 512 GEMM).
pub fn ceiling_gemm() -> ([usize; 4], [usize; 4], Window) {
    ([128, 32, 32, 512], [1, 1, 512, 512], Window::valid([1, 1], [1, 1]))
}

/// The best TFLOP/s of the ceiling GEMM's forward in each of `maths`
/// (every tile for TF32): the card's compute ceiling as our kernels reach it.
pub fn gemm_ceilings(timer: &ConvTimer, maths: &[Math]) -> Vec<(Math, f64)> {
    let (x, w, win) = ceiling_gemm();
    let bufs = ConvBuffers::new(timer.gpu, &x, &w, &win);
    let best = |math: Math| {
        let kernels: Vec<ConvKernel> = match math {
            Math::Fp32 => vec![ConvKernel::Simt],
            Math::Tf32 => crate::cuda::conv_tiles::TILES
                .into_iter()
                .map(|tile| ConvKernel::TensorCore(Variant { tile, splits: 1 }))
                .collect(),
        };
        let ms = kernels
            .into_iter()
            .map(|k| median(&bufs.time(timer, Direction::Forward, k, 3, 10)))
            .fold(f64::INFINITY, f64::min);
        achieved(Direction::Forward, &bufs.shape, ms).0
    };
    maths.iter().map(|&m| (m, best(m))).collect()
}

/// One conv shape's times in each mode timed.
#[derive(Clone, Debug)]
pub struct ConvTiming {
    pub conv: SharedConv,
    /// Median ms of fwd, bwd_data, bwd_weight in TF32 and the variants.
    pub tf32: Option<([f64; 3], [Variant; 3])>,
    /// Median ms of fwd, bwd_data, bwd_weight in exact fp32.
    pub fp32: Option<[f64; 3]>,
}

impl ConvTiming {
    pub fn ms(&self, math: Math) -> Option<[f64; 3]> {
        match math {
            Math::Tf32 => self.tf32.map(|(ms, _)| ms),
            Math::Fp32 => self.fp32,
        }
    }
}

/// Σ count × (fwd + bwd_data + bwd_weight) of `kind`'s convs in `math`;
/// None when a shape of it was not timed in that mode.
pub fn conv_sum(kind: ModelKind, convs: &[ConvTiming], math: Math) -> Option<f64> {
    let mut sum = 0.0;
    for c in convs {
        if let Some(&(_, count)) = c.conv.used_by.iter().find(|(k, _)| *k == kind) {
            sum += count as f64 * c.ms(math)?.iter().sum::<f64>();
        }
    }
    Some(sum)
}

/// Times every conv of `convs` in each of `maths`, saying on stderr how far it got.
pub fn time_convs(timer: &ConvTimer, convs: &[SharedConv], maths: &[Math]) -> Vec<ConvTiming> {
    let gpu = timer.gpu;
    let mut out = Vec::new();
    for (i, conv) in convs.iter().enumerate() {
        progress(&format!("timing conv {}/{}: {}", i + 1, convs.len(), conv.peers_key()));
        let bufs = ConvBuffers::new(gpu, &conv.x_shape, &conv.w_shape, &conv.win);
        let mut timing = ConvTiming {
            conv: conv.clone(),
            tf32: None,
            fp32: None,
        };
        for &math in maths {
            let kernels = Direction::ALL.map(|dir| conv::kernel_for::<f32>(gpu, math, dir, &bufs.shape));
            let ms: [f64; 3] = std::array::from_fn(|d| {
                median(&bufs.time(timer, Direction::ALL[d], kernels[d], CONV_WARMUP, CONV_ITERS))
            });
            match math {
                Math::Fp32 => timing.fp32 = Some(ms),
                Math::Tf32 => {
                    let variant = |k: ConvKernel| match k {
                        ConvKernel::TensorCore(v) => v,
                        ConvKernel::Simt => unreachable!("TF32 runs the tensor cores"),
                    };
                    timing.tf32 = Some((ms, kernels.map(variant)));
                }
            }
        }
        out.push(timing);
    }
    progress_done();
    out
}

/// A progress line on stderr, overwritten by the next, where stderr is a
/// terminal (a log file gets none).
pub fn progress(line: &str) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprint!("\r{line:<70}");
    }
}

/// Ends the [`progress`] lines.
pub fn progress_done() {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
}

// ---------------------------------------------------------------------------
// Networks
// ---------------------------------------------------------------------------

/// The runtime's counts per training step (`src/counters.rs`), as
/// `metrics.jsonl`'s `per_step` has them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PerStep {
    pub kernel_launches: f64,
    pub device_allocations: f64,
    pub device_copies: f64,
    pub host_copies: f64,
    pub host_syncs: f64,
}

impl PerStep {
    pub fn of(counts: &Counts, steps: usize) -> Self {
        let per = |e| counts.get(e) as f64 / steps as f64;
        PerStep {
            kernel_launches: per(Event::KernelLaunch),
            device_allocations: per(Event::DeviceAllocation),
            device_copies: per(Event::DeviceCopy),
            host_copies: per(Event::HostCopy),
            host_syncs: per(Event::HostSync),
        }
    }

    fn to_json(self) -> Value {
        json!({
            "kernel_launches": self.kernel_launches, "device_allocations": self.device_allocations,
            "device_copies": self.device_copies, "host_copies": self.host_copies, "host_syncs": self.host_syncs,
        })
    }
}

/// A training step's time and the runtime's counts per step.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepTiming {
    /// Median ms per step.
    pub ms: f64,
    pub per_step: PerStep,
}

/// One network's figures in one math mode.
#[derive(Clone, Debug, PartialEq)]
pub struct NetTiming {
    /// The step captured as a CUDA graph and replayed; None with
    /// `--no-graph`, or where the capture failed (the step then ran eagerly,
    /// as `train` would run it).
    pub graph: Option<StepTiming>,
    /// The step issued eagerly, over the same state and optimiser.
    pub eager: StepTiming,
    /// Median over [`KERNEL_SUM_STEPS`] eager steps of the sum of the GPU
    /// times of their kernels.
    pub kernel_sum_ms: f64,
    /// Median ms per eval batch of [`EVAL_BATCH`].
    pub eval_ms: f64,
    /// Peak bytes in use from the GPU's memory pool from before the model
    /// was set up to the end of the timed steps ([`Gpu::peak_pool_bytes`]).
    pub peak_bytes: Option<u64>,
    /// Whether every loss of the steps was finite (random labels, the
    /// tutorial's learning rate: they should be).
    pub finite: bool,
}

impl NetTiming {
    /// The step as `train` runs it: replayed where it was captured, else eager.
    pub fn step(&self) -> &StepTiming {
        self.graph.as_ref().unwrap_or(&self.eager)
    }

    /// Replayed step / sum of its kernels' times.
    pub fn graph_over_kernels(&self) -> Option<f64> {
        self.graph.map(|g| g.ms / self.kernel_sum_ms)
    }

    /// Whether the replayed step meets issue 12's target: within
    /// [`GRAPH_TARGET`] of its kernels' sum, one launch and no allocation.
    /// None when graphs were not asked for; false when the capture failed.
    pub fn graph_target_met(&self, graphs: bool) -> Option<bool> {
        graphs.then(|| {
            self.graph.is_some_and(|g| {
                g.per_step.kernel_launches == 1.0
                    && g.per_step.device_allocations == 0.0
                    && self.graph_over_kernels().is_some_and(|r| r <= GRAPH_TARGET)
            })
        })
    }
}

/// A network's training state on the GPU and a batch of random images and
/// labels already there: what the timing and the capture-safety check step
/// through [`train_step`], as `train` does.
struct StepRig {
    kind: ModelKind,
    math: Math,
    state: ModelState<f32>,
    optimizer: TrainOptimizer,
    totals: StepTotals,
    batch: PlacedBatch,
}

impl StepRig {
    /// `steps`: how many steps the learning-rate schedule spans.
    fn new(gpu: &'static Gpu, kind: ModelKind, math: Math, batch: usize, steps: usize) -> Self {
        let backend = Backend::Gpu(gpu);
        let mut state = ModelState::<f32>::init(kind, 42).map(|t| backend.place(t.clone()));
        let optimizer = TrainOptimizer::new(backend, OptimizerConfig::for_model(kind, steps), &mut state.params);
        let labels: Vec<u32> = (0..batch).map(|i| ((i * 7 + 3) % NUM_CLASSES) as u32).collect();
        let batch = backend.place_batch(Batch {
            images: random_tensor(&[batch, 32, 32, 3], 11),
            labels,
        });
        StepRig {
            kind,
            math,
            state,
            optimizer,
            totals: StepTotals::new(backend),
            batch,
        }
    }

    fn step(&mut self, graph: &mut StepGraph) -> Result<()> {
        let batch = self.batch.clone();
        train_step(
            self.kind,
            self.math,
            &mut self.state,
            &mut self.optimizer,
            batch,
            &mut self.totals,
            graph,
        )
    }
}

/// [`STEP_WARMUP`] untimed calls of `step`, then the median GPU ms of
/// [`STEP_ITERS`] timed ones, each between its own pair of events, and the
/// runtime's counts per timed step.
fn time_steps(gpu: &Gpu, mut step: impl FnMut() -> Result<()>) -> Result<StepTiming> {
    for _ in 0..STEP_WARMUP {
        step()?;
    }
    let (mut before, mut after) = (counters::snapshot(), counters::snapshot());
    let times = gpu.time_each_ms(STEP_ITERS, |i| {
        // Inside the events: the wait for them at the end is not the steps'.
        if i == 0 {
            before = counters::snapshot();
        }
        step()?;
        if i + 1 == STEP_ITERS {
            after = counters::snapshot();
        }
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(StepTiming {
        ms: median(&times),
        per_step: PerStep::of(&after.since(&before), STEP_ITERS),
    })
}

/// The median over [`KERNEL_SUM_STEPS`] calls of `step` (eager steps) of
/// the sum of the GPU times of the kernels each launched.
fn kernel_sum_ms(gpu: &Gpu, mut step: impl FnMut() -> Result<()>) -> Result<f64> {
    gpu.time_launches(true);
    let sums: Result<Vec<f32>> = (0..KERNEL_SUM_STEPS)
        .map(|_| {
            step()?;
            Ok(gpu.launch_times_ms().iter().sum())
        })
        .collect();
    gpu.time_launches(false);
    Ok(median(&sums?))
}

/// Median GPU ms of an eval-mode forward of [`EVAL_BATCH`] random images
/// through `state`, after [`EVAL_WARMUP`] untimed ones.
fn time_eval(gpu: &Gpu, kind: ModelKind, math: Math, state: &ModelState<f32>) -> f64 {
    let images = gpu.upload(&random_tensor(&[EVAL_BATCH, 32, 32, 3], 12));
    let eval = |_: usize| {
        let tape = Tape::no_grad().with_math(math);
        let mut state = state.clone();
        let logits = kind.forward(&mut Ctx::new(&tape, &mut state, false), &Var::constant(images.clone()));
        drop(logits);
        Ok::<(), Infallible>(())
    };
    for i in 0..EVAL_WARMUP {
        eval(i).unwrap_or_else(|e| match e {});
    }
    median(&gpu.time_each_ms(EVAL_ITERS, eval).unwrap_or_else(|e| match e {}))
}

/// Times training steps (replayed unless `!graphs`, and eager) and eval
/// batches of `kind` in `math` on `gpu`.
pub fn time_network(gpu: &'static Gpu, kind: ModelKind, math: Math, batch: usize, graphs: bool) -> Result<NetTiming> {
    let backend = Backend::Gpu(gpu);
    gpu.synchronize();
    gpu.reset_peak_pool_bytes();
    let timed_runs = if graphs { 2 } else { 1 };
    let steps = timed_runs * (STEP_WARMUP + STEP_ITERS) + KERNEL_SUM_STEPS;
    let mut rig = StepRig::new(gpu, kind, math, batch, steps);
    let graph = if graphs {
        let mut graph = StepGraph::new(backend, true);
        let timing = time_steps(gpu, || rig.step(&mut graph))?;
        // A failed capture said why and left the steps eager.
        let captured = matches!(graph, StepGraph::Gpu { graph: Some(_), .. });
        captured.then_some(timing)
    } else {
        None
    };
    // The arena the steps above planned serves the eager steps as well.
    let mut eager_graph = StepGraph::new(backend, false);
    let eager = time_steps(gpu, || rig.step(&mut eager_graph))?;
    let kernel_sum_ms = kernel_sum_ms(gpu, || rig.step(&mut eager_graph))?;
    let peak_bytes = gpu.peak_pool_bytes();
    let finite = rig.totals.read().bad_loss().is_none();
    let eval_ms = time_eval(gpu, kind, math, &rig.state);
    drop(rig);
    // The next network plans its own buffers.
    gpu.use_arena(false);
    Ok(NetTiming {
        graph,
        eager,
        kernel_sum_ms,
        eval_ms,
        peak_bytes,
        finite,
    })
}

// ---------------------------------------------------------------------------
// Capture safety
// ---------------------------------------------------------------------------

/// What the steps after the first of [`check_capture_safe`] did, in all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureSafety {
    pub steps: usize,
    pub launches: u64,
    pub allocations: u64,
    pub syncs: u64,
    pub host_copies: u64,
    /// Buffers the arena had to make (none: the first step planned them all).
    pub new_buffers: u64,
}

impl CaptureSafety {
    /// The line to print for `what` (network and math) when its steps are
    /// capture-safe, or the error saying what they did instead.
    pub fn verdict(&self, what: &str) -> Result<String, String> {
        let Self {
            steps,
            launches,
            allocations,
            syncs,
            host_copies,
            new_buffers,
        } = *self;
        if allocations + syncs + host_copies + new_buffers == 0 {
            let per_step = launches as f64 / steps as f64;
            return Ok(format!(
                "capture-safe: {what} {steps} steps, 0 allocations, 0 syncs, {per_step:.0} launches/step"
            ));
        }
        Err(format!(
            "capture-safe: {what}: the {steps} steps after the first made {}, {}, {} and {} (a captured step may make none)",
            plural(allocations, "allocation"),
            plural(syncs, "host sync"),
            plural(host_copies, "host copy"),
            plural(new_buffers, "new arena buffer"),
        ))
    }
}

/// "1 allocation", "2 allocations".
fn plural(n: u64, what: &str) -> String {
    match (n, what.strip_suffix('y')) {
        (1, _) => format!("1 {what}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        (_, None) => format!("{n} {what}s"),
    }
}

/// Runs [`CAPTURE_SAFE_STEPS`] eager training steps of `kind` in `math`:
/// the first plans the step arena, the others run with the arena sealed and
/// waits forbidden (either panics at the first offence). What those did, or
/// the error of a step that failed; `what` names the network in it.
pub fn check_capture_safe(
    gpu: &'static Gpu,
    kind: ModelKind,
    math: Math,
    batch: usize,
    what: &str,
) -> Result<CaptureSafety, String> {
    let mut rig = StepRig::new(gpu, kind, math, batch, CAPTURE_SAFE_STEPS);
    let mut eager = StepGraph::new(Backend::Gpu(gpu), false);
    let failed =
        |step: usize, why: String| format!("capture-safe: {what}: step {step} of {CAPTURE_SAFE_STEPS} failed: {why}");
    rig.step(&mut eager).map_err(|e| failed(1, format!("{e:#}")))?;
    // Starts the arena's counts over.
    gpu.arena_counts();
    let before = counters::snapshot();
    gpu.seal_arena(true);
    gpu.forbid_waits(true);
    let mut done = 1;
    let steps = catch_quietly(|| -> Result<()> {
        while done < CAPTURE_SAFE_STEPS {
            rig.step(&mut eager)?;
            done += 1;
        }
        Ok(())
    });
    gpu.forbid_waits(false);
    gpu.seal_arena(false);
    let (counts, arena) = (counters::snapshot().since(&before), gpu.arena_counts().0);
    drop((rig, eager));
    gpu.use_arena(false);
    match steps {
        Err(panic) => Err(failed(done + 1, panic)),
        Ok(Err(e)) => Err(failed(done + 1, format!("{e:#}"))),
        Ok(Ok(())) => Ok(CaptureSafety {
            steps: CAPTURE_SAFE_STEPS - 1,
            launches: counts.get(Event::KernelLaunch),
            allocations: counts.get(Event::DeviceAllocation),
            syncs: counts.get(Event::HostSync),
            host_copies: counts.get(Event::HostCopy),
            new_buffers: arena.new_buffers,
        }),
    }
}

/// Runs `f`; a panic becomes its message, which the caller reports, so the
/// panic hook does not print it as well.
fn catch_quietly<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    panic::set_hook(hook);
    result.map_err(|payload| panic_message(&*payload).unwrap_or_else(|| "it panicked".into()))
}

/// `cifar-kern bench --capture-safe`: one line per network and math, or
/// the error of the first that is not capture-safe (after a step's failure
/// the runtime may not be fit to check another).
pub fn run_capture_safe(args: &BenchArgs) -> Result<()> {
    let gpu = open_gpu(args)?;
    for kind in args.networks.kinds() {
        for math in maths(args) {
            let what = format!("{kind} ({math})");
            let checked = check_capture_safe(gpu, kind, math, args.batch_size as usize, &what);
            println!(
                "{}",
                checked
                    .and_then(|safety| safety.verdict(&what))
                    .map_err(|why| anyhow!(why))?
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------

/// Everything `bench` measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub card: String,
    pub arch: u32,
    pub batch: usize,
    /// Where the TF32 variants came from.
    pub tiles: String,
    pub maths: Vec<Math>,
    /// Whether steps were captured and replayed (not `--no-graph`).
    pub graphs: bool,
    pub networks: Vec<(ModelKind, Vec<(Math, NetTiming)>)>,
    pub convs: Vec<ConvTiming>,
    /// Measured ceilings: copy GB/s, and GEMM TFLOP/s per mode.
    pub copy_gbps: f64,
    pub gemm_tflops: Vec<(Math, f64)>,
}

fn round(v: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (v * scale).round() / scale
}

impl BenchReport {
    fn timing(&self, kind: ModelKind, math: Math) -> Option<&NetTiming> {
        let (_, by_math) = self.networks.iter().find(|(k, _)| *k == kind)?;
        by_math.iter().find(|(m, _)| *m == math).map(|(_, t)| t)
    }

    /// The figures in the format `peers.py --ours` reads (benches/peers/README.md).
    pub fn to_json(&self) -> Value {
        let mut networks = Map::new();
        for (kind, by_math) in &self.networks {
            let mut net = Map::new();
            for (math, t) in by_math {
                // The step as `train` runs it: what peers.py compares.
                net.insert(format!("{math}_ms"), json!(round(t.step().ms, 4)));
                net.insert(format!("per_step_{math}"), t.step().per_step.to_json());
                net.insert(format!("graph_{math}_ms"), json!(t.graph.map(|g| round(g.ms, 4))));
                net.insert(format!("eager_{math}_ms"), json!(round(t.eager.ms, 4)));
                net.insert(format!("per_step_eager_{math}"), t.eager.per_step.to_json());
                net.insert(format!("kernel_sum_{math}_ms"), json!(round(t.kernel_sum_ms, 4)));
                net.insert(
                    format!("graph_over_kernels_{math}"),
                    json!(t.graph_over_kernels().map(|r| round(r, 3))),
                );
                net.insert(
                    format!("graph_target_met_{math}"),
                    json!(t.graph_target_met(self.graphs)),
                );
                net.insert(format!("eval_{math}_ms"), json!(round(t.eval_ms, 4)));
                let peak = t.peak_bytes.map(|b| round(b as f64 / (1u64 << 20) as f64, 1));
                net.insert(format!("peak_mib_{math}"), json!(peak));
                net.insert(format!("finite_{math}"), json!(t.finite));
            }
            let sums: Vec<(Math, Option<f64>)> = self
                .maths
                .iter()
                .map(|&m| (m, conv_sum(*kind, &self.convs, m)))
                .collect();
            for (math, sum) in &sums {
                net.insert(format!("conv_sum_{math}_ms"), json!(sum.map(|s| round(s, 4))));
            }
            if let (Some(tf32), Some(fp32)) = (
                conv_sum(*kind, &self.convs, Math::Tf32),
                conv_sum(*kind, &self.convs, Math::Fp32),
            ) {
                net.insert("conv_ratio".into(), json!(round(fp32 / tf32, 3)));
            }
            net.insert(
                "convs".into(),
                json!(self
                    .convs
                    .iter()
                    .filter(|c| c.conv.used_by.iter().any(|(k, _)| k == kind))
                    .count()),
            );
            networks.insert(kind.name().to_string(), Value::Object(net));
        }
        let mut convs = Map::new();
        for c in &self.convs {
            let mut entry = Map::new();
            if let Some((ms, variants)) = &c.tf32 {
                for (d, dir) in Direction::ALL.iter().enumerate() {
                    entry.insert(format!("{}_ms", dir.name()), json!(round(ms[d], 5)));
                    entry.insert(format!("{}_variant", dir.name()), json!(variants[d].to_string()));
                }
            }
            if let Some(ms) = &c.fp32 {
                for (d, dir) in Direction::ALL.iter().enumerate() {
                    entry.insert(format!("{}_fp32_ms", dir.name()), json!(round(ms[d], 5)));
                }
            }
            let used_by: Map<String, Value> = c
                .conv
                .used_by
                .iter()
                .map(|(k, n)| (k.name().to_string(), json!(n)))
                .collect();
            entry.insert("used_by".into(), Value::Object(used_by));
            convs.insert(c.conv.peers_key(), Value::Object(entry));
        }
        let ceilings: Map<String, Value> = self
            .gemm_tflops
            .iter()
            .map(|(m, t)| (format!("gemm_{m}_tflops"), json!(round(*t, 2))))
            .collect();
        json!({
            "engine": "cifar-kern",
            "device": self.card,
            "arch": self.arch,
            "batch": self.batch,
            "eval_batch": EVAL_BATCH,
            "tiles": self.tiles,
            "step_graphs": self.graphs,
            "graph_target": {"max_graph_over_kernels": GRAPH_TARGET, "launches_per_step": 1, "allocations_per_step": 0},
            "timing": {
                "step": {"warmup": STEP_WARMUP, "iters": STEP_ITERS},
                "kernel_sum": {"steps": KERNEL_SUM_STEPS},
                "eval": {"warmup": EVAL_WARMUP, "iters": EVAL_ITERS},
                "conv": {"warmup": CONV_WARMUP, "iters": CONV_ITERS},
            },
            "peak_memory": "bytes in use from the CUDA memory pool at its peak (CU_MEMPOOL_ATTR_USED_MEM_HIGH), from before the model was set up to the last timed step: parameters, optimiser state, batch, activations, workspaces; not the CUDA context or kernel code",
            "ceilings": {"copy_gbps": round(self.copy_gbps, 1), "gemm": Value::Object(ceilings)},
            "networks": Value::Object(networks),
            "convs": Value::Object(convs),
        })
    }

    /// The table of the training steps, replayed and eager, against the
    /// sum of their kernels: one row per network and math.
    fn steps_text(&self) -> String {
        let mut out = String::new();
        let replayed = match self.graphs {
            true => format!("{STEP_ITERS} replayed (CUDA graph) and of "),
            false => String::new(),
        };
        let _ = writeln!(
            out,
            "\nTraining steps: median ms of {replayed}{STEP_ITERS} eager steps; kernels = median over {KERNEL_SUM_STEPS} eager steps of the sum of their kernels' times; per step: launches/allocations/device copies/host syncs; target: graph/kernels <= {GRAPH_TARGET:.2}, 1 launch, 0 allocations"
        );
        let headers = [
            "network",
            "math",
            "graph",
            "eager",
            "kernels",
            "graph/kernels",
            "target",
            "graph counts",
            "eager counts",
        ]
        .map(String::from);
        let counts = |p: &PerStep| {
            let cells = [p.kernel_launches, p.device_allocations, p.device_copies, p.host_syncs];
            cells.map(|v| format!("{v:.0}")).join("/")
        };
        let mut rows = Vec::new();
        for (kind, by_math) in &self.networks {
            for (math, t) in by_math {
                let dash = || "-".to_string();
                rows.push(vec![
                    kind.name().to_string(),
                    math.to_string(),
                    t.graph.map_or_else(dash, |g| format!("{:.3}", g.ms)),
                    format!("{:.3}", t.eager.ms),
                    format!("{:.3}", t.kernel_sum_ms),
                    t.graph_over_kernels().map_or_else(dash, |r| format!("{r:.2}x")),
                    t.graph_target_met(self.graphs)
                        .map_or_else(dash, |met| if met { "yes".into() } else { "NO".into() }),
                    t.graph.map_or_else(dash, |g| counts(&g.per_step)),
                    counts(&t.eager.per_step),
                ]);
            }
        }
        out.push_str(&table(&headers, &rows));
        out
    }

    /// The tables: convs first, then the training steps, then per network
    /// (the summary) last.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} (sm_{}), batch {}, eval batch {EVAL_BATCH}; TF32 conv variants: {}",
            self.card, self.arch, self.batch, self.tiles
        );
        let ceilings: Vec<String> = self
            .gemm_tflops
            .iter()
            .map(|(m, t)| format!("{m} GEMM {t:.1} TFLOP/s"))
            .collect();
        let _ = writeln!(
            out,
            "ceilings measured here: copy {:.0} GB/s, {}",
            self.copy_gbps,
            ceilings.join(", ")
        );
        if !self.convs.is_empty() {
            let _ = writeln!(
                out,
                "\nConvolutions, median GPU ms of {CONV_ITERS} launches (no bias); used by = network:count"
            );
            let mut headers = vec!["conv shape".to_string(), "used by".to_string()];
            for math in &self.maths {
                for dir in Direction::ALL {
                    headers.push(format!("{} {math}", dir.name()));
                }
            }
            if self.maths.contains(&Math::Tf32) {
                headers.push("tf32 variants (fwd/bwd_data/bwd_weight)".into());
            }
            let mut rows = Vec::new();
            for c in &self.convs {
                let used: Vec<String> = c
                    .conv
                    .used_by
                    .iter()
                    .map(|(k, n)| format!("{}:{n}", k.name()))
                    .collect();
                let mut row = vec![c.conv.peers_key(), used.join(" ")];
                for &math in &self.maths {
                    match c.ms(math) {
                        Some(ms) => row.extend(ms.iter().map(|v| format!("{v:.4}"))),
                        None => row.extend(["-".to_string(), "-".into(), "-".into()]),
                    }
                }
                if let Some((_, v)) = &c.tf32 {
                    row.push(v.iter().map(Variant::to_string).collect::<Vec<_>>().join(" / "));
                }
                rows.push(row);
            }
            out.push_str(&table(&headers, &rows));
        }
        out.push_str(&self.steps_text());
        let as_trained = if self.graphs { "replayed" } else { "eager" };
        let _ = writeln!(
            out,
            "\nNetworks: median ms per training step ({STEP_ITERS} {as_trained} steps) and per eval batch ({EVAL_ITERS}); conv sum = Σ count x (fwd + bwd_data + bwd_weight); peak = GPU memory pool peak"
        );
        let mut headers = vec!["network".to_string()];
        for math in &self.maths {
            for what in ["step", "eval", "conv sum", "peak MiB", "launches/step"] {
                headers.push(format!("{what} {math}"));
            }
        }
        let both = self.maths.contains(&Math::Tf32) && self.maths.contains(&Math::Fp32);
        if both {
            headers.extend([
                "step fp32/tf32".to_string(),
                "conv fp32/tf32".into(),
                "conv >= 3x".into(),
            ]);
        }
        let mut rows = Vec::new();
        for (kind, _) in &self.networks {
            let mut row = vec![kind.name().to_string()];
            for &math in &self.maths {
                match self.timing(*kind, math) {
                    Some(t) => {
                        row.push(format!(
                            "{:.3}{}",
                            t.step().ms,
                            if t.finite { "" } else { " (loss not finite)" }
                        ));
                        row.push(format!("{:.3}", t.eval_ms));
                        row.push(conv_sum(*kind, &self.convs, math).map_or("-".into(), |s| format!("{s:.3}")));
                        row.push(
                            t.peak_bytes
                                .map_or("-".into(), |b| format!("{:.0}", b as f64 / (1u64 << 20) as f64)),
                        );
                        row.push(format!("{:.0}", t.step().per_step.kernel_launches));
                    }
                    None => row.extend(["-".to_string(), "-".into(), "-".into(), "-".into(), "-".into()]),
                }
            }
            if both {
                let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
                let step = ratio(
                    self.timing(*kind, Math::Fp32).map(|t| t.step().ms),
                    self.timing(*kind, Math::Tf32).map(|t| t.step().ms),
                );
                let conv = ratio(
                    conv_sum(*kind, &self.convs, Math::Fp32),
                    conv_sum(*kind, &self.convs, Math::Tf32),
                );
                row.push(step.map_or("-".into(), |r| format!("{r:.2}x")));
                row.push(conv.map_or("-".into(), |r| format!("{r:.2}x")));
                row.push(conv.map_or("-".into(), |r| if r >= 3.0 { "yes".into() } else { "NO".into() }));
            }
            rows.push(row);
        }
        out.push_str(&table(&headers, &rows));
        out
    }
}

/// A plain text table: columns of numbers (cells starting with a digit, `-`
/// or empty) right-aligned, the others left-aligned.
pub fn table(headers: &[String], rows: &[Vec<String>]) -> String {
    let columns = headers.len();
    let cells = |i: usize| rows.iter().filter_map(move |r| r.get(i));
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            cells(i)
                .chain([&headers[i]])
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let numeric: Vec<bool> = (0..columns)
        .map(|i| cells(i).all(|c| c.is_empty() || c == "-" || c.starts_with(|ch: char| ch.is_ascii_digit())))
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let w = widths[i];
                if numeric[i] {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers);
    out.push_str(&line(&widths.iter().map(|&w| "-".repeat(w)).collect::<Vec<_>>()));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// The GPU with `--tiles`' table chosen (before it opens), or the one-line
/// error that there is none.
fn open_gpu(args: &BenchArgs) -> Result<&'static Gpu> {
    if let Some(path) = &args.tiles {
        use_tiles_file(path)?;
    }
    need_gpu("bench")
}

/// The math modes to run: `--math`, else one network as `train` runs it and
/// `all` in both modes (to compare them).
fn maths(args: &BenchArgs) -> Vec<Math> {
    match (args.math, args.networks) {
        (Some(m), _) => vec![m],
        (None, Networks::All) => Math::ALL.to_vec(),
        (None, Networks::One(_)) => vec![TRAIN_MATH],
    }
}

/// `cifar-kern bench` (without `--capture-safe`).
pub fn run(args: &BenchArgs) -> Result<()> {
    let gpu = open_gpu(args)?;
    let batch = args.batch_size as usize;
    let graphs = !args.no_graph;
    let maths = maths(args);
    let kinds = args.networks.kinds();
    let tiles = match &args.tiles {
        Some(path) => format!(
            "{} ({} sm_{} entries)",
            path.display(),
            gpu.conv_tiles().count_arch(gpu.arch()),
            gpu.arch()
        ),
        None => format!(
            "the committed table ({} sm_{} entries; the heuristic for the rest)",
            gpu.conv_tiles().count_arch(gpu.arch()),
            gpu.arch()
        ),
    };
    eprintln!(
        "bench on {} (sm_{}): {} in {:?}",
        gpu.name(),
        gpu.arch(),
        kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(", "),
        maths.iter().map(|m| m.name()).collect::<Vec<_>>()
    );
    let mut networks = Vec::new();
    for &kind in &kinds {
        let mut by_math = Vec::new();
        for &math in &maths {
            let t = time_network(gpu, kind, math, batch, graphs).with_context(|| format!("timing {kind} in {math}"))?;
            let graph = t
                .graph
                .map_or(String::new(), |g| format!("{:.3} ms/step replayed, ", g.ms));
            eprintln!(
                "{kind} {math}: {graph}{:.3} eager, kernels {:.3}; {:.3} ms/eval batch",
                t.eager.ms, t.kernel_sum_ms, t.eval_ms
            );
            by_math.push((math, t));
        }
        networks.push((kind, by_math));
    }
    let timer = ConvTimer::new(gpu);
    let copy_gbps = timer.copy_gbps();
    let gemm_tflops = gemm_ceilings(&timer, &maths);
    let convs = time_convs(&timer, &shared_convs(&kinds, &[batch]), &maths);
    let report = BenchReport {
        card: gpu.name(),
        arch: gpu.arch(),
        batch,
        tiles,
        maths,
        graphs,
        networks,
        convs,
        copy_gbps,
        gemm_tflops,
    };
    let text = report.to_text();
    match args.json.as_deref() {
        Some(path) if path == Path::new("-") => {
            eprint!("{text}");
            println!("{:#}", report.to_json());
        }
        Some(path) => {
            std::fs::write(path, format!("{:#}\n", report.to_json()))
                .with_context(|| format!("cannot write {}", path.display()))?;
            print!("{text}");
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    if report.networks.iter().any(|(_, m)| m.iter().any(|(_, t)| !t.finite)) {
        bail!("a loss was not finite during the timed steps: the timings above may not be those of real training");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::conv_tiles::{candidates, TILES};

    fn shared(key_size: usize, used_by: Vec<(ModelKind, usize)>) -> SharedConv {
        SharedConv {
            x_shape: [128, key_size, key_size, 16],
            w_shape: [3, 3, 16, 16],
            win: Window::same([3, 3], [1, 1], [key_size, key_size]),
            used_by,
        }
    }

    fn variants() -> [Variant; 3] {
        [Variant {
            tile: TILES[0],
            splits: 1,
        }; 3]
    }

    /// A replayed step of `step_ms` whose kernels take `step_ms / 1.05`,
    /// 1.5 times faster than eager.
    fn timing(step_ms: f64) -> NetTiming {
        let launches = |kernel_launches| PerStep {
            kernel_launches,
            ..PerStep::default()
        };
        NetTiming {
            graph: Some(StepTiming {
                ms: step_ms,
                per_step: launches(1.0),
            }),
            eager: StepTiming {
                ms: step_ms * 1.5,
                per_step: PerStep {
                    device_copies: 2.0,
                    ..launches(250.0)
                },
            },
            kernel_sum_ms: step_ms / 1.05,
            eval_ms: 1.0,
            peak_bytes: Some(300 << 20),
            finite: true,
        }
    }

    fn report() -> BenchReport {
        let t = timing;
        BenchReport {
            card: "NVIDIA H200".into(),
            arch: 90,
            batch: 128,
            tiles: "the committed table".into(),
            maths: vec![Math::Tf32, Math::Fp32],
            graphs: true,
            networks: vec![(ModelKind::ResNet, vec![(Math::Tf32, t(2.0)), (Math::Fp32, t(8.0))])],
            convs: vec![
                ConvTiming {
                    conv: shared(32, vec![(ModelKind::ResNet, 6), (ModelKind::PreActResNet, 6)]),
                    tf32: Some(([0.1, 0.2, 0.3], variants())),
                    fp32: Some([0.4, 0.8, 1.2]),
                },
                ConvTiming {
                    conv: shared(8, vec![(ModelKind::ResNet, 5)]),
                    tf32: Some(([0.01, 0.02, 0.03], variants())),
                    fp32: Some([0.02, 0.04, 0.06]),
                },
            ],
            copy_gbps: 4000.0,
            gemm_tflops: vec![(Math::Tf32, 300.0), (Math::Fp32, 40.0)],
        }
    }

    #[test]
    fn conv_sums_weigh_each_shape_by_its_count() {
        let r = report();
        // ResNet: 6 x (0.1 + 0.2 + 0.3) + 5 x (0.01 + 0.02 + 0.03) = 3.9 in TF32,
        // 6 x 2.4 + 5 x 0.12 = 15 in fp32.
        let tf32 = conv_sum(ModelKind::ResNet, &r.convs, Math::Tf32).unwrap();
        let fp32 = conv_sum(ModelKind::ResNet, &r.convs, Math::Fp32).unwrap();
        assert!(
            (tf32 - 3.9).abs() < 1e-12 && (fp32 - 15.0).abs() < 1e-12,
            "{tf32} {fp32}"
        );
        // PreActResNet uses only the first shape; DenseNet none.
        assert!((conv_sum(ModelKind::PreActResNet, &r.convs, Math::Tf32).unwrap() - 3.6).abs() < 1e-12);
        assert_eq!(conv_sum(ModelKind::DenseNet, &r.convs, Math::Tf32), Some(0.0));
        // A mode not timed has no sum.
        let mut partial = r.convs.clone();
        partial[1].fp32 = None;
        assert_eq!(conv_sum(ModelKind::ResNet, &partial, Math::Fp32), None);
    }

    #[test]
    fn the_json_has_what_peers_py_reads() {
        let v = report().to_json();
        let net = &v["networks"]["ResNet"];
        assert_eq!(
            (net["tf32_ms"].as_f64(), net["fp32_ms"].as_f64()),
            (Some(2.0), Some(8.0))
        );
        assert_eq!(
            (net["conv_sum_tf32_ms"].as_f64(), net["conv_sum_fp32_ms"].as_f64()),
            (Some(3.9), Some(15.0))
        );
        assert_eq!(net["conv_ratio"].as_f64(), Some(3.846));
        assert_eq!(net["peak_mib_tf32"].as_f64(), Some(300.0));
        assert_eq!(net["per_step_fp32"]["kernel_launches"].as_f64(), Some(1.0));
        assert_eq!(net["eval_tf32_ms"].as_f64(), Some(1.0));
        assert_eq!(net["convs"].as_u64(), Some(2));
        let conv = &v["convs"]["n128_h32_w32_c16_o16_k3_s1"];
        for (key, ms) in [
            ("fwd_ms", 0.1),
            ("bwd_data_ms", 0.2),
            ("bwd_weight_ms", 0.3),
            ("fwd_fp32_ms", 0.4),
            ("bwd_data_fp32_ms", 0.8),
            ("bwd_weight_fp32_ms", 1.2),
        ] {
            assert_eq!(conv[key].as_f64(), Some(ms), "{key}");
        }
        assert_eq!(conv["fwd_variant"], "128x16 1");
        assert_eq!(conv["used_by"]["PreActResNet"], 6);
        assert_eq!(v["batch"], 128);
        assert_eq!(v["ceilings"]["gemm"]["gemm_tf32_tflops"].as_f64(), Some(300.0));
    }

    #[test]
    fn the_json_has_the_replayed_and_the_eager_step() {
        let v = report().to_json();
        let net = &v["networks"]["ResNet"];
        assert_eq!(v["step_graphs"], true);
        assert_eq!(v["graph_target"]["max_graph_over_kernels"].as_f64(), Some(GRAPH_TARGET));
        assert_eq!(net["graph_tf32_ms"].as_f64(), Some(2.0));
        assert_eq!(net["eager_tf32_ms"].as_f64(), Some(3.0));
        assert_eq!(net["per_step_eager_tf32"]["kernel_launches"].as_f64(), Some(250.0));
        assert_eq!(net["per_step_eager_tf32"]["device_copies"].as_f64(), Some(2.0));
        assert_eq!(net["kernel_sum_tf32_ms"].as_f64(), Some(1.9048));
        assert_eq!(net["graph_over_kernels_tf32"].as_f64(), Some(1.05));
        assert_eq!(net["graph_target_met_fp32"], true);

        // --no-graph: the step as trained is the eager one; no graph figures.
        let mut eager_only = report();
        eager_only.graphs = false;
        for (_, t) in &mut eager_only.networks[0].1 {
            t.graph = None;
        }
        let v = eager_only.to_json();
        let net = &v["networks"]["ResNet"];
        assert_eq!(net["tf32_ms"].as_f64(), Some(3.0));
        assert_eq!(net["per_step_tf32"]["kernel_launches"].as_f64(), Some(250.0));
        for key in ["graph_tf32_ms", "graph_over_kernels_tf32", "graph_target_met_tf32"] {
            assert!(net[key].is_null(), "{key}: {}", net[key]);
        }
        // A capture that failed misses the target.
        eager_only.graphs = true;
        assert_eq!(
            eager_only.to_json()["networks"]["ResNet"]["graph_target_met_tf32"],
            false
        );
    }

    #[test]
    fn the_graph_target_needs_the_ratio_one_launch_and_no_allocation() {
        let met = |t: &NetTiming| t.graph_target_met(true);
        let t = timing(2.0);
        assert_eq!((met(&t), t.graph_target_met(false)), (Some(true), None));
        let mut slow = timing(2.0);
        slow.kernel_sum_ms = 2.0 / 1.11;
        let mut two_launches = timing(2.0);
        two_launches.graph.as_mut().unwrap().per_step.kernel_launches = 2.0;
        let mut allocates = timing(2.0);
        allocates.graph.as_mut().unwrap().per_step.device_allocations = 1.0;
        for t in [slow, two_launches, allocates] {
            assert_eq!(met(&t), Some(false), "{t:?}");
        }
    }

    #[test]
    fn the_text_has_a_row_per_network_and_math_for_the_steps() {
        let text = report().to_text();
        let row = text
            .lines()
            .find(|l| l.starts_with("ResNet") && l.contains(" tf32 "))
            .unwrap_or_else(|| panic!("{text}"));
        for cell in ["2.000", "3.000", "1.905", "1.05x", "yes", "1/0/0/0", "250/0/2/0"] {
            assert!(row.contains(cell), "{cell}: {row}");
        }
        let mut eager_only = report();
        eager_only.graphs = false;
        eager_only.networks[0].1[0].1.graph = None;
        let text = eager_only.to_text();
        let row = text
            .lines()
            .find(|l| l.starts_with("ResNet") && l.contains(" tf32 "))
            .unwrap();
        assert!(row.contains("  -  ") && row.ends_with("250/0/2/0"), "{row}");
        assert!(text.contains("50 eager steps"), "{text}");
    }

    #[test]
    fn capture_safety_names_what_a_step_did() {
        let safe = CaptureSafety {
            steps: 19,
            launches: 19 * 212,
            ..CaptureSafety::default()
        };
        assert_eq!(
            safe.verdict("ResNet (tf32)"),
            Ok("capture-safe: ResNet (tf32) 19 steps, 0 allocations, 0 syncs, 212 launches/step".into())
        );
        let unsafe_ = CaptureSafety {
            allocations: 2,
            syncs: 1,
            new_buffers: 1,
            ..safe
        };
        assert_eq!(
            unsafe_.verdict("DenseNet (fp32)"),
            Err(
                "capture-safe: DenseNet (fp32): the 19 steps after the first made 2 allocations, 1 host sync, \
                 0 host copies and 1 new arena buffer (a captured step may make none)"
                    .into()
            )
        );
        let copies = CaptureSafety { host_copies: 3, ..safe };
        assert!(copies.verdict("x").unwrap_err().contains("3 host copies"));
    }

    #[test]
    fn a_panic_becomes_its_message() {
        assert_eq!(catch_quietly(|| 7), Ok(7));
        assert_eq!(
            catch_quietly(|| panic!("step {} of 20", 3)),
            Err::<(), _>("step 3 of 20".to_string())
        );
        assert_eq!(catch_quietly(|| panic!("plain")), Err::<(), _>("plain".to_string()));
    }

    #[test]
    fn the_text_ends_with_the_network_table_and_its_ratio() {
        let text = report().to_text();
        let last = text.lines().last().unwrap();
        assert!(last.starts_with("ResNet"), "{text}");
        // step 8 / 2 = 4x; conv 15 / 3.9 = 3.85x, so the 3x bound is met.
        assert!(
            last.contains("4.00x") && last.contains("3.85x") && last.ends_with("yes"),
            "{last}"
        );
        assert!(text.contains("n128_h8_w8_c16_o16_k3_s1    ResNet:5  "), "{text}");
    }

    #[test]
    fn every_plan_bench_and_tune_launch_exists_in_the_ptx() {
        // Every distinct conv of the four networks at the training and the
        // evaluation batch, every direction, fp32 and every candidate
        // variant tune tries: the kernels exist and take the plan's
        // parameters, and no workspace passes the kernels' indices.
        let p = ConvPtrs {
            x: 1 << 20,
            w: 2 << 20,
            bias: 0,
            y: 3 << 20,
            dy: 4 << 20,
            dx: 5 << 20,
            dw: 6 << 20,
            partials: 7 << 20,
        };
        let mut plans = 0;
        for conv in shared_convs(&ModelKind::ALL, &[128, EVAL_BATCH]) {
            let s = ConvShape::new(&conv.x_shape, &conv.w_shape, &conv.win);
            for dir in Direction::ALL {
                let mut kernels = vec![ConvKernel::Simt];
                for sm_count in [108, 132] {
                    kernels.extend(candidates(dir, &s, sm_count).into_iter().map(ConvKernel::TensorCore));
                }
                kernels.dedup();
                for kernel in kernels {
                    if let ConvKernel::TensorCore(v) = kernel {
                        conv::tc_weight_workspace_len(&s, &v);
                    }
                    crate::cuda::launch::assert_plan_matches_ptx(&conv::plan::<f32>(&s, dir, kernel, &p));
                    plans += 1;
                }
            }
        }
        assert!(plans > 2000, "{plans}");
    }

    #[test]
    fn networks_parse_one_or_all() {
        assert_eq!("all".parse::<Networks>(), Ok(Networks::All));
        assert_eq!("ALL".parse::<Networks>().unwrap().kinds().len(), 4);
        assert_eq!("resnet".parse::<Networks>(), Ok(Networks::One(ModelKind::ResNet)));
        assert!("vgg".parse::<Networks>().unwrap_err().ends_with("or all"));
    }

    #[test]
    fn median_and_achieved_rates() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let s = ConvShape::new(
            &[128, 32, 32, 16],
            &[3, 3, 16, 16],
            &Window::same([3, 3], [1, 1], [32, 32]),
        );
        // 2 x 131,072 x 16 x 144 flops in 1 ms; x, w, y: (2 x 131,072 x 16 + 2,304) x 4 bytes.
        let (tflops, gbps) = achieved(Direction::Forward, &s, 1.0);
        assert!((tflops - 2.0 * 131_072.0 * 16.0 * 144.0 / 1e9).abs() < 1e-9);
        assert!((gbps - (2.0 * 131_072.0 * 16.0 + 2304.0) * 4.0 / 1e6).abs() < 1e-9);
        let r = random_tensor(&[1000], 7);
        assert!(r.data().iter().all(|v| (-1.0..1.0).contains(v)));
        assert!(r.data().iter().any(|v| *v < -0.5) && r.data().iter().any(|v| *v > 0.5));
    }
}
