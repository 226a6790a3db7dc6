//! The pictures and the extended table, end to end through the binary, on a
//! synthetic CIFAR-10 copy of the real size (random pixels): the
//! augmentation preview shows exactly what the training loader feeds the
//! network, `train` and `plot` draw the curves, `table --format json` is
//! `results.json` plus the training time, and the note on unsettled
//! BatchNorm statistics follows the stated rule.

mod cli_util;

use cifar_kern::data::{Cifar10, Split, TrainLoader, TrainOptions, CHANNELS, IMAGE_BYTES, IMAGE_SIZE, MEAN, STD};
use cifar_kern::ops::batchnorm::MOMENTUM;
use cifar_kern::train::{steps_to_settle, unsettled_statistics_note};
use cli_util::{path_str, run, stderr, synthetic_data};
use image::RgbImage;
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Output;
use std::sync::{Arc, OnceLock};
use tempfile::TempDir;

/// The out-dir of one short finished run, trained once per test binary:
/// ResNet, 2 epochs of 2 steps (256 images), evaluated on 128 images a split.
fn finished_run() -> &'static (TempDir, Output) {
    static RUN: OnceLock<(TempDir, Output)> = OnceLock::new();
    RUN.get_or_init(|| {
        let out_dir = tempfile::tempdir().unwrap();
        let out = run(&[
            "train",
            "resnet",
            "--epochs",
            "2",
            "--limit-train",
            "256",
            "--limit-eval",
            "128",
            "--data-dir",
            path_str(synthetic_data()),
            "--out-dir",
            path_str(out_dir.path()),
            "--no-download",
            "--quiet",
            "--device",
            "cpu",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        (out_dir, out)
    })
}

/// Decodes a PNG and checks that it is `size` and not blank: dark pixels
/// (text, axes) in its top `title_rows` rows and many colours overall.
fn check_figure(path: &Path, size: (u32, u32), title_rows: u32) -> RgbImage {
    let image = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    assert_eq!(image.dimensions(), size, "{}", path.display());
    let dark_in_title = (0..title_rows)
        .flat_map(|y| (0..size.0).map(move |x| (x, y)))
        .filter(|&(x, y)| image.get_pixel(x, y).0.iter().all(|&c| c < 100))
        .count();
    assert!(dark_in_title > 50, "{}: no title text drawn", path.display());
    let mut colours: Vec<[u8; 3]> = image.pixels().map(|p| p.0).collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(colours.len() > 20, "{}: only {} colours", path.display(), colours.len());
    image
}

/// The stated rule: a normalised value back to 8 bits.
fn to_u8(x: f32, channel: usize) -> u8 {
    ((f64::from(x) * STD[channel] + MEAN[channel]) * 255.0)
        .clamp(0.0, 255.0)
        .round() as u8
}

#[test]
fn augment_preview_shows_the_training_augmentation_above_the_originals() {
    let (count, epoch, seed, scale) = (3usize, 2usize, 7u64, 3u32);
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("grid.png");
    let out = run(&[
        "augment-preview",
        "--data-dir",
        path_str(synthetic_data()),
        "--out",
        path_str(&png),
        "--count",
        &count.to_string(),
        "--epoch",
        &epoch.to_string(),
        "--seed",
        &seed.to_string(),
        "--scale",
        &scale.to_string(),
        "--no-download",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("wrote"));
    let grid = image::open(&png).unwrap().to_rgb8();
    // Cells of 32 x 3 = 96 pixels, with a 2-pixel border around each.
    let cell = 32 * scale + 2;
    assert_eq!(grid.dimensions(), (count as u32 * cell + 2, 2 * cell + 2));

    // What the training loader feeds the network in that epoch, for those
    // images: one batch of exactly them, located through the epoch's order.
    let data = Cifar10::load(synthetic_data()).unwrap();
    let train = Arc::new(data.train);
    let shown = &Split::tutorial().train[..count];
    let options = TrainOptions {
        batch_size: count,
        seed,
        workers: 1,
        prefetch: 1,
        limit_train: None,
    };
    let loader = TrainLoader::new(train.clone(), shown, options);
    let order = loader.epoch_order(epoch);
    let batch = loader.epoch(epoch).next().unwrap();
    let fed = batch.images.data();

    for (column, &index) in shown.iter().enumerate() {
        let position = order.iter().position(|&i| i == index).unwrap();
        let augmented = &fed[position * IMAGE_BYTES..][..IMAGE_BYTES];
        let original = train.image(index);
        let left = 2 + column as u32 * cell;
        for y in 0..IMAGE_SIZE {
            for x in 0..IMAGE_SIZE {
                let k = (y * IMAGE_SIZE + x) * CHANNELS;
                let want_top: Vec<u8> = (0..CHANNELS).map(|c| to_u8(augmented[k + c], c)).collect();
                let want_bottom = &original[k..k + CHANNELS];
                // Every pixel of the scale x scale block (nearest neighbour).
                for (dy, dx) in (0..scale).flat_map(|dy| (0..scale).map(move |dx| (dy, dx))) {
                    let (px, py) = (left + x as u32 * scale + dx, 2 + y as u32 * scale + dy);
                    assert_eq!(
                        grid.get_pixel(px, py).0.as_slice(),
                        want_top,
                        "image {index}, pixel ({x}, {y}), top row"
                    );
                    assert_eq!(
                        grid.get_pixel(px, py + cell).0.as_slice(),
                        want_bottom,
                        "image {index}, pixel ({x}, {y}), bottom row"
                    );
                }
            }
        }
    }
    // The augmentation changed the images (a flip or a crop smaller than 32x32 each time).
    assert!((0..count).any(|c| grid.get_pixel(2 + c as u32 * cell, 2) != grid.get_pixel(2 + c as u32 * cell, 2 + cell)));
    // The border is grey.
    assert_eq!(grid.get_pixel(0, 0).0, [230; 3]);
    assert_eq!(grid.get_pixel(cell, cell).0, [230; 3]);
}

#[test]
fn augment_preview_refuses_a_zero_count() {
    let out = run(&["augment-preview", "--count", "0", "--no-download"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--count"), "{}", stderr(&out));
}

#[test]
fn train_and_plot_draw_the_curves() {
    let (out_dir, train_out) = finished_run();
    let err = stderr(train_out);
    assert!(err.contains("curves: "), "{err}");
    let run_curves = out_dir.path().join("ResNet/curves.png");
    let comparison = out_dir.path().join("val_accuracy.png");
    check_figure(&run_curves, (1200, 400), 40);
    check_figure(&comparison, (800, 480), 40);

    // `plot` draws them again from the run's records.
    fs::remove_file(&run_curves).unwrap();
    fs::remove_file(&comparison).unwrap();
    let out = run(&["plot", "--out-dir", path_str(out_dir.path())]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ResNet/curves.png") && stdout.contains("val_accuracy.png"),
        "{stdout}"
    );
    check_figure(&run_curves, (1200, 400), 40);
    check_figure(&comparison, (800, 480), 40);

    let empty = tempfile::tempdir().unwrap();
    let out = run(&["plot", "--out-dir", path_str(empty.path())]);
    assert!(!out.status.success() && stderr(&out).contains("no run with metrics"));
}

#[test]
fn table_json_is_results_json_with_the_training_time() {
    let (out_dir, _) = finished_run();
    let run_dir = out_dir.path().join("ResNet");
    let results: Value = serde_json::from_str(&fs::read_to_string(run_dir.join("results.json")).unwrap()).unwrap();
    let seconds: f64 = fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["train_seconds"]
                .as_f64()
                .unwrap()
        })
        .sum();

    let out = run(&["table", "--out-dir", path_str(out_dir.path()), "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = table.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    for (key, value) in results.as_object().unwrap() {
        assert_eq!(&rows[0][key], value, "{key}");
    }
    assert!((rows[0]["train_seconds"].as_f64().unwrap() - seconds).abs() < 1e-9);
    assert!(rows[0]["images_per_second"].as_f64().unwrap() > 0.0);

    let out = run(&["table", "--out-dir", path_str(out_dir.path()), "--format", "csv"]);
    let csv = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "model,val_accuracy,test_accuracy,num_params,train_seconds,images_per_second,val_images,test_images"
    );
    let cells: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(
        (cells[0], cells[3], cells[6], cells[7]),
        ("ResNet", "272378", "128", "128")
    );
    assert_eq!(
        cells[1].parse::<f64>().unwrap(),
        results["val_accuracy"].as_f64().unwrap()
    );

    let out = run(&["table", "--out-dir", path_str(out_dir.path())]);
    let markdown = String::from_utf8(out.stdout).unwrap();
    assert!(
        markdown
            .starts_with("| Model        | Val Accuracy | Test Accuracy | Num Parameters | Training Time | Images/s |"),
        "{markdown}"
    );
    assert!(
        markdown.contains("| ResNet ") && markdown.contains("272,378"),
        "{markdown}"
    );
    assert!(markdown.contains("partial evaluation"), "{markdown}");
}

#[test]
fn unsettled_batchnorm_statistics_are_stated() {
    // The rule: fewer than 459 steps, while 0.99^n is still above 1%.
    assert_eq!(MOMENTUM, 0.99);
    assert_eq!(steps_to_settle(), 459);
    assert!(MOMENTUM.powi(458) > 0.01 && MOMENTUM.powi(459) <= 0.01);
    let note = unsettled_statistics_note(64).unwrap();
    assert!(note.contains("53%") && note.contains("understate"), "{note}");
    assert_eq!(unsettled_statistics_note(459), None);

    // The short run trained 4 steps: its final accuracies carry the note.
    let (_, out) = finished_run();
    let err = stderr(out);
    let results = err.lines().position(|l| l.contains("validation accuracy")).unwrap();
    let next = err.lines().nth(results + 1).unwrap_or_default();
    assert!(next.contains("after 4 steps, 96% (0.99^4)"), "{err}");
}
