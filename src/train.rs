//! The tutorial's training loop, as `cifar-kern train` runs it.
//!
//! A run of model M lives in `<out-dir>/<M>/`:
//! - `last.safetensors`: written atomically at every epoch end — weights,
//!   BatchNorm statistics, optimiser state, and in its metadata the epoch,
//!   step, seed, math (`--math`, fp32 on the CPU) and flags — so `--resume`
//!   continues an interrupted run (in the same math: another one refuses). The
//!   data order and augmentation of an epoch are functions of (seed, epoch),
//!   so no RNG state beyond the seed needs saving, and on the CPU a resumed
//!   run ends with exactly the weights of an uninterrupted one.
//! - `best.safetensors`: the checkpoint with the best validation accuracy so
//!   far (validation every 2 epochs and after the last; ties go to the later).
//! - `results.json`: written last; its presence marks a finished run, which
//!   `train` then only evaluates unless `--retrain` is given.
//! - `metrics.jsonl` (one line per epoch) and a TensorBoard event file;
//!   `curves.png`, drawn from the metrics when the run finishes.

use crate::autograd::{GradSlots, Tape, Var};
use crate::backend::{Backend, BatchPlacer, Halt, PlacedBatch, StepGraph, StepTotals};
use crate::checkpoint::{self, CheckpointMetadata, NamedTensors};
use crate::counters::{self, Event};
use crate::cuda::optim::{FlatParams, GpuOptimizer};
use crate::cuda::Gpu;
use crate::data::{self, Cifar10, DataError, Split, TrainLoader, TrainOptions};
use crate::device::Device;
use crate::evaluate::{self, accuracy};
use crate::failure::{self, GpuError};
use crate::interrupt;
use crate::kill_point::{self, Phase};
use crate::layers::loss::EpochTotals;
use crate::layers::Math;
use crate::models::{Ctx, ModelKind, ModelState};
use crate::ops::batchnorm::MOMENTUM;
use crate::optim::{Optimizer, OptimizerConfig, StateError};
use crate::pictures::curves;
use crate::runs::RunDir;
use crate::tensor::Tensor;
use crate::tensorboard::EventWriter;
use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything `cifar-kern train` is told (its command-line flags).
#[derive(Clone, Debug, clap::Args)]
pub struct TrainConfig {
    /// googlenet, resnet, preactresnet or densenet (any case).
    pub model: ModelKind,
    /// Epochs to train (the tutorial's: 200); the learning-rate schedule scales with them.
    #[arg(long, default_value_t = 200, value_parser = at_least_one, allow_negative_numbers = true)]
    pub epochs: usize,
    /// Images per training step (the tutorial's: 128).
    #[arg(long, default_value_t = 128, value_parser = at_least_one, allow_negative_numbers = true)]
    pub batch_size: usize,
    /// Where CIFAR-10 is, or is downloaded to.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Where the run's checkpoints and logs go (in <OUT_DIR>/<Model>/).
    #[arg(long, default_value = "checkpoints")]
    pub out_dir: PathBuf,
    /// Where to compute.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    /// How the GPU multiplies in convolutions: tf32 (tensor cores, as PyTorch
    /// and JAX train) or fp32 (exact, CUDA cores) [default: tf32]. The CPU
    /// always computes in exact fp32. Weights, optimiser state and BatchNorm
    /// statistics stay fp32; the checkpoints record the mode.
    #[arg(long, value_parser = math_parser())]
    pub math: Option<Math>,
    /// Seeds the initial weights, the data order and the augmentation.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Train on the first N images of the training split only.
    #[arg(long, value_parser = at_least_one, allow_negative_numbers = true)]
    pub limit_train: Option<usize>,
    /// Validate and test on the first N images of each split only (quick
    /// smoke runs; the accuracies are then marked partial).
    #[arg(long, value_parser = at_least_one, allow_negative_numbers = true)]
    pub limit_eval: Option<usize>,
    /// Augmentation threads (default: one per core).
    #[arg(long, value_parser = at_least_one, allow_negative_numbers = true)]
    pub workers: Option<usize>,
    /// Continue an interrupted run from its last epoch-end checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Train anew even if the out-dir holds a finished or unfinished run.
    #[arg(long)]
    pub retrain: bool,
    /// Fail instead of downloading CIFAR-10 when it is missing.
    #[arg(long)]
    pub no_download: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// On the GPU, run every step's kernels eagerly instead of replaying the
    /// step as one CUDA graph: the same kernels, the same results (the
    /// checkpoints do not record it), more launch overhead.
    #[arg(long)]
    pub no_graph: bool,
}

/// Parses a count flag. Negative numbers reach this parser (instead of
/// clap's tip to pass them after `--`, which then fails anyway) so that they
/// get the same one-line range error as 0.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<i128>() {
        Ok(n) if n < 1 => Err("must be at least 1".to_string()),
        _ => text
            .parse()
            .map_err(|e| format!("must be a whole number, at least 1 ({e})")),
    }
}

/// Parses `--math`, listing the modes in `--help` and in the error for
/// any other value.
pub fn math_parser() -> impl clap::builder::TypedValueParser<Value = Math> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Math::ALL.map(Math::name))
        .map(|name| name.parse::<Math>().expect("one of Math::ALL's names"))
}

/// What `train` computes in when `--math` is not given: TF32, as the peers
/// (PyTorch, JAX) train.
pub const TRAIN_MATH: Math = Math::Tf32;

/// The math of a run as its checkpoint `meta` records it. A checkpoint
/// without the key predates `--math`: every earlier version computed its
/// convolutions in exact fp32, so that is what it is.
fn checkpoint_math(path: &Path, meta: &CheckpointMetadata) -> Result<Math> {
    match meta.get("math") {
        None => Ok(Math::Fp32),
        Some(name) => name
            .parse()
            .map_err(|e| anyhow!("{}: metadata math = {name:?}: {e}", path.display())),
    }
}

impl TrainConfig {
    /// The images of a split that validation and testing use.
    fn eval_subset<'a>(&self, indices: &'a [usize]) -> &'a [usize] {
        &indices[..self.limit_eval.unwrap_or(indices.len()).min(indices.len())]
    }
}

/// The final numbers of a run (those of its best checkpoint).
#[derive(Clone, Debug, PartialEq)]
pub struct RunResults {
    pub val_accuracy: f64,
    pub test_accuracy: f64,
    pub num_params: usize,
    /// The images each accuracy was measured on.
    pub val_images: usize,
    pub test_images: usize,
    /// Whether `--limit-eval` left out images of either split, so that the
    /// accuracies are not comparable with the tutorial's.
    pub partial: bool,
}

impl RunResults {
    /// "partial: N validation / M test images", the mark the accuracies of a
    /// partial evaluation are printed with.
    pub fn partial_note(&self) -> Option<String> {
        self.partial.then(|| {
            format!(
                "partial: {} validation / {} test images",
                self.val_images, self.test_images
            )
        })
    }
}

/// Training's part of a run's folder ([`RunDir`] itself, its file names,
/// lives in `runs.rs`, below `train` and `pictures`).
impl RunDir {
    /// Takes the folder's lock (creating the folder), so a second `train`
    /// into it refuses at once instead of interleaving its writes with ours,
    /// and removes temp files that a killed run left. The lock lasts as long
    /// as the returned file is open; the kernel releases it when the process
    /// ends in any way (SIGKILL included), so it never goes stale.
    fn lock(&self) -> Result<File> {
        fs::create_dir_all(self.path()).with_context(|| format!("cannot create {}", self.path().display()))?;
        let path = self.lock_file();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                bail!(
                    "{} is in use by another `cifar-kern train` ({}): wait for it to end, or train into another --out-dir",
                    self.path().display(),
                    holder.trim()
                );
            }
            Err(TryLockError::Error(e)) => return Err(e).with_context(|| format!("cannot lock {}", path.display())),
        }
        file.set_len(0)?;
        write!(file, "process {}", std::process::id())?;
        checkpoint::remove_stale_temp_files(self.path())
            .with_context(|| format!("cannot clean up {}", self.path().display()))?;
        Ok(file)
    }

    /// Removes an earlier run's results and logs (metrics, TensorBoard
    /// events, curves), so a run started over (`--retrain`) logs from scratch.
    /// Checkpoints stay until the new run overwrites them.
    fn clear_logs(&self) -> Result<()> {
        let Ok(entries) = fs::read_dir(self.path()) else {
            return Ok(());
        };
        for entry in entries {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let log = [self.metrics(), self.results(), self.curves()].contains(&path);
            if log || name.starts_with("events.out.tfevents.") {
                fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
            }
        }
        Ok(())
    }
}

/// Reads CIFAR-10 from `data_dir`, downloading it first when it is absent
/// (unless `no_download`).
pub fn load_data(data_dir: &Path, no_download: bool) -> Result<Cifar10> {
    match Cifar10::load(data_dir) {
        Err(DataError::NotFound { .. }) if !no_download => {
            eprintln!("CIFAR-10 not found in {}: downloading it", data_dir.display());
            data::download(data_dir)?;
            Ok(Cifar10::load(data_dir)?)
        }
        other => Ok(other?),
    }
}

/// Where a run stands: what an epoch-end checkpoint restores.
struct Progress {
    /// Epochs completed.
    epoch: usize,
    /// Best validation accuracy so far and the epoch it was measured after.
    best: Option<(f64, usize)>,
}

/// Trains `config.model` (or evaluates a finished run) and returns the
/// validation and test accuracy of the best checkpoint.
pub fn train(config: &TrainConfig) -> Result<RunResults> {
    if config.resume && config.retrain {
        bail!("--resume continues a run and --retrain starts one over: pass only one of them");
    }
    if config.epochs == 0 || config.batch_size == 0 {
        bail!("--epochs and --batch-size must be at least 1");
    }
    let backend = config.device.resolve()?;
    let math = evaluate::effective_math(config.math, TRAIN_MATH, backend);
    let run = RunDir::new(&config.out_dir, config.model);
    let _lock = run.lock()?;
    if !config.retrain && run.results().exists() {
        eprintln!(
            "{} holds a finished {} run: evaluating its best checkpoint (pass --retrain to train anew)",
            run.path().display(),
            config.model
        );
        let data = load_data(&config.data_dir, config.no_download)?;
        return finish(config, &run, &data, backend, math);
    }
    if !config.resume && !config.retrain && run.last().exists() {
        bail!(
            "{} holds an unfinished {} run: pass --resume to continue it, or --retrain to start over",
            run.path().display(),
            config.model
        );
    }
    let data = load_data(&config.data_dir, config.no_download)?;
    let split = Split::tutorial();
    let train_images = Arc::new(data.train.clone());
    let options = TrainOptions {
        batch_size: config.batch_size,
        seed: config.seed,
        workers: config.workers.unwrap_or_else(rayon::current_num_threads).max(1),
        prefetch: 2,
        limit_train: config.limit_train,
    };
    let loader = TrainLoader::new(train_images.clone(), &split.train, options);
    let steps_per_epoch = loader.batches_per_epoch();
    if steps_per_epoch == 0 {
        bail!(
            "{} training images do not fill one batch of {}",
            loader.num_images(),
            config.batch_size
        );
    }
    let opt_config = OptimizerConfig::for_model(config.model, steps_per_epoch * config.epochs);

    let (mut state, mut optimizer, mut progress) = if config.resume {
        resume(config, &run, opt_config, backend, math)?
    } else {
        run.clear_logs()?;
        let mut state = ModelState::<f32>::init(config.model, config.seed).map(|t| backend.place(t.clone()));
        let optimizer = TrainOptimizer::new(backend, opt_config, &mut state.params);
        (state, optimizer, Progress { epoch: 0, best: None })
    };
    *interrupt::status() = interrupted_line(config, &run, progress.epoch);
    let mut totals = StepTotals::new(backend);
    let mut placer = BatchPlacer::new(backend, &loader);
    // From here on the GPU's allocations come from the step arena.
    let mut graph = StepGraph::new(backend, !config.no_graph);
    let mut events = EventWriter::create(run.path())?;
    eprintln!(
        "training {} ({} parameters) for {} of {} on {} images, in {math}",
        config.model,
        state.num_params(),
        count(config.epochs, "epoch"),
        count(steps_per_epoch, "step"),
        loader.num_images()
    );

    while progress.epoch < config.epochs {
        let epoch = progress.epoch; // 0-based index of the epoch being run
        kill_point::enter_epoch(epoch + 1);
        let (lr, steps_before) = (optimizer.learning_rate(), optimizer.step_count());
        totals.reset();
        let started = Instant::now();
        let counts_before = counters::snapshot();
        let bar = progress_bar(config, steps_per_epoch, epoch);
        let (mut seen, mut glanced, mut so_far) = (0, started, String::new());
        // Counted on the host: after a GPU failure the device cannot be asked.
        let stopped = |step_in_epoch: usize| {
            format!(
                "training stopped in epoch {}, step {}; the checkpoints in {} (after epoch {}) are kept",
                epoch + 1,
                steps_before + step_in_epoch,
                run.path().display(),
                progress.epoch
            )
        };
        for (step, batch) in (1..).zip(placer.epoch(&loader, epoch)) {
            train_step(
                config.model,
                math,
                &mut state,
                &mut optimizer,
                batch,
                &mut totals,
                &mut graph,
            )
            .with_context(|| stopped(step))?;
            seen += config.batch_size;
            let rate = seen as f64 / started.elapsed().as_secs_f64();
            // Loss and accuracy so far, glanced at without waiting (on the GPU
            // from a copy that arrives a little later) every 300 ms.
            if glanced.elapsed() >= Duration::from_millis(300) || totals.peek().is_some() {
                glanced = Instant::now();
                if let Some(t) = totals.glance().filter(|t| t.steps > 0) {
                    let loss = t.loss_sum / t.steps as f64;
                    let acc = t.correct as f64 / (t.steps as usize * config.batch_size) as f64;
                    so_far = format!("loss {loss:.4} acc {acc:.3} ");
                }
            }
            bar.set_message(format!("{so_far}{rate:.0} img/s"));
            bar.inc(1);
        }
        bar.finish_and_clear();
        let counts = counters::snapshot().since(&counts_before);
        let epoch_totals = totals.read();
        if let Some(bad) = epoch_totals.bad_loss() {
            return Err(anyhow!(bad_loss(bad))).with_context(|| stopped(epoch_totals.first_bad_step as usize));
        }
        let per_step = |event| counts.get(event) as f64 / steps_per_epoch as f64;
        let train_seconds = started.elapsed().as_secs_f64();
        progress.epoch += 1;

        let train_loss = epoch_totals.loss_sum / steps_per_epoch as f64;
        let train_acc = epoch_totals.correct as f64 / seen as f64;
        let validate = progress.epoch % 2 == 0 || progress.epoch == config.epochs;
        let val_acc = validate.then(|| {
            accuracy(
                config.model,
                &state,
                &train_images,
                config.eval_subset(&split.val),
                math,
            )
        });
        if let Some(acc) = val_acc {
            if progress.best.is_none_or(|(best, _)| acc >= best) {
                progress.best = Some((acc, progress.epoch));
                let mut meta = metadata(config, math, optimizer.step_count(), progress.epoch);
                meta.insert("val_accuracy".into(), acc.to_string());
                save(&run.best(), &state, None, meta).with_context(|| save_failed(&run, progress.epoch))?;
            }
        }
        let mut meta = metadata(config, math, optimizer.step_count(), progress.epoch);
        if let Some((best, best_epoch)) = progress.best {
            meta.insert("best_val_accuracy".into(), best.to_string());
            meta.insert("best_epoch".into(), best_epoch.to_string());
        }
        let line = json!({
            "epoch": progress.epoch, "step": optimizer.step_count(), "lr": lr,
            "train_loss": train_loss, "train_acc": train_acc, "val_acc": val_acc,
            "train_seconds": train_seconds, "images_per_second": seen as f64 / train_seconds,
            // What the runtime did per training step (src/counters.rs).
            "per_step": {
                "host_copies": per_step(Event::HostCopy), "device_copies": per_step(Event::DeviceCopy),
                "device_allocations": per_step(Event::DeviceAllocation),
                "host_syncs": per_step(Event::HostSync), "kernel_launches": per_step(Event::KernelLaunch),
            },
        });
        append_line(&run.metrics(), &line)?;
        let step = progress.epoch as u64;
        events.scalar("train/loss", train_loss, step)?;
        events.scalar("train/acc", train_acc, step)?;
        events.scalar("learning_rate", lr, step)?;
        if let Some(acc) = val_acc {
            events.scalar("val/acc", acc, step)?;
        }
        // The epoch's log lines go first: if the process dies before `last`
        // is replaced, `--resume` redoes the epoch and drops its lines.
        {
            // Ctrl-C waits until the checkpoint and the line that names it agree.
            let mut on_ctrl_c = interrupt::status();
            save(&run.last(), &state, Some(&optimizer), meta).with_context(|| save_failed(&run, progress.epoch))?;
            *on_ctrl_c = interrupted_line(config, &run, progress.epoch);
        }
        let val_text = val_acc
            .map(|a| format!(", val acc {:.2}%", 100.0 * a))
            .unwrap_or_default();
        eprintln!(
            "epoch {}/{}: train loss {train_loss:.4}, train acc {:.2}%{val_text} ({train_seconds:.1} s, {:.0} img/s)",
            progress.epoch,
            config.epochs,
            100.0 * train_acc,
            seen as f64 / train_seconds
        );
    }
    finish(config, &run, &data, backend, math)
}

/// The line Ctrl-C prints while `saved` epochs of the run are in its
/// epoch-end checkpoint.
fn interrupted_line(config: &TrainConfig, run: &RunDir, saved: usize) -> String {
    if saved == 0 {
        return format!(
            "interrupted in epoch 1 of {}, before this run saved a checkpoint: start it again with the same command",
            config.epochs
        );
    }
    let instead = if config.retrain { " instead of --retrain" } else { "" };
    format!(
        "interrupted: epoch {saved} of {} is saved in {}; run the same command with --resume{instead} to continue",
        config.epochs,
        run.last().display()
    )
}

/// "1 epoch", "2 epochs".
fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// The optimiser, where the parameters live. On the GPU it owns the flat
/// parameter and gradient buffers whose views the model's parameters are.
#[allow(clippy::large_enum_variant)] // one per run: its size does not matter
pub enum TrainOptimizer {
    Host(Optimizer<f32>),
    Gpu(&'static Gpu, GpuOptimizer<f32>, FlatParams<f32>),
}

impl TrainOptimizer {
    /// A fresh optimiser for `params`; on the GPU, `params` become views of
    /// its flat parameter buffer.
    pub fn new(backend: Backend, config: OptimizerConfig, params: &mut BTreeMap<String, Tensor<f32>>) -> Self {
        match backend {
            Backend::Cpu => TrainOptimizer::Host(Optimizer::new(config, params)),
            Backend::Gpu(gpu) => {
                let flat = FlatParams::adopt(gpu, params);
                TrainOptimizer::Gpu(gpu, GpuOptimizer::new(gpu, config, flat.layout().clone()), flat)
            }
        }
    }

    /// Where backward writes each parameter's gradient: its slot of the
    /// flat gradient buffer on the GPU; None on the CPU.
    pub fn grad_slots(&self) -> Option<Arc<GradSlots<f32>>> {
        match self {
            TrainOptimizer::Host(_) => None,
            TrainOptimizer::Gpu(_, _, flat) => Some(flat.grad_slots()),
        }
    }

    /// One update, unless `halt` says a loss of the epoch was not finite.
    /// On the GPU one launch updates the flat buffer that `params` view,
    /// from the gradients backward wrote into their slots.
    fn step(&mut self, params: &mut BTreeMap<String, Tensor<f32>>, grads: &BTreeMap<String, Tensor<f32>>, halt: Halt) {
        match (self, halt) {
            (_, Halt::Host(true)) => {}
            (TrainOptimizer::Host(opt), _) => opt.step(params, grads),
            (TrainOptimizer::Gpu(gpu, opt, flat), _) => {
                assert!(
                    flat.holds(params, grads),
                    "the parameters or gradients are not the optimizer's flat buffers' views"
                );
                let (flat_params, flat_grads) = flat.buffers();
                opt.step(gpu, flat_params, flat_grads, halt.device_word());
            }
        }
    }

    /// Updates applied so far.
    pub fn step_count(&self) -> usize {
        match self {
            TrainOptimizer::Host(opt) => opt.step_count(),
            TrainOptimizer::Gpu(gpu, opt, _) => opt.step_count(gpu),
        }
    }

    /// The learning rate of the next update.
    fn learning_rate(&self) -> f64 {
        match self {
            TrainOptimizer::Host(opt) => opt.learning_rate(),
            TrainOptimizer::Gpu(gpu, opt, _) => opt.learning_rate(gpu),
        }
    }

    /// The state as named host tensors, for a checkpoint.
    fn state_tensors(&self) -> BTreeMap<String, Tensor<f32>> {
        match self {
            TrainOptimizer::Host(opt) => opt.state_tensors(),
            TrainOptimizer::Gpu(gpu, opt, _) => opt.state_tensors(gpu),
        }
    }

    fn load_state(&mut self, tensors: &BTreeMap<String, Tensor<f32>>) -> Result<(), StateError> {
        match self {
            TrainOptimizer::Host(opt) => opt.load_state(tensors),
            TrainOptimizer::Gpu(gpu, opt, _) => opt.load_state(gpu, tensors),
        }
    }
}

/// One optimisation step on a batch already where the state lives: adds
/// its loss and correct predictions to `totals`. A non-finite loss changes
/// nothing, and no later update of the epoch does either (`totals` halts
/// them); on the CPU it is an error at once, on the GPU the epoch's end
/// finds it ([`bad_loss`]), so the host never waits for the GPU here.
///
/// Nothing of the state is copied: the forward reads the state's own
/// parameters (the tape shares them) and only collects BatchNorm's batch
/// statistics, so the state is untouched until the loss is recorded; then
/// the optimiser and the running-statistics update change it in place,
/// both guarded by the totals' halt.
///
/// A GPU failure (out of memory, a failed launch, a device fault) is an
/// error too; running out of memory names the batch size.
///
/// The convolutions, forward and backward, compute in `math` on the GPU
/// (the CPU always computes exactly).
///
/// `graph` decides how the step is issued (eagerly, captured, replayed: see
/// [`StepGraph`]); a replay runs none of the host code below, so that code
/// only enqueues GPU work whose every changing value is in device memory.
pub fn train_step(
    model: ModelKind,
    math: Math,
    state: &mut ModelState<f32>,
    optimizer: &mut TrainOptimizer,
    batch: PlacedBatch,
    totals: &mut StepTotals,
    graph: &mut StepGraph,
) -> Result<()> {
    let batch_size = batch.images.shape()[0];
    // A GPU failure anywhere below unwinds to here (`crate::failure`).
    let step = || -> Result<()> {
        // On the GPU backward writes every gradient into its slot of the
        // optimiser's flat gradient buffer.
        let tape = optimizer
            .grad_slots()
            .map_or_else(Tape::new, Tape::with_grad_slots)
            .with_math(math);
        let mut ctx = Ctx::new(&tape, state, true);
        let PlacedBatch { images, labels } = batch.clone();
        let logits = model.forward(&mut ctx, &Var::constant(images));
        let running = ctx.into_running_update();
        let loss = tape.cross_entropy(&logits, &labels);
        totals.record(logits.value(), &labels, loss.value());
        if let Some(bad) = totals.peek().as_ref().and_then(EpochTotals::bad_loss) {
            bail!(bad_loss(bad));
        }
        let all_grads = tape.backward(&loss);
        let grads: BTreeMap<String, _> = state
            .params
            .keys()
            .map(|name| {
                (
                    name.clone(),
                    all_grads.get(name).expect("every parameter gets a gradient").clone(),
                )
            })
            .collect();
        // Everything of the forward goes before the update: whatever still
        // shared a parameter would make the optimiser's in-place update copy it
        // (backward has consumed the closures that held them; this makes sure).
        drop((logits, loss, tape));
        let halt = totals.halt();
        optimizer.step(&mut state.params, &grads, halt);
        state.update_running(running, halt);
        Ok(())
    };
    failure::catch(|| graph.run(batch_size, step)).map_err(|e| gpu_failed(e, batch_size))??;
    kill_point::reached(Phase::Step);
    Ok(())
}

/// The error of a GPU failure in a training step.
fn gpu_failed(error: GpuError, batch_size: usize) -> anyhow::Error {
    if error.is_out_of_memory() {
        anyhow!(
            "out of GPU memory with --batch-size {batch_size} ({}): try a smaller batch",
            error.doing
        )
    } else {
        anyhow!(error)
    }
}

/// The error of a non-finite loss.
pub fn bad_loss(loss: f64) -> String {
    format!("the loss became {loss}: lower the learning rate, or check the input data")
}

fn progress_bar(config: &TrainConfig, steps: usize, epoch: usize) -> ProgressBar {
    if config.quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps as u64);
    let style = ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
        .expect("valid template")
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{}/{}", epoch + 1, config.epochs));
    bar
}

/// Checkpoint metadata every save carries; `math` is the run's effective
/// math (fp32 on the CPU, whatever `--math` asked).
fn metadata(config: &TrainConfig, math: Math, step: usize, epoch: usize) -> CheckpointMetadata {
    let mut meta = BTreeMap::from([
        ("model".to_string(), config.model.name().to_string()),
        ("math".to_string(), math.name().to_string()),
        ("epoch".to_string(), epoch.to_string()),
        ("step".to_string(), step.to_string()),
        ("seed".to_string(), config.seed.to_string()),
        ("epochs".to_string(), config.epochs.to_string()),
        ("batch_size".to_string(), config.batch_size.to_string()),
    ]);
    for (key, limit) in [("limit_train", config.limit_train), ("limit_eval", config.limit_eval)] {
        if let Some(n) = limit {
            meta.insert(key.into(), n.to_string());
        }
    }
    meta
}

fn save(
    path: &Path,
    state: &ModelState<f32>,
    optimizer: Option<&TrainOptimizer>,
    meta: CheckpointMetadata,
) -> Result<()> {
    let mut tensors: NamedTensors = state.named_tensors().map(|(k, v)| (k, v.to_host())).collect();
    if let Some(opt) = optimizer {
        tensors.extend(opt.state_tensors().into_iter().map(|(k, v)| (k, v.to_host())));
    }
    Ok(checkpoint::save(path, &tensors, &meta)?)
}

/// What a failed save at the end of `epoch` leaves, and how to go on: the
/// atomic writes left `last.safetensors` as it was after the epoch before.
fn save_failed(run: &RunDir, epoch: usize) -> String {
    match epoch - 1 {
        0 => "epoch 1 could not be saved and no checkpoint of this run exists yet: make room, then train again".into(),
        saved => format!(
            "epoch {epoch} could not be saved; {} still holds epoch {saved}: make room, then continue with --resume",
            run.last().display()
        ),
    }
}

/// Restores the state of an interrupted run from its epoch-end checkpoint.
fn resume(
    config: &TrainConfig,
    run: &RunDir,
    opt_config: OptimizerConfig,
    backend: Backend,
    math: Math,
) -> Result<(ModelState<f32>, TrainOptimizer, Progress)> {
    if !run.last().exists() {
        bail!(
            "nothing to resume: {} does not exist (run without --resume to start)",
            run.last().display()
        );
    }
    let (tensors, meta) = checkpoint::load(&run.last())?;
    let expected = metadata(config, math, 0, 0);
    for key in ["model", "seed", "epochs", "batch_size", "limit_train", "limit_eval"] {
        if meta.get(key) != expected.get(key) {
            bail!(
                "{} was written by a run with {key} = {}, but this one has {}: resume with the same flags",
                run.last().display(),
                meta.get(key).map_or("(none)", String::as_str),
                expected.get(key).map_or("(none)", String::as_str)
            );
        }
    }
    // One run, one math: a resumed run computes as it began.
    let trained = checkpoint_math(&run.last(), &meta)?;
    if trained != math {
        let last = run.last();
        let path = last.display();
        match backend {
            Backend::Cpu => bail!(
                "{path} was trained with --math {trained} on a GPU, but this run is on the CPU, which always computes \
                 in exact fp32: resume it on a GPU with --math {trained}, or start a new run with --retrain"
            ),
            Backend::Gpu(_) => bail!(
                "{path} was trained with --math {trained}, but this run asks for --math {math}: resume with --math \
                 {trained}, or start a new run with --retrain"
            ),
        }
    }
    let (state, _) = evaluate::load_model(config.model, &run.last())?;
    let mut state = state.map(|t| backend.place(t.clone()));
    let mut optimizer = TrainOptimizer::new(backend, opt_config, &mut state.params);
    optimizer
        .load_state(&tensors)
        .with_context(|| format!("{}", run.last().display()))?;
    let number = |key: &str| meta.get(key).and_then(|v| v.parse::<f64>().ok());
    let epoch = number("epoch").context("checkpoint metadata lacks the epoch")? as usize;
    let best = number("best_val_accuracy").zip(number("best_epoch").map(|e| e as usize));
    // Keep only the metrics of the epochs the checkpoint covers.
    if let Ok(text) = fs::read_to_string(run.metrics()) {
        let kept: String = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<Value>(l)
                    .ok()
                    .and_then(|v| v["epoch"].as_u64())
                    .is_some_and(|e| e as usize <= epoch)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        checkpoint::write_atomically(&run.metrics(), kept.as_bytes())
            .with_context(|| format!("cannot write {}", run.metrics().display()))?;
    }
    eprintln!(
        "resuming {} after epoch {epoch} of {}, in {math}",
        config.model, config.epochs
    );
    Ok((state, optimizer, Progress { epoch, best }))
}

fn append_line(path: &Path, value: &Value) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(file, "{value}")?;
    Ok(())
}

/// Evaluates the best checkpoint on validation and test, and records the
/// results (which marks the run finished).
fn finish(config: &TrainConfig, run: &RunDir, data: &Cifar10, backend: Backend, math: Math) -> Result<RunResults> {
    kill_point::enter_epoch(config.epochs + 1);
    let (state, meta) = evaluate::load_model(config.model, &run.best())?;
    let state = state.map(|t| backend.place(t.clone()));
    // The best checkpoint is evaluated in the math it was trained in (the
    // same as this session's, unless a finished run is only evaluated).
    let trained = checkpoint_math(&run.best(), &meta)?;
    if let (Backend::Gpu(_), true) = (backend, trained != math) {
        eprintln!(
            "{} was trained with --math {trained}: evaluating it so (pass --retrain to train anew with --math {math})",
            run.best().display()
        );
    }
    let split = Split::tutorial();
    let test_indices: Vec<usize> = (0..data.test.len()).collect();
    let (val, test) = (config.eval_subset(&split.val), config.eval_subset(&test_indices));
    let results = RunResults {
        val_accuracy: accuracy(config.model, &state, &data.train, val, trained),
        test_accuracy: accuracy(config.model, &state, &data.test, test, trained),
        num_params: state.num_params(),
        val_images: val.len(),
        test_images: test.len(),
        partial: val.len() < split.val.len() || test.len() < test_indices.len(),
    };
    let record = json!({
        "model": config.model.name(),
        "val_accuracy": results.val_accuracy,
        "test_accuracy": results.test_accuracy,
        "num_params": results.num_params,
        "math": trained.name(),
        "best_epoch": meta.get("epoch").and_then(|e| e.parse::<u64>().ok()),
        "limit_eval": config.limit_eval,
        "val_images": results.val_images,
        "test_images": results.test_images,
    });
    checkpoint::write_atomically(&run.results(), format!("{record:#}\n").as_bytes())
        .with_context(|| format!("cannot write {}", run.results().display()))?;
    let partial = results.partial_note().map(|n| format!("; {n}")).unwrap_or_default();
    eprintln!(
        "{}: validation accuracy {:.2}%, test accuracy {:.2}% (best checkpoint, {} parameters{partial})",
        config.model,
        100.0 * results.val_accuracy,
        100.0 * results.test_accuracy,
        results.num_params
    );
    let steps = meta.get("step").and_then(|s| s.parse().ok());
    if let Some(note) = steps.and_then(unsettled_statistics_note) {
        eprintln!("{note}");
    }
    // The run is finished and recorded: a figure that cannot be drawn is worth a warning, not a failure.
    match curves::write_all(&config.out_dir) {
        Ok(paths) => {
            let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            eprintln!("curves: {}", names.join(", "));
        }
        Err(e) => eprintln!("warning: the training curves were not drawn: {e:#}"),
    }
    Ok(results)
}

/// Training steps after which at most 1% of BatchNorm's running statistics
/// is still their initial value: the least n with MOMENTUM^n <= 1%, 459 for
/// the tutorial's 0.99.
pub fn steps_to_settle() -> usize {
    (0.01f64.ln() / MOMENTUM.ln()).ceil() as usize
}

/// The line `train` prints beside the final accuracies of a checkpoint that
/// trained only `steps` steps, fewer than [`steps_to_settle`]: evaluation
/// normalises with the running statistics, still largely their initial
/// values, so the validation and test accuracy understate the model (while
/// the training accuracy, which uses batch statistics, does not).
pub fn unsettled_statistics_note(steps: usize) -> Option<String> {
    let settle = steps_to_settle();
    (steps < settle).then(|| {
        let initial = 100.0 * MOMENTUM.powi(steps as i32);
        format!(
            "note: these accuracies understate the model: after {steps} steps, {initial:.0}% ({MOMENTUM}^{steps}) of \
             BatchNorm's running statistics, which evaluation uses, is still the initial value (below 1% from \
             {settle} steps on; the tutorial's momentum, not a bug)"
        )
    })
}
