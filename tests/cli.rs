//! The `cifar-kern` binary end to end, on a synthetic CIFAR-10 copy of the
//! real size (random pixels): an interrupted and resumed run ends with the
//! uninterrupted run's weights, and bad input gives a clear error, a
//! non-zero exit, and leaves saved files as they were.

mod cli_util;

use cifar_kern::checkpoint;
use cifar_kern::data::cifar::{TEST_FILE, TRAIN_FILES};
use cli_util::{cifar_kern, path_str, run, stderr, synthetic_data, train_args};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Every file below `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.clone(), fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn killed_run_resumes_to_the_same_weights() {
    let (straight, interrupted) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let out = run(&train_args(synthetic_data(), straight.path(), "2", "1280"));
    assert!(out.status.success(), "{}", stderr(&out));

    // Start the same run, kill -9 it once epoch 1's checkpoint is written,
    // mid-way through epoch 2 (10 steps of ~0.5 s), then resume.
    let mut child = cifar_kern()
        .args(train_args(synthetic_data(), interrupted.path(), "2", "1280"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run_dir = interrupted.path().join("ResNet");
    let started = Instant::now();
    while !run_dir.join("last.safetensors").exists() {
        assert!(started.elapsed() < Duration::from_secs(300), "epoch 1 never finished");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        sleep(Duration::from_millis(20));
    }
    sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    let metrics = fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 1, "the kill should land in epoch 2");
    assert!(!run_dir.join("results.json").exists());

    // Without --resume the unfinished run is protected.
    let refused = run(&train_args(synthetic_data(), interrupted.path(), "2", "1280"));
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("--resume"), "{}", stderr(&refused));

    let mut resume = train_args(synthetic_data(), interrupted.path(), "2", "1280");
    resume.push("--resume".into());
    let out = run(&resume);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("resuming ResNet after epoch 1"),
        "{}",
        stderr(&out)
    );

    for file in ["last.safetensors", "best.safetensors"] {
        let (a, _) = checkpoint::load(&straight.path().join("ResNet").join(file)).unwrap();
        let (b, _) = checkpoint::load(&run_dir.join(file)).unwrap();
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (name, t) in &a {
            assert_eq!(t, &b[name], "{file}: {name} differs after resuming");
        }
    }
    let metrics = fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2);

    // A finished run is evaluated, not retrained, and its files stay as they are.
    let before = snapshot(&run_dir);
    let out = run(&train_args(synthetic_data(), interrupted.path(), "2", "1280"));
    assert!(
        out.status.success() && stderr(&out).contains("holds a finished ResNet run"),
        "{}",
        stderr(&out)
    );
    let after = snapshot(&run_dir);
    let checkpoints = |s: &[(PathBuf, Vec<u8>)]| {
        s.iter()
            .filter(|(p, _)| p.extension().is_some_and(|e| e == "safetensors"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(checkpoints(&before), checkpoints(&after));

    let table = run(&["table", "--out-dir", path_str(interrupted.path())]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("| ResNet ") && text.contains("272,378"), "{text}");
}

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
    let before = snapshot(&out_dir.path().join("ResNet"));
    args.pop();
    let out = run(&args);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("epochs = 1, but this one has 3"),
        "{}",
        stderr(&out)
    );
    assert_eq!(before, snapshot(&out_dir.path().join("ResNet")));
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
