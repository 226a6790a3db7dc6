//! The `cifar-kern` command line: train, evaluate and use the tutorial's
//! four CIFAR-10 classifiers. Logs and progress go to stderr; results (and
//! `--json` output) to stdout.

use anyhow::{bail, Context, Result};
use cifar_kern::backend::Backend;
use cifar_kern::checkpoint;
use cifar_kern::data::{self, normalize_into, Split, CLASS_NAMES, IMAGE_BYTES, IMAGE_SIZE};
use cifar_kern::device::Device;
use cifar_kern::evaluate::{self, accuracy};
use cifar_kern::failure;
use cifar_kern::layers::Math;
use cifar_kern::models::{ModelKind, ModelState};
use cifar_kern::pictures::augment_grid::augment_grid;
use cifar_kern::pictures::{curves, save_png};
use cifar_kern::runs::{self, RunRecord, TableFormat};
use cifar_kern::tensor::Tensor;
use cifar_kern::train::{self, load_data, TrainConfig};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "cifar-kern",
    version,
    about = "The CIFAR-10 classifiers of the UvA tutorial 5 on a hand-written engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model with the tutorial's recipe (or evaluate a finished run).
    Train(TrainConfig),
    /// Accuracy of a checkpoint on the validation split and/or the test set.
    Eval {
        /// googlenet, resnet, preactresnet or densenet (any case).
        model: ModelKind,
        /// Our safetensors checkpoint or a tutorial Flax .ckpt.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Where CIFAR-10 is (`cifar-kern download` puts it there).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// The tutorial's 5,000 validation images, the 10,000 test images, or both.
        #[arg(long, value_enum, default_value_t = SplitChoice::Both)]
        split: SplitChoice,
        /// Where to compute.
        #[arg(long, value_enum, default_value_t = Device::Auto)]
        device: Device,
        /// How the GPU multiplies in convolutions: fp32 (exact, CUDA cores; the
        /// tutorial's checkpoints score its table) or tf32 (tensor cores)
        /// [default: fp32]. The CPU always computes in exact fp32.
        #[arg(long, value_parser = train::math_parser())]
        math: Option<Math>,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Class probabilities for PNG or JPEG images (resized to 32x32 if needed).
    Predict {
        /// googlenet, resnet, preactresnet or densenet (any case).
        model: ModelKind,
        /// Our safetensors checkpoint or a tutorial Flax .ckpt.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Print one JSON array on stdout.
        #[arg(long)]
        json: bool,
        /// PNG or JPEG files.
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Convert a tutorial Flax checkpoint to our safetensors format.
    ImportFlax {
        /// googlenet, resnet, preactresnet or densenet (any case).
        model: ModelKind,
        /// The tutorial's Flax checkpoint (e.g. ResNet.ckpt).
        checkpoint: PathBuf,
        /// The safetensors file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Download and unpack CIFAR-10 (MD5-checked).
    Download {
        /// The folder to put it in.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
    },
    /// The tutorial's results table for every finished run in the out-dir,
    /// with each run's training time and speed.
    Table {
        /// The folder `train --out-dir` wrote the runs to.
        #[arg(long, default_value = "checkpoints")]
        out_dir: PathBuf,
        /// markdown (the tutorial's table), csv, or json (each run's
        /// results.json with train_seconds and images_per_second added).
        #[arg(long, value_enum, default_value_t = TableFormat::Markdown)]
        format: TableFormat,
    },
    /// Draw the training curves as PNG: <out-dir>/<Model>/curves.png for every
    /// run, and <out-dir>/val_accuracy.png comparing the finished ones.
    Plot {
        /// The folder `train --out-dir` wrote the runs to.
        #[arg(long, default_value = "checkpoints")]
        out_dir: PathBuf,
    },
    /// The tutorial's picture of the augmentation: the first COUNT images of the
    /// training split, augmented as training draws them (top row) above the
    /// originals (bottom row). The PNG is COUNT x (32 x SCALE + 2) + 2 pixels
    /// wide and 2 x (32 x SCALE + 2) + 2 high.
    AugmentPreview {
        /// Where CIFAR-10 is (`cifar-kern download` puts it there).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// The PNG file to write.
        #[arg(long, default_value = "augment-preview.png")]
        out: PathBuf,
        /// Images to show (one column each).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
        count: u32,
        /// The training epoch whose augmentation to draw (0-based, as the loader counts).
        #[arg(long, default_value_t = 0)]
        epoch: usize,
        /// The training seed whose augmentation to draw.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Enlargement of each image (nearest neighbour).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=32))]
        scale: u32,
        /// Fail instead of downloading CIFAR-10 when it is missing.
        #[arg(long)]
        no_download: bool,
    },
    /// Show the backends this binary can use.
    Info,
    /// Time training steps (CUDA graph replayed and eager), eval batches and
    /// every conv shape of the networks on the GPU, in TF32 and fp32
    /// (`--json` for benches/peers/peers.py --ours); `--capture-safe`
    /// checks instead that steps after the first allocate and wait for nothing.
    Bench(cifar_kern::bench::BenchArgs),
    /// Time every tensor-core variant of every conv shape of the four
    /// networks on this GPU and write the fastest to the conv tile table.
    Tune(cifar_kern::tune::TuneArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SplitChoice {
    Val,
    Test,
    Both,
}

fn main() -> ExitCode {
    end_quietly_on_closed_pipe();
    // A GPU failure outside a training step (loading, evaluating, saving)
    // ends the command as an error too (`cifar_kern::failure`).
    match failure::catch(|| run(Cli::parse().command)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Rust ignores SIGPIPE, so that printing into a closed pipe
/// (`cifar-kern train ... 2>&1 | head -3`) is an error, and `println!`
/// panics on it (exit status 101). Restore the default, as command-line
/// tools have it: the process ends quietly, killed by the signal. Sockets are
/// unaffected: std sends on them with MSG_NOSIGNAL.
fn end_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called first in main, before any other thread exists; SIG_DFL
    // is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Train(config) => {
            cifar_kern::interrupt::install().context("cannot take over Ctrl-C")?;
            let results = train::train(&config)?;
            println!(
                "{}: val accuracy {:.2}%, test accuracy {:.2}%{}",
                config.model,
                100.0 * results.val_accuracy,
                100.0 * results.test_accuracy,
                results.partial_note().map(|n| format!(" ({n})")).unwrap_or_default()
            );
            Ok(())
        }
        Command::Eval {
            model,
            checkpoint,
            data_dir,
            split,
            device,
            math,
            json,
        } => {
            let backend = device.resolve()?;
            let math = evaluate::effective_math(math, Math::Fp32, backend);
            eval(model, &checkpoint, &data_dir, split, json, backend, math)
        }
        Command::Predict {
            model,
            checkpoint,
            json,
            images,
        } => predict(model, &checkpoint, json, &images),
        Command::ImportFlax { model, checkpoint, out } => {
            let tensors = checkpoint::read_flax_msgpack(&checkpoint)?;
            let state = ModelState::from_named(model, &tensors)
                .map_err(|e| anyhow::anyhow!("{}: {e}", checkpoint.display()))?;
            let named = state.named_tensors().map(|(k, v)| (k, v.clone())).collect();
            let meta = BTreeMap::from([
                ("model".to_string(), model.name().to_string()),
                ("source".to_string(), checkpoint.display().to_string()),
            ]);
            checkpoint::save(&out, &named, &meta)?;
            println!("wrote {} ({model}, {} parameters)", out.display(), state.num_params());
            Ok(())
        }
        Command::Download { data_dir } => {
            let dir = data::download(&data_dir)?;
            println!("CIFAR-10 is in {}", dir.display());
            Ok(())
        }
        Command::Table { out_dir, format } => table(&out_dir, format),
        Command::Plot { out_dir } => {
            for path in curves::write_all(&out_dir)? {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::AugmentPreview {
            data_dir,
            out,
            count,
            epoch,
            seed,
            scale,
            no_download,
        } => {
            let data = load_data(&data_dir, no_download)?;
            let indices = &Split::tutorial().train[..count as usize];
            let grid = augment_grid(&data.train, indices, seed, epoch, scale);
            save_png(&out, &grid)?;
            println!(
                "wrote {} ({}x{} pixels: training images {indices:?}, epoch {epoch}, seed {seed}; augmented above, originals below)",
                out.display(),
                grid.width(),
                grid.height()
            );
            Ok(())
        }
        Command::Bench(args) if args.capture_safe => cifar_kern::bench::run_capture_safe(&args),
        Command::Bench(args) => cifar_kern::bench::run(&args),
        Command::Tune(args) => cifar_kern::tune::run(&args),
        Command::Info => {
            println!("cpu: {} threads (rayon)", rayon::current_num_threads());
            let modules: Vec<&str> = cifar_kern::cuda::PTX_MODULES.iter().map(|(n, _)| *n).collect();
            println!("embedded PTX modules: {modules:?}");
            match cifar_kern::cuda::device_summary() {
                Ok(gpu) => println!("cuda: {gpu} (--device auto will use it)"),
                Err(why) => println!("cuda: unavailable ({why})"),
            }
            Ok(())
        }
    }
}

fn eval(
    model: ModelKind,
    checkpoint: &Path,
    data_dir: &Path,
    split: SplitChoice,
    json: bool,
    backend: Backend,
    math: Math,
) -> Result<()> {
    let (state, _) = evaluate::load_model(model, checkpoint)?;
    let state = state.map(|t| backend.place(t.clone()));
    let data = load_data(data_dir, true)?;
    // (JSON key, label, accuracy), validation first as the tutorial's table has it.
    let mut results = Vec::new();
    if split != SplitChoice::Test {
        let started = Instant::now();
        let acc = accuracy(model, &state, &data.train, &Split::tutorial().val, math);
        eprintln!(
            "validation: {:.2}% ({:.1} s)",
            100.0 * acc,
            started.elapsed().as_secs_f64()
        );
        results.push(("val_accuracy", "validation accuracy", acc));
    }
    if split != SplitChoice::Val {
        let started = Instant::now();
        let all: Vec<usize> = (0..data.test.len()).collect();
        let acc = accuracy(model, &state, &data.test, &all, math);
        eprintln!("test: {:.2}% ({:.1} s)", 100.0 * acc, started.elapsed().as_secs_f64());
        results.push(("test_accuracy", "test accuracy", acc));
    }
    if json {
        let object = results.iter().map(|&(key, _, acc)| (key.to_string(), json!(acc)));
        println!("{}", serde_json::Value::Object(object.collect()));
    } else {
        for (_, label, acc) in results {
            println!("{model} {label}: {:.2}%", 100.0 * acc);
        }
    }
    Ok(())
}

fn predict(model: ModelKind, checkpoint: &Path, json: bool, paths: &[PathBuf]) -> Result<()> {
    let (state, _) = evaluate::load_model(model, checkpoint)?;
    let mut pixels = vec![0f32; paths.len() * IMAGE_BYTES];
    for (path, out) in paths.iter().zip(pixels.chunks_exact_mut(IMAGE_BYTES)) {
        normalize_into(&data::read_image(path)?, out);
    }
    let images = Tensor::new(&[paths.len(), IMAGE_SIZE, IMAGE_SIZE, 3], pixels);
    // The state stays on the host, which always computes in exact fp32.
    let logits = evaluate::logits(model, &state, images, Math::Fp32);
    let mut report = Vec::new();
    for (path, row) in paths.iter().zip(logits.data().chunks(CLASS_NAMES.len())) {
        let best = (0..row.len()).fold(0, |b, j| if row[j] > row[b] { j } else { b });
        let max = row[best];
        let total: f32 = row.iter().map(|v| (v - max).exp()).sum();
        if json {
            report.push(json!({ "path": path.display().to_string(), "logits": row, "class": CLASS_NAMES[best] }));
        } else {
            println!("{}: {} ({:.1}%)", path.display(), CLASS_NAMES[best], 100.0 / total);
        }
    }
    if json {
        println!("{}", serde_json::Value::Array(report));
    }
    Ok(())
}

fn table(out_dir: &Path, format: TableFormat) -> Result<()> {
    let runs = RunRecord::read_all(out_dir)?;
    if runs.iter().all(|r| r.results.is_none()) {
        bail!(
            "no finished run in {}: train one with `cifar-kern train MODEL`",
            out_dir.display()
        );
    }
    print!("{}", runs::table(&runs, format));
    Ok(())
}
