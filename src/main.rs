//! The `cifar-kern` command line: train, evaluate and use the tutorial's
//! four CIFAR-10 classifiers. Logs and progress go to stderr; results (and
//! `--json` output) to stdout.

use anyhow::{bail, Context, Result};
use cifar_kern::checkpoint;
use cifar_kern::data::{self, normalize_into, Split, CLASS_NAMES, IMAGE_BYTES, IMAGE_SIZE};
use cifar_kern::device::{Device, Placement};
use cifar_kern::evaluate::{self, accuracy};
use cifar_kern::models::{ModelKind, ModelState};
use cifar_kern::tensor::Tensor;
use cifar_kern::train::{self, load_data, RunDir, TrainConfig};
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
        model: ModelKind,
        /// Our safetensors checkpoint or a tutorial Flax .ckpt.
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        #[arg(long, value_enum, default_value_t = SplitChoice::Both)]
        split: SplitChoice,
        #[arg(long, value_enum, default_value_t = Device::Auto)]
        device: Device,
        /// Print one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Class probabilities for PNG or JPEG images (resized to 32x32 if needed).
    Predict {
        model: ModelKind,
        #[arg(long)]
        checkpoint: PathBuf,
        /// Print one JSON array on stdout.
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Convert a tutorial Flax checkpoint to our safetensors format.
    ImportFlax {
        model: ModelKind,
        checkpoint: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Download and unpack CIFAR-10 (MD5-checked).
    Download {
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
    },
    /// The tutorial's results table for every finished run in the out-dir.
    Table {
        #[arg(long, default_value = "checkpoints")]
        out_dir: PathBuf,
    },
    /// Show the backends this binary can use.
    Info,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SplitChoice {
    Val,
    Test,
    Both,
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Train(config) => {
            let results = train::train(&config)?;
            println!(
                "{}: val accuracy {:.2}%, test accuracy {:.2}%",
                config.model,
                100.0 * results.val_accuracy,
                100.0 * results.test_accuracy
            );
            Ok(())
        }
        Command::Eval {
            model,
            checkpoint,
            data_dir,
            split,
            device,
            json,
        } => {
            let placement = device.resolve()?;
            eval(model, &checkpoint, &data_dir, split, json, placement)
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
        Command::Table { out_dir } => table(&out_dir),
        Command::Info => {
            println!("cpu: {} threads (rayon)", rayon::current_num_threads());
            let modules: Vec<&str> = cifar_kern::cuda::PTX_MODULES.iter().map(|(n, _)| *n).collect();
            println!("embedded PTX modules: {modules:?}");
            match cifar_kern::cuda::unavailable_reason() {
                None => println!("cuda: available (--device auto will use it)"),
                Some(why) => println!("cuda: unavailable ({why})"),
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
    placement: Placement,
) -> Result<()> {
    let (state, _) = evaluate::load_model(model, checkpoint)?;
    let state = state.map(|t| placement.place(t.clone()));
    let data = load_data(data_dir, true)?;
    let mut out = serde_json::Map::new();
    if split != SplitChoice::Test {
        let started = Instant::now();
        let acc = accuracy(model, &state, &data.train, &Split::tutorial().val);
        eprintln!(
            "validation: {:.2}% ({:.1} s)",
            100.0 * acc,
            started.elapsed().as_secs_f64()
        );
        out.insert("val_accuracy".into(), json!(acc));
    }
    if split != SplitChoice::Val {
        let started = Instant::now();
        let all: Vec<usize> = (0..data.test.len()).collect();
        let acc = accuracy(model, &state, &data.test, &all);
        eprintln!("test: {:.2}% ({:.1} s)", 100.0 * acc, started.elapsed().as_secs_f64());
        out.insert("test_accuracy".into(), json!(acc));
    }
    if json {
        println!("{}", serde_json::Value::Object(out));
    } else {
        for (k, v) in out {
            println!("{model} {k}: {:.2}%", 100.0 * v.as_f64().unwrap_or(f64::NAN));
        }
    }
    Ok(())
}

/// Decodes an image file to 32x32 RGB bytes (HWC), resizing bilinearly if needed.
fn read_image(path: &Path) -> Result<Vec<u8>> {
    let image = image::open(path)
        .with_context(|| format!("cannot read image {}", path.display()))?
        .to_rgb8();
    let size = IMAGE_SIZE as u32;
    let image = if image.dimensions() == (size, size) {
        image
    } else {
        image::imageops::resize(&image, size, size, image::imageops::FilterType::Triangle)
    };
    Ok(image.into_raw())
}

fn predict(model: ModelKind, checkpoint: &Path, json: bool, paths: &[PathBuf]) -> Result<()> {
    let (state, _) = evaluate::load_model(model, checkpoint)?;
    let mut pixels = vec![0f32; paths.len() * IMAGE_BYTES];
    for (path, out) in paths.iter().zip(pixels.chunks_exact_mut(IMAGE_BYTES)) {
        normalize_into(&read_image(path)?, out);
    }
    let images = Tensor::new(&[paths.len(), IMAGE_SIZE, IMAGE_SIZE, 3], pixels);
    let logits = evaluate::logits(model, &state, images);
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

fn table(out_dir: &Path) -> Result<()> {
    let mut rows = Vec::new();
    for model in ModelKind::ALL {
        let path = RunDir::new(out_dir, model).results();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let r: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
        let pct = |key: &str| {
            r[key]
                .as_f64()
                .map_or("?".to_string(), |v| format!("{:.2}%", 100.0 * v))
        };
        let params = r["num_params"].as_u64().unwrap_or(0);
        let params = format!("{},{:03}", params / 1000, params % 1000);
        rows.push(format!(
            "| {:<12} | {:<12} | {:<13} | {:<14} |",
            model.name(),
            pct("val_accuracy"),
            pct("test_accuracy"),
            params
        ));
    }
    if rows.is_empty() {
        bail!(
            "no finished run in {}: train one with `cifar-kern train MODEL`",
            out_dir.display()
        );
    }
    println!(
        "| {:<12} | {:<12} | {:<13} | {:<14} |",
        "Model", "Val Accuracy", "Test Accuracy", "Num Parameters"
    );
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(14),
        "-".repeat(14),
        "-".repeat(15),
        "-".repeat(16)
    );
    for row in rows {
        println!("{row}");
    }
    Ok(())
}
