//! `train` survives what happens to long runs: a SIGKILL at any point (inside
//! a step, during evaluation, halfway through a checkpoint write), a
//! checkpoint write that fails for lack of space, and a second `train`
//! started into the same folder. Two runs with one seed write the same
//! checkpoint bytes, killed and resumed or not.
//!
//! The kill points come from `cifar_kern::kill_point` (debug builds only, as
//! `cargo test` builds the binary); the runs are ResNet on the CPU, 3 epochs
//! of 6 steps of 16 images, evaluated on 48 images a split.

mod cli_util;

use cifar_kern::checkpoint;
use cifar_kern::kill_point::{KILL_AT_VAR, KILL_LOG_VAR};
use cifar_kern::models::ModelKind;
use cifar_kern::runs::RunDir;
use cli_util::{cifar_kern, path_str, run, stderr, synthetic_data};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};
use tempfile::TempDir;

const KILLS: usize = 20;
const KILL_SEED: u64 = 13;

/// The short run's arguments, into `out_dir`.
fn short_run(out_dir: &Path, epochs: &str) -> Vec<String> {
    let mut args = cli_util::train_args(synthetic_data(), out_dir, epochs, "96");
    let eval = args.iter().position(|a| a == "--limit-eval").unwrap();
    args[eval + 1] = "48".into();
    args.extend(["--batch-size", "16"].map(String::from));
    args
}

/// The same, with `--resume` when the folder holds a checkpoint to resume.
fn continue_run(out_dir: &Path, epochs: &str) -> Vec<String> {
    let mut args = short_run(out_dir, epochs);
    if out_dir.join("ResNet/last.safetensors").exists() {
        args.push("--resume".into());
    }
    args
}

/// The checkpoints and results of a run folder, by name.
fn outputs(out_dir: &Path) -> Vec<(&'static str, Vec<u8>)> {
    ["last.safetensors", "best.safetensors", "results.json"]
        .map(|name| (name, fs::read(out_dir.join("ResNet").join(name)).unwrap()))
        .to_vec()
}

fn temp_files(run_dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(run_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect()
}

/// One uninterrupted 3-epoch run, logging every kill point it passes: its
/// out-dir and the points in the order reached.
fn uninterrupted() -> &'static (TempDir, Vec<String>) {
    static RUN: OnceLock<(TempDir, Vec<String>)> = OnceLock::new();
    RUN.get_or_init(|| {
        let out_dir = tempfile::tempdir().unwrap();
        let log = out_dir.path().join("kill-points.txt");
        let out = cifar_kern()
            .args(short_run(out_dir.path(), "3"))
            .env(KILL_LOG_VAR, &log)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let points = fs::read_to_string(&log).unwrap().lines().map(String::from).collect();
        (out_dir, points)
    })
}

#[test]
fn killed_anywhere_and_resumed_the_run_writes_the_same_bytes() {
    let (straight, points) = uninterrupted();
    for phase in ["step:", "eval:", "save:"] {
        assert!(
            points.iter().any(|p| p.starts_with(phase)),
            "no {phase} point in {points:?}"
        );
    }
    // Draw KILLS distinct points and visit them in the order a run reaches
    // them: each resumed run gets further than the one before.
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(KILL_SEED));
    let mut chosen = order[..KILLS].to_vec();
    chosen.sort();
    let chosen: Vec<&str> = chosen.iter().map(|&i| points[i].as_str()).collect();
    println!(
        "kill points (seed {KILL_SEED}, {} points in the run): {chosen:?}",
        points.len()
    );

    let chain = tempfile::tempdir().unwrap();
    let run_dir = chain.path().join("ResNet");
    let mut refused_without_resume = false;
    for point in &chosen {
        let out = cifar_kern()
            .args(continue_run(chain.path(), "3"))
            .env(KILL_AT_VAR, point)
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "kill point {point} was not reached: {}",
            stderr(&out)
        );
        if !refused_without_resume && run_dir.join("last.safetensors").exists() {
            // An unfinished run is protected from a start without --resume.
            let out = run(&short_run(chain.path(), "3"));
            assert!(
                !out.status.success() && stderr(&out).contains("--resume"),
                "{}",
                stderr(&out)
            );
            refused_without_resume = true;
        }
    }
    let out = run(&continue_run(chain.path(), "3"));
    assert!(out.status.success(), "{}", stderr(&out));

    for ((name, a), (_, b)) in outputs(straight.path()).into_iter().zip(outputs(chain.path())) {
        assert!(
            a == b,
            "{name} differs between the uninterrupted run and the killed-and-resumed one"
        );
    }
    assert_eq!(
        temp_files(&run_dir),
        Vec::<PathBuf>::new(),
        "temp files of killed writes stay"
    );
    let metrics = fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let epochs: Vec<u64> = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(epochs, [1, 2, 3], "metrics.jsonl: one line per epoch");

    // A finished run is evaluated, not retrained, and its files stay as they are.
    let before = outputs(chain.path());
    let out = run(&short_run(chain.path(), "3"));
    assert!(
        out.status.success() && stderr(&out).contains("holds a finished ResNet run"),
        "{}",
        stderr(&out)
    );
    assert!(outputs(chain.path()) == before);
    let table = run(&["table", "--out-dir", path_str(chain.path())]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("| ResNet ") && text.contains("272,378"), "{text}");
}

#[test]
fn metrics_count_what_the_runtime_did_per_step() {
    let (run, _) = uninterrupted();
    let metrics = fs::read_to_string(run.path().join("ResNet/metrics.jsonl")).unwrap();
    for line in metrics.lines() {
        let per_step = &serde_json::from_str::<serde_json::Value>(line).unwrap()["per_step"];
        // On the CPU a step copies no tensor (shared storage), and there is no GPU work.
        for key in [
            "host_copies",
            "device_copies",
            "device_allocations",
            "host_syncs",
            "kernel_launches",
        ] {
            assert_eq!(per_step[key].as_f64(), Some(0.0), "{key} in {line}");
        }
    }
}

#[test]
fn two_runs_with_one_seed_write_the_same_bytes() {
    let (first, _) = uninterrupted();
    let second = tempfile::tempdir().unwrap();
    let out = run(&short_run(second.path(), "3"));
    assert!(out.status.success(), "{}", stderr(&out));
    for ((name, a), (_, b)) in outputs(first.path()).into_iter().zip(outputs(second.path())) {
        assert!(a == b, "{name} differs between two runs with one seed");
    }
}

/// `train` under a file-size limit of `kib` KiB, with SIGXFSZ ignored so
/// that a write past it fails with EFBIG instead of killing the process.
fn with_file_size_limit(kib: u64, args: &[String]) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(format!("ulimit -f {kib}; trap '' XFSZ; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_cifar-kern"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_failed_checkpoint_write_keeps_the_last_checkpoint() {
    let out_dir = tempfile::tempdir().unwrap();
    let run_dir = out_dir.path().join("ResNet");
    let last = run_dir.join("last.safetensors");
    // Epoch 1 saved; killed in epoch 2.
    let out = cifar_kern()
        .args(short_run(out_dir.path(), "2"))
        .env(KILL_AT_VAR, "step:2:1")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{}", stderr(&out));
    let saved = fs::read(&last).unwrap();

    // best.safetensors (weights, 1.1 MB) fits under 1600 KiB; last.safetensors
    // (weights and momentum, 2.2 MB) does not.
    let out = with_file_size_limit(1600, &continue_run(out_dir.path(), "2"));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for part in [
        "epoch 2 could not be saved",
        path_str(&last),
        "still holds epoch 1",
        "--resume",
        "disk is full",
    ] {
        assert!(err.contains(part), "no `{part}` in: {err}");
    }
    assert!(fs::read(&last).unwrap() == saved, "last.safetensors changed");
    let (_, meta) = checkpoint::load(&last).unwrap();
    assert_eq!(meta["epoch"], "1");
    assert_eq!(temp_files(&run_dir), Vec::<PathBuf>::new());

    let out = run(&continue_run(out_dir.path(), "2"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("resuming ResNet after epoch 1"),
        "{}",
        stderr(&out)
    );
    assert!(run_dir.join("results.json").exists());
}

#[test]
fn a_second_train_into_a_folder_in_use_refuses_at_once() {
    let out_dir = tempfile::tempdir().unwrap();
    let lock = RunDir::new(out_dir.path(), ModelKind::ResNet).lock_file();
    // A run long enough to be still going while the second one starts.
    let mut first = cifar_kern()
        .args(short_run(out_dir.path(), "50"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !fs::read_to_string(&lock).is_ok_and(|s| s.starts_with("process")) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first run never took the lock"
        );
        assert!(first.try_wait().unwrap().is_none(), "the first run ended early");
        sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let second = run(&short_run(out_dir.path(), "50"));
    let err = stderr(&second);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is in use by another `cifar-kern train`") && err.contains(&format!("process {}", first.id())),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the refusal was not at once"
    );
    assert!(first.try_wait().unwrap().is_none(), "the second run stopped the first");

    // SIGKILL releases the lock: the next start gets past it.
    first.kill().unwrap();
    first.wait().unwrap();
    let mut args = short_run(out_dir.path(), "1");
    args.push("--retrain".into());
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
}
