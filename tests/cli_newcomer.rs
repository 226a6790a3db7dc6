//! The binary as a new user meets it: what it says when a run is cut short
//! (Ctrl-C, a closed pipe, `--limit-eval`), when a download or a checkpoint
//! fails, when a flag is out of range, and in `--help`. On a synthetic
//! CIFAR-10 copy of the real size (random pixels), as in `tests/cli.rs`.

mod cli_util;

use cifar_kern::checkpoint;
use cli_util::{cifar_kern, path_str, run, stderr, stdout, synthetic_data, train_args};
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A message that names its cause once: no ": "-separated part repeats the
/// one before it ("...: Invalid PNG signature.: Invalid PNG signature.").
fn assert_no_repeated_cause(message: &str) {
    let parts: Vec<&str> = message.trim().split(": ").collect();
    assert!(parts.windows(2).all(|w| w[0] != w[1]), "a cause is repeated: {message}");
}

/// A finished one-epoch run with a partial evaluation (`--limit-eval 256`),
/// trained once per test binary: its out-dir and the `train` output.
fn partial_run() -> &'static (TempDir, Output) {
    static RUN: OnceLock<(TempDir, Output)> = OnceLock::new();
    RUN.get_or_init(|| {
        let out_dir = tempfile::tempdir().unwrap();
        let out = cifar_kern()
            .args(train_args(synthetic_data(), out_dir.path(), "1", "256"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        (out_dir, out)
    })
}

fn partial_checkpoint() -> String {
    partial_run()
        .0
        .path()
        .join("ResNet/best.safetensors")
        .display()
        .to_string()
}

#[test]
fn partial_evaluation_is_marked_in_the_final_line_results_and_table() {
    let (out_dir, out) = partial_run();
    let mark = "partial: 256 validation / 256 test images";
    let final_line = stdout(out);
    assert!(
        final_line.starts_with("ResNet: val accuracy") && final_line.contains(&format!("% ({mark})")),
        "{final_line}"
    );
    assert!(
        stderr(out).contains(&format!(" parameters; {mark})")),
        "{}",
        stderr(out)
    );
    // "1 epoch", not "1 epochs".
    assert!(
        stderr(out).contains("for 1 epoch of 2 steps on 256 images"),
        "{}",
        stderr(out)
    );

    let results: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out_dir.path().join("ResNet/results.json")).unwrap()).unwrap();
    assert_eq!(results["limit_eval"], 256);
    assert_eq!(results["val_images"], 256);
    assert_eq!(results["test_images"], 256);

    let table = run(&["table", "--out-dir", path_str(out_dir.path())]);
    assert!(table.status.success(), "{}", stderr(&table));
    assert!(stdout(&table).contains("partial"), "{}", stdout(&table));
}

#[test]
fn eval_prints_validation_before_test() {
    let out = run(&[
        "eval",
        "resnet",
        "--checkpoint",
        &partial_checkpoint(),
        "--data-dir",
        path_str(synthetic_data()),
        "--device",
        "cpu",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("ResNet validation accuracy: "), "{lines:?}");
    assert!(lines[1].starts_with("ResNet test accuracy: "), "{lines:?}");
}

/// Reads `child`'s stderr line by line until one contains `text`, and
/// returns what it read.
fn read_stderr_until(child: &mut Child, text: &str) -> String {
    let mut reader = BufReader::new(child.stderr.as_mut().unwrap());
    let mut seen = String::new();
    let started = Instant::now();
    while !seen.contains(text) {
        assert!(started.elapsed() < Duration::from_secs(300), "no `{text}` in: {seen}");
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "no `{text}` in: {seen}");
        seen.push_str(&line);
    }
    seen
}

/// Sends Ctrl-C's signal to `child`, and returns its exit code and the rest of its stderr.
fn interrupt(child: Child) -> (Option<i32>, String) {
    // SAFETY: kill() with a live child's pid and a valid signal number.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    (out.status.code(), stderr(&out))
}

#[test]
fn ctrl_c_says_which_epoch_is_saved_and_how_to_continue() {
    let out_dir = tempfile::tempdir().unwrap();
    let args = train_args(synthetic_data(), out_dir.path(), "3", "512");
    let spawn = || cifar_kern().args(&args).stderr(Stdio::piped()).spawn().unwrap();

    // Before the first epoch ends, nothing of this run is saved.
    let mut child = spawn();
    read_stderr_until(&mut child, "training ResNet");
    let (code, err) = interrupt(child);
    assert_eq!(code, Some(130), "{err}");
    assert_eq!(
        err.trim(),
        "interrupted in epoch 1 of 3, before this run saved a checkpoint: start it again with the same command"
    );
    let last = out_dir.path().join("ResNet/last.safetensors");
    assert!(!last.exists());

    // After it, the line names the epoch the checkpoint holds.
    let mut child = spawn();
    read_stderr_until(&mut child, "epoch 1/3");
    let (code, err) = interrupt(child);
    assert_eq!(code, Some(130), "{err}");
    let (_, meta) = checkpoint::load(&last).unwrap();
    let saved = &meta["epoch"];
    assert_eq!(
        err.lines().last().unwrap(),
        format!(
            "interrupted: epoch {saved} of 3 is saved in {}; run the same command with --resume to continue",
            last.display()
        ),
        "{err}"
    );
    assert_eq!(err.lines().filter(|l| l.starts_with("interrupted")).count(), 1, "{err}");

    let mut resume = args.clone();
    resume.push("--resume".into());
    let out = cifar_kern().args(&resume).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("resuming ResNet after epoch {saved} of 3")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_closed_stdout_ends_the_process_quietly() {
    // The pipe's reading end is closed before the binary writes anything.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = cifar_kern().arg("info").stdout(writer).output().unwrap();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {}",
        out.status,
        stderr(&out)
    );
    assert_eq!(stderr(&out), "", "no panic message");
}

#[test]
fn train_piped_into_head_ends_quietly() {
    let out_dir = tempfile::tempdir().unwrap();
    // `head -3` exits after the third line (the second epoch's); the third
    // epoch's line then meets a closed pipe. pipefail reports the status of
    // cifar-kern rather than head's: 141 = 128 + SIGPIPE, where a panic
    // would give 101.
    let out = Command::new("bash")
        .args(["-c", r#"set -o pipefail; "$@" 2>&1 | head -3"#, "bash"])
        .arg(env!("CARGO_BIN_EXE_cifar-kern"))
        .args(train_args(synthetic_data(), out_dir.path(), "6", "256"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains("epoch 1/6"), "{text}");
    assert_eq!(out.status.code(), Some(141), "{text}{}", stderr(&out));
}

#[test]
fn out_of_range_counts_get_a_range_error() {
    for (flag, value) in [
        ("--epochs", "-1"),
        ("--epochs", "0"),
        ("--limit-eval", "0"),
        ("--batch-size", "-5"),
    ] {
        let out = run(&["train", "resnet", flag, value, "--no-download"]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("invalid value '{value}' for '{flag} ")) && err.contains("must be at least 1"),
            "{err}"
        );
        assert!(!err.contains("tip:"), "{err}");
    }
}

#[test]
fn a_failed_download_leaves_no_folder_behind() {
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("new/data");
    // A proxy on a closed local port makes the download fail at once, offline or not.
    let fail_download = |args: &[&str]| {
        cifar_kern()
            .args(args)
            .env("ALL_PROXY", "http://127.0.0.1:1")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .output()
            .unwrap()
    };
    let out = fail_download(&["download", "--data-dir", path_str(&data_dir)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("could not download"), "{}", stderr(&out));
    assert!(
        !root.path().join("new").exists(),
        "the folders made for the download stay"
    );

    let out_dir = root.path().join("runs");
    let out = fail_download(&[
        "train",
        "resnet",
        "--data-dir",
        path_str(&data_dir),
        "--out-dir",
        path_str(&out_dir),
        "--device",
        "cpu",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!root.path().join("new").exists(), "{}", stderr(&out));

    // A folder that was there before stays.
    fs::create_dir(root.path().join("mine")).unwrap();
    let out = fail_download(&["download", "--data-dir", path_str(&root.path().join("mine"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(root.path().join("mine").is_dir());
}

#[test]
fn checkpoint_errors_say_what_the_file_is_and_name_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    fs::write(&text, "not a checkpoint\n").unwrap();
    let missing = dir.path().join("missing.ckpt");
    let image = dir.path().join("a.png");
    image::RgbImage::new(32, 32).save(&image).unwrap();
    let out_file = dir.path().join("out.safetensors");
    // A PNG's first byte, 0x89, is also a msgpack map marker.
    for file in [&text, &image, &missing] {
        let file = path_str(file);
        for args in [
            vec!["eval", "resnet", "--checkpoint", file, "--device", "cpu"],
            vec!["predict", "resnet", "--checkpoint", file, path_str(&image)],
            vec!["import-flax", "resnet", file, "--out", path_str(&out_file)],
        ] {
            let out = run(&args);
            assert_eq!(out.status.code(), Some(1), "{args:?}");
            let err = stderr(&out);
            assert_eq!(err.matches(file).count(), 1, "{args:?}: {err}");
            assert_no_repeated_cause(&err);
            if file != path_str(&missing) {
                assert!(
                    err.contains("neither a safetensors checkpoint nor a Flax checkpoint"),
                    "{args:?}: {err}"
                );
            } else {
                assert_eq!(err.matches("No such file or directory").count(), 1, "{args:?}: {err}");
            }
        }
    }
    assert!(!out_file.exists());
}

#[test]
fn image_errors_name_the_file_and_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("c.txt");
    fs::write(&text, "not an image").unwrap();
    let fake_png = dir.path().join("d.png");
    fs::write(&fake_png, "not an image either").unwrap();
    let broken_png = dir.path().join("e.png");
    fs::write(&broken_png, b"\x89PNG\r\n\x1a\n and then nothing").unwrap();
    let ckpt = partial_checkpoint();
    for (file, expect) in [
        (&text, "it is neither a PNG nor a JPEG file"),
        (&fake_png, "it is neither a PNG nor a JPEG file"),
        (&broken_png, ""),
    ] {
        let out = run(&["predict", "resnet", "--checkpoint", &ckpt, path_str(file)]);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(
            err.starts_with(&format!("error: cannot read image {}: ", file.display())) && err.contains(expect),
            "{err}"
        );
        assert!(!err.contains('`'), "{err}");
        assert_no_repeated_cause(&err);
    }
}

#[test]
fn help_describes_every_argument() {
    const MODEL: &str = "googlenet, resnet, preactresnet or densenet (any case)";
    for command in ["train", "eval", "predict", "import-flax"] {
        let out = run(&[command, "--help"]);
        assert!(out.status.success());
        assert!(stdout(&out).contains(MODEL), "{command}: {}", stdout(&out));
    }
    for command in ["train", "eval"] {
        let help = stdout(&run(&[command, "--help"]));
        for value in ["- auto: ", "- cpu: ", "- cuda: "] {
            assert!(help.contains(value), "{command}: {help}");
        }
    }
    // Every argument and option of these has a description: in the short
    // help, each entry's line goes on after its name and value placeholder
    // (and before any "[default: ...]").
    for command in ["train", "eval", "predict", "import-flax", "download"] {
        let help = stdout(&run(&[command, "-h"]));
        for line in help.lines().filter(|l| l.trim_start().starts_with(['-', '<'])) {
            let before_defaults = line.split('[').next().unwrap();
            let described = before_defaults
                .split_whitespace()
                .skip(1)
                .any(|w| !w.starts_with(['<', '-']));
            assert!(described, "{command}: `{line}` has no description");
        }
    }
}
