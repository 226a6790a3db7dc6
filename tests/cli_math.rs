//! `--math tf32|fp32` on `train` and `eval`, on the CPU (which always
//! computes in exact fp32): the flag parses and refuses other values, the
//! checkpoints and `results.json` record the effective mode, an explicit
//! `--math tf32` says in one line that it has no effect, and `--resume`
//! refuses a checkpoint of another mode, leaving the run as it was.

mod cli_util;

use cifar_kern::checkpoint;
use cifar_kern::models::ModelKind;
use cifar_kern::runs::RunDir;
use cli_util::{run, snapshot, stderr, stdout, synthetic_data, train_args};
use std::fs;
use std::path::Path;

const CPU_NOTE: &str = "--math tf32 has no effect on the CPU, which always computes in exact fp32";

/// The `math` a checkpoint's metadata records.
fn recorded_math(path: &Path) -> Option<String> {
    checkpoint::load(path).unwrap().1.get("math").cloned()
}

/// Rewrites a checkpoint's `math` (None: removes it, as before `--math`).
fn set_recorded_math(path: &Path, math: Option<&str>) {
    let (tensors, mut meta) = checkpoint::load(path).unwrap();
    match math {
        Some(m) => meta.insert("math".into(), m.into()),
        None => meta.remove("math"),
    };
    checkpoint::save(path, &tensors, &meta).unwrap();
}

fn results_math(out_dir: &Path) -> serde_json::Value {
    let text = fs::read_to_string(RunDir::new(out_dir, ModelKind::ResNet).results()).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["math"].clone()
}

#[test]
fn a_bad_math_value_is_refused_naming_the_choices() {
    for command in [
        &["train", "resnet", "--no-download"][..],
        &["eval", "resnet", "--checkpoint", "x.safetensors"][..],
    ] {
        let mut args = command.to_vec();
        args.extend(["--math", "fp16"]);
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("invalid value 'fp16' for '--math <MATH>'") && err.contains("[possible values: tf32, fp32]"),
            "{err}"
        );
    }
}

#[test]
fn help_names_the_math_defaults() {
    for (command, default) in [("train", "[default: tf32]"), ("eval", "[default: fp32]")] {
        let out = run(&[command, "--help"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let help = stdout(&out);
        assert!(help.contains("--math <MATH>") && help.contains(default), "{help}");
    }
}

#[test]
fn eval_parses_math_and_says_tf32_does_nothing_on_the_cpu() {
    let missing = [
        "eval",
        "resnet",
        "--checkpoint",
        "/nonexistent/x.safetensors",
        "--device",
        "cpu",
    ];
    for (math, note) in [(None, false), (Some("fp32"), false), (Some("tf32"), true)] {
        let mut args = missing.to_vec();
        args.extend(math.map(|m| ["--math", m]).into_iter().flatten());
        let out = run(&args);
        // Parsed: the command gets as far as the missing checkpoint.
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("/nonexistent/x.safetensors"), "{err}");
        assert_eq!(
            err.matches(CPU_NOTE).count(),
            usize::from(note),
            "--math {math:?}: {err}"
        );
    }
}

#[test]
fn a_cpu_run_records_fp32_even_when_tf32_is_asked() {
    let out_dir = tempfile::tempdir().unwrap();
    let mut args = train_args(synthetic_data(), out_dir.path(), "1", "256");
    args.extend(["--math".into(), "tf32".into()]);
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.matches(CPU_NOTE).count(), 1, "{err}");
    assert!(err.contains("on 256 images, in fp32"), "{err}");
    let run_dir = RunDir::new(out_dir.path(), ModelKind::ResNet);
    for path in [run_dir.last(), run_dir.best()] {
        assert_eq!(recorded_math(&path).as_deref(), Some("fp32"), "{}", path.display());
    }
    assert_eq!(results_math(out_dir.path()), "fp32");
}

#[test]
fn resume_with_another_math_is_refused_and_old_checkpoints_are_fp32() {
    let out_dir = tempfile::tempdir().unwrap();
    let args = train_args(synthetic_data(), out_dir.path(), "1", "256");
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    // tf32 only by default: no note.
    assert!(!stderr(&out).contains(CPU_NOTE), "{}", stderr(&out));
    let run_dir = RunDir::new(out_dir.path(), ModelKind::ResNet);
    assert_eq!(recorded_math(&run_dir.last()).as_deref(), Some("fp32"));

    // An unfinished run whose checkpoint a GPU trained in tf32.
    fs::remove_file(run_dir.results()).unwrap();
    set_recorded_math(&run_dir.last(), Some("tf32"));
    let before = snapshot(out_dir.path());
    let mut resume = args.clone();
    resume.push("--resume".into());
    for math in [None, Some("fp32"), Some("tf32")] {
        let mut args = resume.clone();
        args.extend(
            math.map(|m| ["--math".to_string(), m.to_string()])
                .into_iter()
                .flatten(),
        );
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "{} was trained with --math tf32 on a GPU, but this run is on the CPU, which always computes in \
                 exact fp32: resume it on a GPU with --math tf32, or start a new run with --retrain",
                run_dir.last().display()
            )),
            "--math {math:?}: {err}"
        );
        assert_eq!(before, snapshot(out_dir.path()), "--math {math:?} changed the run");
    }

    // A checkpoint from before `--math` computed in exact fp32: it resumes.
    set_recorded_math(&run_dir.last(), None);
    let out = run(&resume);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("resuming ResNet after epoch 1 of 1, in fp32"),
        "{}",
        stderr(&out)
    );
    assert_eq!(results_math(out_dir.path()), "fp32");
}
