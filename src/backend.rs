//! The one backend switch: every op the tape records, sent to the CPU
//! reference (`crate::ops`) or to the CUDA launchers (`crate::cuda`)
//! according to where its inputs live.
//!
//! This is the only module that sees both backends (as candle's `Storage`
//! dispatch is): `ops/` knows nothing of the GPU and `cuda/` nothing of the
//! CPU reference. Inputs on different devices are a bug, never a silent
//! copy: a tensor moves only through [`Backend::place`] or
//! [`Tensor::to_host`].
//!
//! The few values an op hands from its forward to its backward that are
//! not tensors (max-pool's winners, the labels) are kept where the op ran:
//! [`Argmax`], [`Labels`]; so are a training epoch's totals
//! ([`StepTotals`]), whose first non-finite loss halts the epoch's updates
//! ([`Halt`]) without the host looking.

use crate::cuda::{self, loss::DeviceTotals, pool::GpuArgmax, DeviceBuffer, Gpu};
use crate::data::Batch;
use crate::float::Float;
use crate::layers::{
    batchnorm::{BatchStats, Epilogue, Grads as BatchNormGrads},
    loss::EpochTotals,
    Math, Window,
};
use crate::ops;
use crate::tensor::Tensor;
use std::sync::Arc;

/// Where ops run: the CPU reference or the GPU.
#[derive(Clone, Copy)]
pub enum Backend {
    Cpu,
    Gpu(&'static Gpu),
}

impl Backend {
    /// Where `t` lives.
    pub fn of<T>(t: &Tensor<T>) -> Self {
        if t.is_gpu() {
            Backend::Gpu(cuda::gpu())
        } else {
            Backend::Cpu
        }
    }

    /// Where all of `op`'s inputs live; inputs on two devices are a bug.
    fn of_all<T>(op: &str, inputs: &[&Tensor<T>]) -> Self {
        let first = inputs[0].is_gpu();
        assert!(
            inputs.iter().all(|t| t.is_gpu() == first),
            "{op}: inputs on different devices (move them with Backend::place or to_host first)"
        );
        Self::of(inputs[0])
    }

    /// `t` on this backend: uploaded if it is on the host and this is the GPU.
    pub fn place<T: Float>(self, t: Tensor<T>) -> Tensor<T> {
        match self {
            Backend::Gpu(gpu) if !t.is_gpu() => gpu.upload(&t),
            _ => t,
        }
    }

    /// A scalar 1 on this backend (the seed of a backward from a loss; on
    /// the GPU uploaded once, not per step).
    pub fn one<T: Float>(self) -> Tensor<T> {
        match self {
            Backend::Cpu => Tensor::scalar(T::one()),
            Backend::Gpu(gpu) => gpu.one(),
        }
    }

    /// `batch` on this backend, by a plain upload (the trainer's batches
    /// come from a [`BatchPlacer`]).
    pub fn place_batch(self, batch: Batch) -> PlacedBatch {
        PlacedBatch {
            labels: self.labels(&batch.labels),
            images: self.place(batch.images),
        }
    }

    /// Class labels where this backend reads them.
    pub fn labels(self, labels: &[u32]) -> Labels {
        match self {
            Backend::Cpu => Labels::Host(labels.into()),
            Backend::Gpu(gpu) => Labels::Gpu(Arc::new(gpu.upload_buffer(labels))),
        }
    }
}

/// A training batch where its backend computes (a clone shares its
/// elements).
#[derive(Clone)]
pub struct PlacedBatch {
    pub images: Tensor<f32>,
    pub labels: Labels,
}

/// Puts the trainer's batches where the model is. On the CPU the loader's
/// augmented batches stay as they are. On the GPU the training set goes up
/// once and each batch is augmented there, into fixed buffers
/// ([`cuda::augment::TrainBatches`]), which a captured step graph reads: a
/// step uploads only its crop and flip records, drawn from the streams the
/// CPU loader draws from, so both see the same crops.
pub enum BatchPlacer {
    Cpu,
    Gpu(&'static Gpu, cuda::augment::TrainBatches),
}

impl BatchPlacer {
    /// A placer for `loader`'s epochs ([`BatchPlacer::epoch`]): on the GPU
    /// it uploads the loader's images and labels, and makes the buffers of
    /// its batches, now, so that no step allocates.
    pub fn new(backend: Backend, loader: &crate::data::TrainLoader) -> Self {
        match backend {
            Backend::Cpu => BatchPlacer::Cpu,
            Backend::Gpu(gpu) => BatchPlacer::Gpu(
                gpu,
                cuda::augment::TrainBatches::new(gpu, loader.data(), loader.options().batch_size),
            ),
        }
    }

    /// The batches of `epoch` (0-based) of `loader`, the loader this placer
    /// was made for: on the CPU the loader's own; on the GPU augmented
    /// there, from the same draws, each batch enqueued as it is taken. A GPU
    /// batch lives in the placer's fixed buffers until the next batch of its
    /// size is taken.
    pub fn epoch<'a>(
        &'a mut self,
        loader: &'a crate::data::TrainLoader,
        epoch: usize,
    ) -> Box<dyn ExactSizeIterator<Item = PlacedBatch> + 'a> {
        match self {
            BatchPlacer::Cpu => Box::new(loader.epoch(epoch).map(|batch| Backend::Cpu.place_batch(batch))),
            BatchPlacer::Gpu(gpu, training) => {
                let (gpu, seed) = (*gpu, loader.options().seed);
                Box::new(loader.epoch_indices(epoch).map(move |indices| {
                    let records = cuda::augment::sample_records(&indices, seed, epoch);
                    let (images, labels) = training.batch(gpu, &records);
                    PlacedBatch {
                        images,
                        labels: Labels::Gpu(labels),
                    }
                }))
            }
        }
    }
}

/// How a run's training steps are issued. On the GPU with graphs (the
/// trainer's and `bench`'s default): the first step of a batch size runs
/// eagerly, which plans the step arena's buffers; the second is captured
/// into a CUDA graph ([`cuda::graph`]); every later one only replays the
/// graph, one launch, without running the step's host code at all. Steps of
/// another batch size run eagerly. [`StepGraph::Eager`] (the CPU, and
/// `--no-graph`) runs every step's ops as they come: the same kernels in
/// the same order, so the same bits.
pub enum StepGraph {
    Eager,
    Gpu {
        gpu: &'static Gpu,
        /// The batch size of the first step, whose steps are captured.
        batch_size: Option<usize>,
        graph: Option<cuda::graph::Graph>,
    },
}

impl StepGraph {
    /// Graphs on the GPU when `graphs`, else eager. The GPU's allocations
    /// come from the step arena from now on, in both modes.
    pub fn new(backend: Backend, graphs: bool) -> Self {
        match backend {
            Backend::Cpu => StepGraph::Eager,
            Backend::Gpu(gpu) => {
                gpu.use_arena(true);
                match graphs {
                    true => StepGraph::Gpu {
                        gpu,
                        batch_size: None,
                        graph: None,
                    },
                    false => StepGraph::Eager,
                }
            }
        }
    }

    /// One step of `batch_size`: `step` enqueues its work (and on a replay
    /// is not called). A capture that fails says why in one line and leaves
    /// this run eager.
    pub fn run<E>(&mut self, batch_size: usize, mut step: impl FnMut() -> Result<(), E>) -> Result<(), E> {
        let StepGraph::Gpu {
            gpu,
            batch_size: planned,
            graph,
        } = self
        else {
            return step();
        };
        match (*planned, graph.as_ref()) {
            (None, _) => {
                *planned = Some(batch_size);
                step()
            }
            (Some(n), Some(graph)) if n == batch_size => {
                gpu.replay(graph);
                Ok(())
            }
            (Some(n), None) if n == batch_size => match gpu.capture(&mut step) {
                Ok((result, captured)) => {
                    // A step that failed while captured is not run.
                    if result.is_ok() {
                        gpu.replay(&captured);
                        *graph = Some(captured);
                    }
                    result
                }
                Err(why) => {
                    eprintln!(
                        "note: the training step could not be captured as a CUDA graph ({why}); steps run eagerly"
                    );
                    *self = StepGraph::Eager;
                    step()
                }
            },
            _ => step(),
        }
    }
}

/// A batch's class labels, where its logits are.
#[derive(Clone)]
pub enum Labels {
    Host(Arc<[u32]>),
    Gpu(Arc<DeviceBuffer<u32>>),
}

/// Max-pool's winners, where the forward ran (see [`ops::pool::max_forward`]).
pub enum Argmax {
    Host(Vec<u32>),
    Gpu(GpuArgmax),
}

/// The convolution in `math` where it runs on the GPU (the CPU always
/// computes exactly).
pub fn conv_forward<T: Float>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    b: Option<&Tensor<T>>,
    win: &Window,
    math: Math,
) -> Tensor<T> {
    let mut inputs = vec![x, w];
    inputs.extend(b);
    match Backend::of_all("conv", &inputs) {
        Backend::Cpu => ops::conv::forward(x, w, b, win),
        Backend::Gpu(gpu) => cuda::conv::forward(gpu, x, w, b, win, math),
    }
}

pub fn conv_backward_data<T: Float>(
    dy: &Tensor<T>,
    x_shape: &[usize],
    w: &Tensor<T>,
    win: &Window,
    math: Math,
) -> Tensor<T> {
    match Backend::of_all("conv backward_data", &[dy, w]) {
        Backend::Cpu => ops::conv::backward_data(dy, x_shape, w, win),
        Backend::Gpu(gpu) => cuda::conv::backward_data(gpu, dy, x_shape, w, win, math),
    }
}

/// dL/dw, written into `slot` if given (a view of the GPU's flat gradient
/// buffer, which the result then is).
pub fn conv_backward_weight<T: Float>(
    dy: &Tensor<T>,
    x: &Tensor<T>,
    w_shape: &[usize],
    win: &Window,
    math: Math,
    slot: Option<&Tensor<T>>,
) -> Tensor<T> {
    match (Backend::of_all("conv backward_weight", &[dy, x]), slot) {
        (Backend::Cpu, None) => ops::conv::backward_weight(dy, x, w_shape, win),
        (Backend::Gpu(gpu), None) => cuda::conv::backward_weight(gpu, dy, x, w_shape, win, math),
        (Backend::Gpu(gpu), Some(dw)) => {
            cuda::conv::backward_weight_into(gpu, dy, x, dw, win, math);
            dw.clone()
        }
        (Backend::Cpu, Some(_)) => panic!("{CPU_SLOT}"),
    }
}

/// dL/db, written into `slot` if given (as for [`conv_backward_weight`]).
pub fn conv_backward_bias<T: Float>(dy: &Tensor<T>, slot: Option<&Tensor<T>>) -> Tensor<T> {
    match (Backend::of(dy), slot) {
        (Backend::Cpu, None) => ops::conv::backward_bias(dy),
        (Backend::Gpu(gpu), None) => cuda::conv::backward_bias(gpu, dy),
        (Backend::Gpu(gpu), Some(db)) => {
            cuda::conv::backward_bias_into(gpu, dy, db);
            db.clone()
        }
        (Backend::Cpu, Some(_)) => panic!("{CPU_SLOT}"),
    }
}

/// Gradient slots are views of the GPU's flat gradient buffer; the CPU
/// optimiser updates its parameters tensor by tensor and gives none.
const CPU_SLOT: &str = "gradient slots live on the GPU";

/// Train-mode batch norm then its epilogue, see [`ops::batchnorm::forward_train`].
pub fn batch_norm_train<T: Float>(
    x: &Tensor<T>,
    scale: &Tensor<T>,
    bias: &Tensor<T>,
    tail: Epilogue<&Tensor<T>>,
) -> (Tensor<T>, BatchStats<T>) {
    let mut inputs = vec![x, scale, bias];
    inputs.extend(tail.residual);
    match Backend::of_all("batch norm", &inputs) {
        Backend::Cpu => ops::batchnorm::forward_train(x, scale, bias, tail),
        Backend::Gpu(gpu) => cuda::batchnorm::forward_train(gpu, x, scale, bias, tail),
    }
}

/// Eval-mode batch norm then its epilogue, see [`ops::batchnorm::forward_eval`].
pub fn batch_norm_eval<T: Float>(
    x: &Tensor<T>,
    scale: &Tensor<T>,
    bias: &Tensor<T>,
    running: &BatchStats<T>,
    tail: Epilogue<&Tensor<T>>,
) -> Tensor<T> {
    let mut inputs = vec![x, scale, bias, &running.mean, &running.var];
    inputs.extend(tail.residual);
    match Backend::of_all("batch norm", &inputs) {
        Backend::Cpu => ops::batchnorm::forward_eval(x, scale, bias, running, tail),
        Backend::Gpu(gpu) => cuda::batchnorm::forward_eval(gpu, x, scale, bias, running, tail),
    }
}

/// `running = momentum * running + (1 - momentum) * batch`, in place,
/// unless `halt` says an earlier loss of the epoch was not finite.
pub fn batch_norm_update_running<T: Float>(
    mean: &mut Tensor<T>,
    var: &mut Tensor<T>,
    batch: &BatchStats<T>,
    halt: Halt,
) {
    match (
        Backend::of_all("batch norm running statistics", &[mean, var, &batch.mean, &batch.var]),
        halt,
    ) {
        (_, Halt::Host(true)) => {}
        (Backend::Cpu, Halt::Host(false)) => ops::batchnorm::update_running(mean, var, batch),
        (Backend::Gpu(gpu), _) => cuda::batchnorm::update_running(gpu, mean, var, batch, halt.device_word()),
        (Backend::Cpu, Halt::Device(_)) => panic!("a CPU update halted by a GPU flag"),
    }
}

/// The gradients of a batch norm and its epilogue, see
/// [`ops::batchnorm::backward`]; dscale and dbias written into `slots` if
/// given (as for [`conv_backward_weight`]).
#[allow(clippy::too_many_arguments)] // the op's arguments, and the slots
pub fn batch_norm_backward<T: Float>(
    dy: &Tensor<T>,
    x: &Tensor<T>,
    y: &Tensor<T>,
    scale: &Tensor<T>,
    stats: &BatchStats<T>,
    train: bool,
    tail: Epilogue<()>,
    slots: Option<[&Tensor<T>; 2]>,
) -> BatchNormGrads<T> {
    match (
        Backend::of_all("batch norm backward", &[dy, x, y, scale, &stats.mean, &stats.var]),
        slots,
    ) {
        (Backend::Cpu, None) => ops::batchnorm::backward(dy, x, y, scale, stats, train, tail),
        (Backend::Gpu(gpu), slots) => cuda::batchnorm::backward(gpu, dy, x, y, scale, stats, train, tail, slots),
        (Backend::Cpu, Some(_)) => panic!("{CPU_SLOT}"),
    }
}

pub fn relu<T: Float>(x: &Tensor<T>) -> Tensor<T> {
    match Backend::of(x) {
        Backend::Cpu => ops::elementwise::relu(x),
        Backend::Gpu(gpu) => cuda::elementwise::relu(gpu, x),
    }
}

pub fn relu_backward<T: Float>(dy: &Tensor<T>, y: &Tensor<T>) -> Tensor<T> {
    match Backend::of_all("relu backward", &[dy, y]) {
        Backend::Cpu => ops::elementwise::relu_backward(dy, y),
        Backend::Gpu(gpu) => cuda::elementwise::relu_backward(gpu, dy, y),
    }
}

pub fn add<T: Float>(a: &Tensor<T>, b: &Tensor<T>) -> Tensor<T> {
    match Backend::of_all("add", &[a, b]) {
        Backend::Cpu => ops::elementwise::add(a, b),
        Backend::Gpu(gpu) => cuda::elementwise::add(gpu, a, b),
    }
}

pub fn max_pool<T: Float>(x: &Tensor<T>, win: &Window) -> (Tensor<T>, Argmax) {
    match Backend::of(x) {
        Backend::Cpu => {
            let (y, argmax) = ops::pool::max_forward(x, win);
            (y, Argmax::Host(argmax))
        }
        Backend::Gpu(gpu) => {
            let (y, argmax) = cuda::pool::max_forward(gpu, x, win);
            (y, Argmax::Gpu(argmax))
        }
    }
}

pub fn max_pool_backward<T: Float>(dy: &Tensor<T>, argmax: &Argmax, x_shape: &[usize], win: &Window) -> Tensor<T> {
    match (Backend::of(dy), argmax) {
        (Backend::Cpu, Argmax::Host(a)) => ops::pool::max_backward(dy, a, x_shape),
        (Backend::Gpu(gpu), Argmax::Gpu(a)) => cuda::pool::max_backward(gpu, dy, a, x_shape, win),
        _ => panic!("max-pool backward: dy and the winners on different devices"),
    }
}

pub fn avg_pool<T: Float>(x: &Tensor<T>, win: &Window) -> Tensor<T> {
    match Backend::of(x) {
        Backend::Cpu => ops::pool::avg_forward(x, win),
        Backend::Gpu(gpu) => cuda::pool::avg_forward(gpu, x, win),
    }
}

pub fn avg_pool_backward<T: Float>(dy: &Tensor<T>, x_shape: &[usize], win: &Window) -> Tensor<T> {
    match Backend::of(dy) {
        Backend::Cpu => ops::pool::avg_backward(dy, x_shape, win),
        Backend::Gpu(gpu) => cuda::pool::avg_backward(gpu, dy, x_shape, win),
    }
}

pub fn mean_hw<T: Float>(x: &Tensor<T>) -> Tensor<T> {
    match Backend::of(x) {
        Backend::Cpu => ops::reduce::mean_hw(x),
        Backend::Gpu(gpu) => cuda::reduce::mean_hw(gpu, x),
    }
}

pub fn mean_hw_backward<T: Float>(dy: &Tensor<T>, x_shape: &[usize]) -> Tensor<T> {
    match Backend::of(dy) {
        Backend::Cpu => ops::reduce::mean_hw_backward(dy, x_shape),
        Backend::Gpu(gpu) => cuda::reduce::mean_hw_backward(gpu, dy, x_shape),
    }
}

pub fn dense<T: Float>(x: &Tensor<T>, w: &Tensor<T>, b: &Tensor<T>) -> Tensor<T> {
    match Backend::of_all("dense", &[x, w, b]) {
        Backend::Cpu => ops::dense::forward(x, w, b),
        Backend::Gpu(gpu) => cuda::dense::forward(gpu, x, w, b),
    }
}

/// `(dx, dw, db)`; dw and db written into `slots` if given (as for
/// [`conv_backward_weight`]).
pub fn dense_backward<T: Float>(
    dy: &Tensor<T>,
    x: &Tensor<T>,
    w: &Tensor<T>,
    slots: Option<[&Tensor<T>; 2]>,
) -> (Tensor<T>, Tensor<T>, Tensor<T>) {
    match (Backend::of_all("dense backward", &[dy, x, w]), slots) {
        (Backend::Cpu, None) => ops::dense::backward(dy, x, w),
        (Backend::Gpu(gpu), None) => cuda::dense::backward(gpu, dy, x, w),
        (Backend::Gpu(gpu), Some([dw, db])) => {
            let dx = cuda::dense::backward_into(gpu, dy, x, w, [dw, db]);
            (dx, dw.clone(), db.clone())
        }
        (Backend::Cpu, Some(_)) => panic!("{CPU_SLOT}"),
    }
}

/// Copies `src` into `dst`'s elements, which may be a view (every view of
/// its buffer sees them): a GPU-only move within the device.
pub fn copy<T: Float>(src: &Tensor<T>, dst: &Tensor<T>) {
    match Backend::of_all("copy", &[src, dst]) {
        Backend::Gpu(gpu) => gpu.copy(src, dst),
        Backend::Cpu => panic!("{CPU_SLOT}"),
    }
}

pub fn concat<T: Float>(parts: &[&Tensor<T>]) -> Tensor<T> {
    match Backend::of_all("concat", parts) {
        Backend::Cpu => ops::concat::forward(parts),
        Backend::Gpu(gpu) => cuda::concat::forward(gpu, parts),
    }
}

pub fn concat_backward<T: Float>(dy: &Tensor<T>, widths: &[usize]) -> Vec<Tensor<T>> {
    match Backend::of(dy) {
        Backend::Cpu => ops::concat::backward(dy, widths),
        Backend::Gpu(gpu) => cuda::concat::backward(gpu, dy, widths),
    }
}

/// The mean cross-entropy as a scalar tensor where `logits` live (on the
/// GPU it stays there: reading it is the caller's choice).
pub fn cross_entropy<T: Float>(logits: &Tensor<T>, labels: &Labels) -> Tensor<T> {
    match (Backend::of(logits), labels) {
        (Backend::Cpu, Labels::Host(l)) => Tensor::scalar(ops::loss::cross_entropy(logits, l)),
        (Backend::Gpu(gpu), Labels::Gpu(l)) => cuda::loss::cross_entropy(gpu, logits, l),
        _ => panic!("cross-entropy: logits and labels on different devices"),
    }
}

/// d loss / d logits for the scalar `dloss` (a tensor where `logits` are).
pub fn cross_entropy_backward<T: Float>(logits: &Tensor<T>, labels: &Labels, dloss: &Tensor<T>) -> Tensor<T> {
    match (Backend::of_all("cross-entropy backward", &[logits, dloss]), labels) {
        (Backend::Cpu, Labels::Host(l)) => ops::loss::cross_entropy_backward(logits, l, dloss.item()),
        (Backend::Gpu(gpu), Labels::Gpu(l)) => cuda::loss::cross_entropy_backward(gpu, logits, l, dloss),
        _ => panic!("cross-entropy backward: logits and labels on different devices"),
    }
}

/// Whether an epoch's updates must stop because one of its losses was not
/// finite: known on the host, or a word in device memory that the GPU's
/// update kernels read (so the host never waits to find out).
#[derive(Clone, Copy, Debug)]
pub enum Halt {
    Host(bool),
    /// The address of the epoch's `first_bad_step` word.
    Device(u64),
}

impl Halt {
    /// For updates outside a training epoch (tests).
    pub const NEVER: Halt = Halt::Host(false);

    /// The address a GPU kernel reads; 0 never halts.
    pub fn device_word(self) -> u64 {
        match self {
            Halt::Device(word) => word,
            Halt::Host(false) => 0,
            Halt::Host(true) => panic!("a halted update must not be launched"),
        }
    }
}

/// An epoch's training totals (loss, correct predictions, the first
/// non-finite loss) where the steps run: on the host, or in device memory,
/// read once per epoch so that no step waits for the GPU.
pub enum StepTotals {
    Host(EpochTotals),
    Gpu(&'static Gpu, DeviceTotals),
}

impl StepTotals {
    pub fn new(backend: Backend) -> Self {
        match backend {
            Backend::Cpu => StepTotals::Host(EpochTotals::default()),
            Backend::Gpu(gpu) => StepTotals::Gpu(gpu, DeviceTotals::new(gpu)),
        }
    }

    /// Adds a step: its mean `loss` (a scalar) and how many rows' largest
    /// logit is the label.
    pub fn record<T: Float>(&mut self, logits: &Tensor<T>, labels: &Labels, loss: &Tensor<T>) {
        match (self, labels) {
            (StepTotals::Host(totals), Labels::Host(l)) => {
                totals.record(loss.item().f64(), ops::loss::correct(logits, l) as u64)
            }
            (StepTotals::Gpu(gpu, totals), Labels::Gpu(l)) => cuda::loss::accumulate_step(gpu, logits, l, loss, totals),
            _ => panic!("step totals: logits and labels on different devices"),
        }
    }

    /// What the epoch's remaining updates must obey.
    pub fn halt(&self) -> Halt {
        match self {
            StepTotals::Host(totals) => Halt::Host(totals.first_bad_step != 0),
            StepTotals::Gpu(gpu, totals) => Halt::Device(totals.halted(gpu)),
        }
    }

    /// The totals, when reading them costs no wait (on the host).
    pub fn peek(&self) -> Option<EpochTotals> {
        match self {
            StepTotals::Host(totals) => Some(*totals),
            StepTotals::Gpu(..) => None,
        }
    }

    /// The totals as of a recent step, for a progress display: on the host
    /// the current ones; on the GPU those of an asynchronous copy, once one
    /// has arrived ([`DeviceTotals::glance`]). Never waits.
    pub fn glance(&mut self) -> Option<EpochTotals> {
        match self {
            StepTotals::Host(totals) => Some(*totals),
            StepTotals::Gpu(gpu, totals) => totals.glance(gpu),
        }
    }

    /// The totals so far; on the GPU this waits for it.
    pub fn read(&self) -> EpochTotals {
        match self {
            StepTotals::Host(totals) => *totals,
            StepTotals::Gpu(gpu, totals) => totals.read(gpu),
        }
    }

    /// Zero, for the next epoch.
    pub fn reset(&mut self) {
        match self {
            StepTotals::Host(totals) => *totals = EpochTotals::default(),
            StepTotals::Gpu(gpu, totals) => totals.reset(gpu),
        }
    }
}
