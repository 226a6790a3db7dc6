//! The binary's `bench` and `tune` where no GPU is usable: one clear line
//! and a non-zero exit (`tune --math fp32`: nothing to tune, exit 0), for
//! every mode of `bench` (`--no-graph`, `--capture-safe`). On a machine
//! with a usable GPU these would time for minutes instead, so they check
//! nothing there (scripts/gpu/run.sh runs the real thing). What the command
//! line refuses is refused everywhere, GPU or not.

mod cli_util;

use cli_util::{run, stderr, stdout};

/// Whether this machine has a usable GPU (then the commands would run).
fn gpu_usable() -> bool {
    match cifar_kern::cuda::unavailable_reason() {
        None => {
            eprintln!("a GPU is usable here: the no-GPU errors cannot be seen");
            true
        }
        Some(_) => false,
    }
}

/// The one line of stderr of a failed command.
fn one_line_error(args: &[&str]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "{args:?} succeeded: {}", stdout(&out));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    err
}

#[test]
fn bench_without_a_gpu_says_so_in_one_line() {
    if gpu_usable() {
        return;
    }
    let reason = cifar_kern::cuda::unavailable_reason().unwrap();
    for args in [
        &["bench", "all"][..],
        &["bench", "resnet", "--math", "fp32", "--batch-size", "8"],
        &["bench", "all", "--no-graph"],
        &["bench", "resnet", "--capture-safe"],
        &["bench", "all", "--capture-safe", "--math", "fp32", "--batch-size", "16"],
    ] {
        let err = one_line_error(args);
        assert!(err.contains(&format!("bench needs a GPU: {reason}")), "{err}");
    }
    // Nothing is written where the JSON would go.
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("ours.json");
    one_line_error(&["bench", "all", "--json", json.to_str().unwrap()]);
    assert!(!json.exists());
}

#[test]
fn tune_without_a_gpu_says_so_in_one_line() {
    if gpu_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("conv_tiles.txt");
    let err = one_line_error(&["tune", "--out", out.to_str().unwrap()]);
    assert!(err.contains("tune needs a GPU: "), "{err}");
    assert!(!out.exists());
}

#[test]
fn tune_in_fp32_has_nothing_to_tune() {
    // The answer needs no GPU, so it is the same everywhere.
    let out = run(&["tune", "--math", "fp32", "--out", "/nonexistent/conv_tiles.txt"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("nothing to tune in fp32"), "{text}");
}

#[test]
fn bench_names_its_choices() {
    let out = run(&["bench", "vgg16"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("googlenet, resnet, preactresnet, densenet") && err.contains("or all"),
        "{err}"
    );
    let out = run(&["bench", "all", "--math", "bf16"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("tf32"), "{}", stderr(&out));
}

#[test]
fn capture_safe_times_nothing_so_takes_no_json_and_no_no_graph() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("ours.json");
    for extra in [&["--json", json.to_str().unwrap()][..], &["--no-graph"]] {
        let mut args = vec!["bench", "resnet", "--capture-safe"];
        args.extend(extra);
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("--capture-safe") && err.contains("cannot be used with"),
            "{err}"
        );
    }
    assert!(!json.exists());
}

#[test]
fn bench_help_names_its_step_modes() {
    let out = run(&["bench", "--help"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let help = stdout(&out);
    for flag in ["--no-graph", "--capture-safe", "--json", "--tiles"] {
        assert!(help.contains(flag), "{flag}: {help}");
    }
}
