//! Training curves as PNG, for a reader without TensorBoard: one figure per
//! run (`<out-dir>/<Model>/curves.png`: train loss; train and validation
//! accuracy; learning rate; against epoch) and one comparing the validation
//! accuracy of every finished run (`<out-dir>/val_accuracy.png`). They are
//! drawn from `metrics.jsonl`, the same numbers TensorBoard gets.
//!
//! Drawing uses plotters' bitmap backend with text through `ab_glyph` and a
//! font compiled into the binary (Noto Sans, Apache-2.0, from the
//! `ttf-noto-sans` crate): no system font is looked up and no display is
//! needed, so the figures come out the same on a bare CI machine. (plotters
//! 0.3.7's `ab_glyph` path places each glyph without its left side bearing,
//! so the letter spacing is a little uneven; the text stays legible.)

use super::save_png;
use crate::checkpoint::{CheckpointMetadata, SafetensorsFile};
use crate::runs::{EpochMetrics, RunDir, RunRecord};
use anyhow::{anyhow, bail, Result};
use image::RgbImage;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::register_font;
use std::path::{Path, PathBuf};
use std::sync::Once;

/// The family every text of the figures asks for, registered with the
/// embedded font by [`drawing_area`].
const FONT: &str = "sans-serif";
const TRAIN_COLOR: RGBColor = RGBColor(31, 119, 180);
const VAL_COLOR: RGBColor = RGBColor(255, 127, 14);
/// One per model in `ModelKind::ALL` order, in the comparison figure.
const MODEL_COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];
const RUN_SIZE: (u32, u32) = (1200, 400);
const COMPARISON_SIZE: (u32, u32) = (800, 480);

/// Where the comparison figure goes.
pub fn comparison_path(out_dir: &Path) -> PathBuf {
    out_dir.join("val_accuracy.png")
}

/// Draws the figures of every run in `out_dir` that has trained an epoch,
/// and the comparison of the finished ones; returns the files written.
pub fn write_all(out_dir: &Path) -> Result<Vec<PathBuf>> {
    let runs: Vec<RunRecord> = RunRecord::read_all(out_dir)?
        .into_iter()
        .filter(|r| !r.epochs.is_empty())
        .collect();
    if runs.is_empty() {
        bail!(
            "no run with metrics in {}: train one with `cifar-kern train MODEL`",
            out_dir.display()
        );
    }
    let mut written = Vec::new();
    for run in &runs {
        let path = RunDir::new(out_dir, run.model).curves();
        save_png(&path, &run_figure(run, &training_flags(out_dir, run))?)?;
        written.push(path);
    }
    let finished: Vec<&RunRecord> = runs.iter().filter(|r| r.results.is_some()).collect();
    if !finished.is_empty() {
        let path = comparison_path(out_dir);
        save_png(&path, &comparison_figure(&finished)?)?;
        written.push(path);
    }
    Ok(written)
}

/// The flags the run was trained with (epochs, limit_train, limit_eval, ...),
/// from its last checkpoint's metadata; empty if that cannot be read, since
/// they only label the figure.
fn training_flags(out_dir: &Path, run: &RunRecord) -> CheckpointMetadata {
    SafetensorsFile::open(&RunDir::new(out_dir, run.model).last())
        .map(|f| f.metadata())
        .unwrap_or_default()
}

/// One run: train loss; train and validation accuracy; learning rate.
pub fn run_figure(run: &RunRecord, flags: &CheckpointMetadata) -> Result<RgbImage> {
    let (width, height) = RUN_SIZE;
    let mut pixels = vec![0u8; (width * height * 3) as usize];
    {
        let root = drawing_area(&mut pixels, RUN_SIZE)?;
        let body = root.titled(&run_title(run, flags), (FONT, 22)).map_err(plot_error)?;
        let panels = body.split_evenly((1, 3));
        let last = run.epochs.last().map_or(1, |e| e.epoch) as f64;
        let series = |value: fn(&EpochMetrics) -> f64| -> Vec<(f64, f64)> {
            run.epochs.iter().map(|e| (e.epoch as f64, value(e))).collect()
        };

        let loss = series(|e| e.train_loss);
        let top = loss.iter().map(|p| p.1).fold(0.0, f64::max).max(f64::MIN_POSITIVE) * 1.1;
        let mut chart = panel(&panels[0], "train loss")
            .build_cartesian_2d(0.0..last, 0.0..top)
            .map_err(plot_error)?;
        mesh(&mut chart, last, "loss", |y| format!("{y:.2}"))?;
        chart
            .draw_series(LineSeries::new(loss, TRAIN_COLOR.stroke_width(2)))
            .map_err(plot_error)?;

        let val_label = match flags.get("limit_eval") {
            Some(n) => format!("validation (partial: first {n} images)"),
            None => "validation".to_string(),
        };
        let mut chart = panel(&panels[1], "accuracy (%)")
            .build_cartesian_2d(0.0..last, 0.0..100.0)
            .map_err(plot_error)?;
        mesh(&mut chart, last, "accuracy (%)", |y| format!("{y:.0}"))?;
        chart
            .draw_series(LineSeries::new(
                series(|e| 100.0 * e.train_acc),
                TRAIN_COLOR.stroke_width(2),
            ))
            .map_err(plot_error)?
            .label("train")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], TRAIN_COLOR.stroke_width(2)));
        let val: Vec<(f64, f64)> = run
            .epochs
            .iter()
            .filter_map(|e| Some((e.epoch as f64, 100.0 * e.val_acc?)))
            .collect();
        chart
            .draw_series(LineSeries::new(val.clone(), VAL_COLOR.stroke_width(2)))
            .map_err(plot_error)?
            .label(val_label)
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], VAL_COLOR.stroke_width(2)));
        chart
            .draw_series(val.into_iter().map(|p| Circle::new(p, 4, VAL_COLOR.filled())))
            .map_err(plot_error)?;
        legend(&mut chart)?;

        // The learning rate is logged at each epoch's first step: drawn as a
        // step over the epoch, on a log axis (the schedule divides it by 10).
        let steps: Vec<(f64, f64)> = run
            .epochs
            .iter()
            .flat_map(|e| [((e.epoch - 1) as f64, e.lr), (e.epoch as f64, e.lr)])
            .collect();
        let (low, high) = steps
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
        let mut chart = panel(&panels[2], "learning rate (at the start of each epoch)")
            .build_cartesian_2d(0.0..last, (low / 2.0..high * 2.0).log_scale())
            .map_err(plot_error)?;
        // Only the powers of ten are labelled; the lines between them stay unlabelled.
        mesh(&mut chart, last, "learning rate", |y| {
            let exponent = y.log10().round();
            if (y.log10() - exponent).abs() < 1e-6 {
                format!("1e{exponent}")
            } else {
                String::new()
            }
        })?;
        chart
            .draw_series(LineSeries::new(steps, TRAIN_COLOR.stroke_width(2)))
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(RgbImage::from_raw(width, height, pixels).expect("the buffer holds the whole figure"))
}

/// "ResNet: 4 of 4 epochs, 4,096 training images, batch 128, seed 42".
fn run_title(run: &RunRecord, flags: &CheckpointMetadata) -> String {
    let done = run.epochs.last().map_or(0, |e| e.epoch);
    let mut title = match flags.get("epochs") {
        Some(planned) => format!("{}: {done} of {planned} epochs", run.model),
        None => format!("{}: {done} epochs", run.model),
    };
    let images = flags.get("limit_train").map_or("all", String::as_str);
    title.push_str(&format!(", {images} training images"));
    for (key, name) in [("batch_size", "batch"), ("seed", "seed")] {
        if let Some(value) = flags.get(key) {
            title.push_str(&format!(", {name} {value}"));
        }
    }
    title
}

/// The validation accuracy of every finished run, per epoch.
pub fn comparison_figure(runs: &[&RunRecord]) -> Result<RgbImage> {
    let (width, height) = COMPARISON_SIZE;
    let mut pixels = vec![0u8; (width * height * 3) as usize];
    {
        let root = drawing_area(&mut pixels, COMPARISON_SIZE)?;
        let last = runs
            .iter()
            .filter_map(|r| r.epochs.last())
            .map(|e| e.epoch)
            .max()
            .unwrap_or(1) as f64;
        let mut chart = panel(&root, "validation accuracy of the finished runs")
            .build_cartesian_2d(0.0..last, 0.0..100.0)
            .map_err(plot_error)?;
        mesh(&mut chart, last, "validation accuracy (%)", |y| format!("{y:.0}"))?;
        for run in runs {
            let color = MODEL_COLORS[run.model as usize % MODEL_COLORS.len()];
            let points: Vec<(f64, f64)> = run
                .epochs
                .iter()
                .filter_map(|e| Some((e.epoch as f64, 100.0 * e.val_acc?)))
                .collect();
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(plot_error)?;
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(plot_error)?
                .label(comparison_label(run))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        legend(&mut chart)?;
        root.present().map_err(plot_error)?;
    }
    Ok(RgbImage::from_raw(width, height, pixels).expect("the buffer holds the whole figure"))
}

/// "ResNet: test 91.00%", marked when the evaluation was partial.
fn comparison_label(run: &RunRecord) -> String {
    let test = run
        .results
        .as_ref()
        .and_then(|r| r.get("test_accuracy"))
        .and_then(|v| v.as_f64());
    let mut label = match test {
        Some(acc) => format!("{}: test {:.2}%", run.model, 100.0 * acc),
        None => run.model.to_string(),
    };
    label.push_str(&run.partial_mark());
    label
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type Chart<'a, 'b, Y> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, Y>>;

/// A white drawing area over `pixels` (RGB, row-major), with the embedded
/// font registered.
fn drawing_area(pixels: &mut [u8], size: (u32, u32)) -> Result<Area<'_>> {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // The font is compiled in: failing to parse it is a bug, not a user error.
        assert!(
            register_font(FONT, FontStyle::Normal, ttf_noto_sans::REGULAR).is_ok(),
            "the embedded Noto Sans font does not parse"
        );
    });
    let root = BitMapBackend::with_buffer(pixels, size).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    Ok(root)
}

/// A chart on `area` with a caption and room for the axis labels.
fn panel<'a, 'b>(area: &'a Area<'b>, caption: &str) -> ChartBuilder<'a, 'b, BitMapBackend<'b>> {
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56);
    builder
}

/// Grid, tick labels and axis names; epochs are whole numbers.
fn mesh<'a, 'b: 'a, Y>(
    chart: &mut Chart<'a, 'b, Y>,
    epochs: f64,
    y_name: &str,
    y_format: impl Fn(&f64) -> String,
) -> Result<()>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_labels((epochs as usize).min(10) + 1)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&y_format)
        .x_desc("epoch")
        .y_desc(y_name)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(plot_error)
}

fn legend<'a, 'b: 'a, Y: Ranged>(chart: &mut Chart<'a, 'b, Y>) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(plot_error)
}

/// plotters' errors borrow nothing but are not all `Send + Sync`: keep their text.
fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("cannot draw the figure: {e}")
}
