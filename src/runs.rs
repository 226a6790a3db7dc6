//! The records of finished and running runs, read back for `table` and
//! `plot`: `results.json` (written when a run finishes) and `metrics.jsonl`
//! (one line per epoch trained).
//!
//! `--resume` cuts `metrics.jsonl` back to the epochs its checkpoint covers
//! and appends from there, so the file of a resumed run holds each epoch once,
//! whichever session trained it: its training time is the sum over the file.
//! Should an epoch still appear twice (a file edited by hand), its last line
//! counts.
//!
//! [`RunDir`] names a run's files: `train` writes them, `table` and `plot`
//! read them (it lives here, below `train` and `pictures`, so no import
//! circle joins them).

use crate::data::cifar::RECORDS_PER_FILE as NUM_TEST_IMAGES;
use crate::data::split::NUM_VAL_IMAGES;
use crate::models::ModelKind;
use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// The files of one model's run.
pub struct RunDir(PathBuf);

impl RunDir {
    pub fn new(out_dir: &Path, model: ModelKind) -> Self {
        RunDir(out_dir.join(model.name()))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn best(&self) -> PathBuf {
        self.0.join("best.safetensors")
    }
    pub fn last(&self) -> PathBuf {
        self.0.join("last.safetensors")
    }
    pub fn results(&self) -> PathBuf {
        self.0.join("results.json")
    }
    pub fn metrics(&self) -> PathBuf {
        self.0.join("metrics.jsonl")
    }
    /// The run's training curves (`cifar-kern plot`).
    pub fn curves(&self) -> PathBuf {
        self.0.join("curves.png")
    }
    /// What `train` locks while it runs (it writes its process id there).
    pub fn lock_file(&self) -> PathBuf {
        self.0.join(".train.lock")
    }
}

/// One line of `metrics.jsonl`: what an epoch of training logged.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochMetrics {
    /// 1-based: the epochs completed after this one.
    pub epoch: usize,
    /// The learning rate at the epoch's first step.
    pub lr: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    /// Validation accuracy, on the epochs that validated.
    pub val_acc: Option<f64>,
    /// Time in the training steps (validation and checkpoints excluded).
    pub train_seconds: f64,
    pub images_per_second: f64,
}

/// What a run's folder records.
#[derive(Clone, Debug)]
pub struct RunRecord {
    pub model: ModelKind,
    /// The epochs trained so far, in order.
    pub epochs: Vec<EpochMetrics>,
    /// `results.json`, once the run has finished.
    pub results: Option<Map<String, Value>>,
}

impl RunRecord {
    /// The run of `model` in `out_dir`, or `None` when it has logged nothing.
    pub fn read(out_dir: &Path, model: ModelKind) -> Result<Option<Self>> {
        let run = RunDir::new(out_dir, model);
        let results = match read_if_present(&run.results())? {
            None => None,
            Some(text) => match serde_json::from_str(&text) {
                Ok(Value::Object(map)) => Some(map),
                _ => bail!("{} is not a JSON object", run.results().display()),
            },
        };
        let epochs = match read_if_present(&run.metrics())? {
            None => Vec::new(),
            Some(text) => parse_metrics(&text).with_context(|| format!("{}", run.metrics().display()))?,
        };
        Ok((results.is_some() || !epochs.is_empty()).then_some(RunRecord { model, epochs, results }))
    }

    /// Every model's run in `out_dir`, in the tutorial's order of models.
    pub fn read_all(out_dir: &Path) -> Result<Vec<Self>> {
        let mut runs = Vec::new();
        for model in ModelKind::ALL {
            runs.extend(Self::read(out_dir, model)?);
        }
        Ok(runs)
    }

    /// A number of `results.json`.
    fn result(&self, key: &str) -> Option<&Value> {
        self.results.as_ref().and_then(|r| r.get(key)).filter(|v| !v.is_null())
    }

    /// `(validation, test)` images the accuracies were measured on: fewer
    /// than the splits hold when `--limit-eval` cut them short. (A
    /// `results.json` that predates `val_images` and `test_images` says only
    /// its `limit_eval`.)
    pub fn evaluated_images(&self) -> (u64, u64) {
        let full = (NUM_VAL_IMAGES as u64, NUM_TEST_IMAGES as u64);
        let images = |key: &str| self.result(key).and_then(Value::as_u64);
        match (images("val_images"), images("test_images"), images("limit_eval")) {
            (Some(val), Some(test), _) => (val, test),
            (_, _, Some(limit)) => (limit.min(full.0), limit.min(full.1)),
            _ => full,
        }
    }

    /// [`Self::evaluated_images`] when they are not whole splits: the
    /// accuracies are then partial, not comparable with the tutorial's.
    pub fn partial_evaluation(&self) -> Option<(u64, u64)> {
        let (val, test) = self.evaluated_images();
        (val < NUM_VAL_IMAGES as u64 || test < NUM_TEST_IMAGES as u64).then_some((val, test))
    }

    /// " (partial: N validation / M test images)" after a partial evaluation's
    /// accuracies, as `train` prints it; else nothing.
    pub fn partial_mark(&self) -> String {
        self.partial_evaluation()
            .map(|(val, test)| format!(" (partial: {val} validation / {test} test images)"))
            .unwrap_or_default()
    }

    /// Seconds spent in training steps, summed over every epoch.
    pub fn train_seconds(&self) -> Option<f64> {
        (!self.epochs.is_empty()).then(|| self.epochs.iter().map(|e| e.train_seconds).sum())
    }

    /// Training images per second over the whole run.
    pub fn images_per_second(&self) -> Option<f64> {
        let images: f64 = self.epochs.iter().map(|e| e.images_per_second * e.train_seconds).sum();
        self.train_seconds().filter(|&s| s > 0.0).map(|s| images / s)
    }
}

/// Reads `path`, or `None` when it does not exist.
fn read_if_present(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The epochs of a `metrics.jsonl`, in order, the last line of each.
fn parse_metrics(text: &str) -> Result<Vec<EpochMetrics>> {
    let mut epochs = BTreeMap::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let parsed = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| epoch_metrics(&v))
            .with_context(|| format!("line {} is not an epoch's metrics", n + 1))?;
        epochs.insert(parsed.epoch, parsed);
    }
    Ok(epochs.into_values().collect())
}

fn epoch_metrics(v: &Value) -> Option<EpochMetrics> {
    let number = |key: &str| v[key].as_f64();
    Some(EpochMetrics {
        epoch: usize::try_from(v["epoch"].as_u64()?).ok()?,
        lr: number("lr")?,
        train_loss: number("train_loss")?,
        train_acc: number("train_acc")?,
        val_acc: number("val_acc"),
        train_seconds: number("train_seconds")?,
        images_per_second: number("images_per_second")?,
    })
}

/// `cifar-kern table --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TableFormat {
    Markdown,
    Csv,
    Json,
}

/// The tutorial's results table (Model, Val Accuracy, Test Accuracy, Num
/// Parameters) of the finished `runs`, with their training time and speed.
/// JSON lists each run's `results.json` with `train_seconds` and
/// `images_per_second` added; CSV has the same numbers as columns.
pub fn table(runs: &[RunRecord], format: TableFormat) -> String {
    let finished: Vec<&RunRecord> = runs.iter().filter(|r| r.results.is_some()).collect();
    match format {
        TableFormat::Markdown => markdown(&finished),
        TableFormat::Csv => csv(&finished),
        TableFormat::Json => {
            let rows: Vec<Value> = finished
                .iter()
                .map(|run| {
                    let mut row = run.results.clone().unwrap_or_default();
                    row.insert("train_seconds".into(), json!(run.train_seconds()));
                    row.insert("images_per_second".into(), json!(run.images_per_second()));
                    Value::Object(row)
                })
                .collect();
            format!("{:#}\n", Value::Array(rows))
        }
    }
}

const PARTIAL_MARK: &str = "†";

const WIDTHS: [usize; 6] = [12, 12, 13, 14, 13, 8];

/// One line of the Markdown table, its cells padded to [`WIDTHS`].
fn markdown_row(cells: [&str; 6]) -> String {
    let cells: Vec<String> = cells
        .iter()
        .zip(WIDTHS)
        .map(|(cell, width)| format!(" {cell:<width$} "))
        .collect();
    format!("|{}|\n", cells.join("|"))
}

fn markdown(runs: &[&RunRecord]) -> String {
    let mut out = markdown_row([
        "Model",
        "Val Accuracy",
        "Test Accuracy",
        "Num Parameters",
        "Training Time",
        "Images/s",
    ]);
    let dashes: Vec<String> = WIDTHS.iter().map(|w| "-".repeat(w + 2)).collect();
    out.push_str(&format!("|{}|\n", dashes.join("|")));
    for run in runs {
        let mark = if run.partial_evaluation().is_some() {
            PARTIAL_MARK
        } else {
            ""
        };
        let pct = |key: &str| {
            run.result(key)
                .and_then(Value::as_f64)
                .map_or("?".to_string(), |v| format!("{:.2}%{mark}", 100.0 * v))
        };
        let params = run
            .result("num_params")
            .and_then(Value::as_u64)
            .map_or("?".to_string(), thousands);
        let time = run.train_seconds().map_or("?".to_string(), duration);
        let speed = run.images_per_second().map_or("?".to_string(), |v| format!("{v:.0}"));
        out.push_str(&markdown_row([
            run.model.name(),
            &pct("val_accuracy"),
            &pct("test_accuracy"),
            &params,
            &time,
            &speed,
        ]));
    }
    for run in runs {
        if let Some((val, test)) = run.partial_evaluation() {
            let line = format!(
                "{PARTIAL_MARK} {}: partial evaluation, on {val} validation / {test} test images",
                run.model
            );
            writeln!(out, "\n{line} (--limit-eval)").expect("writing to a String");
        }
    }
    out
}

fn csv(runs: &[&RunRecord]) -> String {
    let mut out = String::from(
        "model,val_accuracy,test_accuracy,num_params,train_seconds,images_per_second,val_images,test_images\n",
    );
    let cell = |v: Option<String>| v.unwrap_or_default();
    for run in runs {
        let value = |key: &str| run.result(key).map(Value::to_string);
        let (val_images, test_images) = run.evaluated_images();
        writeln!(
            out,
            "{},{},{},{},{},{},{},{}",
            run.model.name(),
            cell(value("val_accuracy")),
            cell(value("test_accuracy")),
            cell(value("num_params")),
            cell(run.train_seconds().map(|s| s.to_string())),
            cell(run.images_per_second().map(|s| s.to_string())),
            val_images,
            test_images,
        )
        .expect("writing to a String");
    }
    out
}

/// 272378 -> "272,378".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A training time as the tutorial writes them: "45s", "7m51s", "1h02m03s".
fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_as_the_tutorial_does() {
        assert_eq!(thousands(272_378), "272,378");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(duration(44.6), "45s");
        assert_eq!(duration(471.0), "7m51s");
        assert_eq!(duration(3723.0), "1h02m03s");
    }

    #[test]
    fn metrics_keep_the_last_line_of_each_epoch() {
        let line = |epoch: usize, seconds: f64| {
            format!(
                r#"{{"epoch":{epoch},"step":1,"lr":0.1,"train_loss":2.0,"train_acc":0.1,"val_acc":null,"train_seconds":{seconds},"images_per_second":100.0}}"#
            )
        };
        let text = [line(1, 10.0), line(2, 20.0), line(2, 30.0), String::new()].join("\n");
        let epochs = parse_metrics(&text).unwrap();
        assert_eq!(epochs.len(), 2);
        assert_eq!(epochs[1].train_seconds, 30.0);
        let run = RunRecord {
            model: ModelKind::ResNet,
            epochs,
            results: None,
        };
        assert_eq!(run.train_seconds(), Some(40.0));
        assert_eq!(run.images_per_second(), Some(100.0));
        let err = parse_metrics("{\"epoch\": 1}\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 1"), "{err:#}");
    }
}
