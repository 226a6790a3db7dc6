//! What the `cli*` test binaries share: the `cifar-kern` binary, a synthetic
//! CIFAR-10 copy of the real size (random pixels), and the arguments of a
//! short CPU training run on it.

#![allow(dead_code)] // each test binary uses its own subset

use cifar_kern::data::cifar::{RECORD_BYTES, TEST_FILE, TRAIN_FILES};
use cifar_kern::models::ModelKind;
use cifar_kern::runs::RunDir;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use tempfile::TempDir;

const RECORDS_PER_FILE: usize = 10_000;

/// A full-size synthetic data set (labels cycle 0..9), written once per test
/// binary.
pub fn synthetic_data() -> &'static Path {
    static DIR: OnceLock<TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for name in TRAIN_FILES.iter().chain([&TEST_FILE]) {
            let mut bytes = vec![0u8; RECORDS_PER_FILE * RECORD_BYTES];
            rng.fill_bytes(&mut bytes);
            for (r, record) in bytes.chunks_mut(RECORD_BYTES).enumerate() {
                record[0] = (r % 10) as u8;
            }
            fs::write(dir.path().join(name), bytes).unwrap();
        }
        dir
    })
    .path()
}

/// The binary under test, with stdin closed.
pub fn cifar_kern() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cifar-kern"));
    cmd.stdin(Stdio::null());
    cmd
}

pub fn run<S: AsRef<OsStr>>(args: &[S]) -> Output {
    cifar_kern().args(args).output().unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `train resnet` on the CPU, reading `data`: `epochs` epochs of the first
/// `limit` training images, validating and testing on 256 images of each
/// split.
pub fn train_args(data: &Path, out_dir: &Path, epochs: &str, limit: &str) -> Vec<String> {
    [
        "train",
        "resnet",
        "--epochs",
        epochs,
        "--limit-train",
        limit,
        "--limit-eval",
        "256",
        "--data-dir",
        path_str(data),
        "--out-dir",
        path_str(out_dir),
        "--no-download",
        "--quiet",
        "--device",
        "cpu",
    ]
    .map(String::from)
    .to_vec()
}

/// Every file of a ResNet run in `out_dir` with its bytes, except the lock
/// file, which each start rewrites with its process id.
pub fn snapshot(out_dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let run = RunDir::new(out_dir, ModelKind::ResNet);
    let mut files: Vec<_> = fs::read_dir(run.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && *p != run.lock_file())
        .map(|p| (p.clone(), fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}
