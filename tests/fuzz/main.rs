//! Structured mutation fuzzing of every parser that reads a user's file:
//! CIFAR-10 batch files, data folders and archives, safetensors and Flax
//! checkpoints, and the PNG and JPEG images of `predict`.
//!
//! Each `fuzz_<target>` test builds its seed files itself, mutates them with
//! the shared engine of [`mutate`] (byte-level mutations, plus one that knows
//! the format) and runs the parser on each mutant. A parser may accept or
//! refuse an input; it must never panic, abort, overflow its stack or make
//! an allocation larger than [`alloc_limit::LIMIT`], and a refusal must name
//! the file. Everything is deterministic: iteration `i` of a target draws
//! from a ChaCha8 stream fixed by the seed, the target's name and `i`.
//!
//! `scripts/fuzz.sh` runs the same tests longer. Environment variables:
//! - `CIFAR_KERN_FUZZ_EXECS`: executions per target (default: each
//!   target's own count, sized so the binary takes well under 40 s on 2 cores);
//! - `CIFAR_KERN_FUZZ_SCALE`: or that many times each target's own count;
//! - `CIFAR_KERN_FUZZ_SEED`: the seed (default 0);
//! - `CIFAR_KERN_FUZZ_TRACE=1`: print each iteration before it runs, to find
//!   the one that aborted the process (a stack overflow cannot be caught).
//!
//! A failing input is saved under `target/tmp/fuzz-failures/` and named in
//! the failure message; the fixed ones live on as tests in [`hostile`].

mod alloc_limit;
mod checkpoint;
mod data;
mod hostile;
mod image_files;
mod mutate;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt::Display;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;
use std::{env, fs};

#[global_allocator]
static ALLOCATOR: alloc_limit::LimitedAlloc = alloc_limit::LimitedAlloc;

/// Failures after which a target stops: enough to see a pattern.
const MAX_FAILURES: usize = 5;

/// One parser under test.
pub struct Target<M, R> {
    pub name: &'static str,
    /// Executions in `cargo test` (see the environment variables above).
    pub execs: u64,
    pub seeds: Vec<Vec<u8>>,
    /// Format words that byte-level mutation splices in.
    pub tokens: &'static [&'static [u8]],
    /// The mutation that knows the format; may leave an input it cannot
    /// parse unchanged (byte-level mutation runs as often).
    pub mutate: M,
    /// Writes the input into the fresh folder it is given, runs the parser
    /// on it, and returns whether the input was accepted. Results go
    /// through [`refused`], which checks that refusals name the file.
    pub run: R,
}

impl<M, R> Target<M, R>
where
    M: Fn(&mut ChaCha8Rng, &mut Vec<u8>),
    R: Fn(&[u8], &Path) -> bool,
{
    /// Runs the target and fails with every input that broke a rule.
    pub fn fuzz(self) {
        let scale = env_u64("CIFAR_KERN_FUZZ_SCALE").unwrap_or(1);
        let execs = env_u64("CIFAR_KERN_FUZZ_EXECS").unwrap_or(self.execs * scale);
        let seed = env_u64("CIFAR_KERN_FUZZ_SEED").unwrap_or(0);
        let trace = env::var("CIFAR_KERN_FUZZ_TRACE").is_ok_and(|v| v == "1");
        // Each execution writes and deletes its files, which is most of its
        // cost on a disk; in memory (Linux's /dev/shm) it runs several times faster.
        let shm = Path::new("/dev/shm");
        let scratch = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .unwrap();
        let started = Instant::now();
        let (mut accepted, mut failures) = (0u64, Vec::new());
        let mut done = 0;
        // (seconds, iteration) of the slowest execution: a small file that
        // takes long to refuse is worth knowing about too.
        let mut slowest = (0.0, 0);
        while done < execs && failures.len() < MAX_FAILURES {
            let input = self.input(seed, done);
            if trace {
                eprintln!("fuzz_{}: seed {seed}, iteration {done}", self.name);
            }
            let dir = scratch.path().join(done.to_string());
            fs::create_dir(&dir).unwrap();
            alloc_limit::enter(self.name, seed, done);
            let timer = Instant::now();
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| (self.run)(&input, &dir)));
            let seconds = timer.elapsed().as_secs_f64();
            if seconds > slowest.0 {
                slowest = (seconds, done);
            }
            let oversized = alloc_limit::leave();
            let failure = match (outcome, oversized) {
                (_, Some(bytes)) => Some(format!("asked for one allocation of {bytes} bytes")),
                (Err(payload), None) => Some(format!("panicked: {}", panic_message(&*payload))),
                (Ok(ok), None) => {
                    accepted += u64::from(ok);
                    None
                }
            };
            if let Some(why) = failure {
                let saved = save_failure(self.name, seed, done, &input);
                failures.push(format!("iteration {done} {why} (input saved as {})", saved.display()));
            }
            // A folder the parser left unremovable is a failure of its own.
            fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("cannot remove {}: {e}", dir.display()));
            done += 1;
        }
        println!(
            "fuzz_{}: seed {seed}, {done} executions ({accepted} accepted) in {:.1} s; slowest: iteration {}, {:.3} s",
            self.name,
            started.elapsed().as_secs_f64(),
            slowest.1,
            slowest.0
        );
        assert!(
            failures.is_empty(),
            "fuzz_{} with CIFAR_KERN_FUZZ_SEED={seed}:\n{}",
            self.name,
            failures.join("\n")
        );
    }

    /// Iteration `i`'s input: a seed file mutated one to three times.
    fn input(&self, seed: u64, i: u64) -> Vec<u8> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ name_hash(self.name));
        rng.set_stream(i);
        let mut input = self.seeds[rng.random_range(0..self.seeds.len())].clone();
        for _ in 0..rng.random_range(1..=3) {
            if rng.random_bool(0.5) {
                (self.mutate)(&mut rng, &mut input);
            } else {
                mutate::bytes(&mut rng, &mut input, self.tokens);
            }
        }
        input
    }
}

/// The value of an accepted input; for a refused one, `None` after checking
/// that the error names `path` (a file, or the folder that holds the files).
pub fn refused<T, E: Display>(result: Result<T, E>, path: &Path) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains(&path.display().to_string()),
                "the error does not name {}: {message}",
                path.display()
            );
            None
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a whole number")),
    )
}

/// FNV-1a: gives each target its own random streams under one seed.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(s), _) => s.to_string(),
        (_, Some(s)) => s.clone(),
        _ => "(no message)".into(),
    }
}

fn save_failure(target: &str, seed: u64, iteration: u64, input: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{target}-seed{seed}-iteration{iteration}.bin"));
    fs::write(&path, input).unwrap();
    path
}

/// The harness's own check: the allocator refuses and reports an
/// allocation over its limit.
#[test]
fn oversized_allocations_are_caught() {
    alloc_limit::enter("self_test", 0, 0);
    let refused = Vec::<u8>::new().try_reserve_exact(alloc_limit::LIMIT + 1).is_err();
    assert_eq!((refused, alloc_limit::leave()), (true, Some(alloc_limit::LIMIT + 1)));
}

#[test]
fn fuzz_batch_file() {
    data::batch_file().fuzz();
}

#[test]
fn fuzz_data_folder() {
    data::data_folder().fuzz();
}

#[test]
fn fuzz_archive() {
    data::archive().fuzz();
}

#[test]
fn fuzz_safetensors() {
    checkpoint::safetensors().fuzz();
}

#[test]
fn fuzz_flax() {
    checkpoint::flax().fuzz();
}

#[test]
fn fuzz_png() {
    image_files::png().fuzz();
}

#[test]
fn fuzz_jpeg() {
    image_files::jpeg().fuzz();
}
