//! The `cifar-kern` binary end to end, on a synthetic CIFAR-10 copy of the
//! real size (random pixels): bad input gives a clear error, a non-zero
//! exit, and leaves saved files as they were. (Kills and resumes:
//! `tests/cli_reliability.rs`.)

mod cli_util;

use cifar_kern::data::cifar::{TEST_FILE, TRAIN_FILES};
use cli_util::{run, snapshot, stderr, synthetic_data, train_args};
use std::fs;
use std::path::Path;
use std::thread::sleep;
use std::time::Duration;

#[test]
fn missing_data_dir_says_where_to_put_the_files() {
    let out_dir = tempfile::tempdir().unwrap();
    let args = train_args(Path::new("/nonexistent/cifar"), out_dir.path(), "1", "256");
    let out = run(&args);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("/nonexistent/cifar") && err.contains("cifar-10-batches-bin"),
        "{err}"
    );
}

#[test]
fn truncated_batch_file_is_named() {
    let data = tempfile::tempdir().unwrap();
    for name in TRAIN_FILES.iter().chain([&TEST_FILE]) {
        fs::copy(synthetic_data().join(name), data.path().join(name)).unwrap();
    }
    let victim = data.path().join("data_batch_3.bin");
    let bytes = fs::read(&victim).unwrap();
    fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    // An earlier run's files must survive the failed start.
    let out_dir = tempfile::tempdir().unwrap();
    let run_dir = out_dir.path().join("ResNet");
    fs::create_dir_all(&run_dir).unwrap();
    fs::write(run_dir.join("best.safetensors"), b"an earlier checkpoint").unwrap();
    let mut args = train_args(data.path(), out_dir.path(), "1", "256");
    args.push("--retrain".into());
    let out = run(&args);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("data_batch_3.bin") && err.contains("truncated"), "{err}");
    assert_eq!(
        fs::read(run_dir.join("best.safetensors")).unwrap(),
        b"an earlier checkpoint"
    );
}

#[test]
fn unknown_model_name_lists_the_choices() {
    let out = run(&["train", "vgg16", "--no-download"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("googlenet, resnet, preactresnet, densenet"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn resume_with_other_flags_is_refused() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = run(&train_args(synthetic_data(), out_dir.path(), "1", "256"));
    assert!(out.status.success(), "{}", stderr(&out));
    let mut args = train_args(synthetic_data(), out_dir.path(), "3", "256");
    args.extend(["--resume".into(), "--retrain".into()]);
    assert!(stderr(&run(&args)).contains("pass only one of them"));
    fs::remove_file(out_dir.path().join("ResNet/results.json")).unwrap();
    let before = snapshot(out_dir.path());
    args.pop();
    let out = run(&args);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("epochs = 1, but this one has 3"),
        "{}",
        stderr(&out)
    );
    assert_eq!(before, snapshot(out_dir.path()));
}

#[test]
fn retrain_starts_the_logs_over() {
    let out_dir = tempfile::tempdir().unwrap();
    let mut args = train_args(synthetic_data(), out_dir.path(), "1", "256");
    args.push("--retrain".into());
    for _ in 0..2 {
        let out = run(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        // Event files are named by the second they were created in.
        sleep(Duration::from_millis(1100));
    }
    let run_dir = out_dir.path().join("ResNet");
    let events = fs::read_dir(&run_dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
        })
        .count();
    assert_eq!(events, 1, "the retrained run keeps only its own event file");
    assert_eq!(
        fs::read_to_string(run_dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        1
    );
}
