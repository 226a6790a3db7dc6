//! Test-only kill points: a way for tests to kill `train` anywhere and check
//! that the run survives (resumes to the same bytes).
//!
//! In a debug build (which is what `cargo test` runs), the environment
//! variable `CIFAR_KERN_KILL_AT=<phase>:<epoch>:<n>` makes the process kill
//! itself with SIGKILL the `n`-th time it reaches `<phase>` in epoch
//! `<epoch>` (1-based; the final evaluation after the last epoch counts as
//! epoch `epochs + 1`). The phases:
//! - `step`: inside a training step, after the backward, before the update;
//! - `eval`: before each evaluation batch (validation and test);
//! - `save`: halfway through writing a file atomically (a checkpoint,
//!   `results.json`), so the temporary file is half written.
//!
//! `CIFAR_KERN_KILL_LOG=<file>` appends every point reached, one
//! `<phase>:<epoch>:<n>` per line, so a test can draw kill points from a real
//! run instead of guessing them. Release builds ignore both variables: the
//! checks compile to nothing.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

pub const KILL_AT_VAR: &str = "CIFAR_KERN_KILL_AT";
pub const KILL_LOG_VAR: &str = "CIFAR_KERN_KILL_LOG";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Step,
    Eval,
    Save,
}

impl Phase {
    const ALL: [Phase; 3] = [Phase::Step, Phase::Eval, Phase::Save];

    fn name(self) -> &'static str {
        match self {
            Phase::Step => "step",
            Phase::Eval => "eval",
            Phase::Save => "save",
        }
    }
}

/// What the environment asked for, read once.
struct Plan {
    kill_at: Option<(Phase, usize, usize)>,
    log: Option<Mutex<File>>,
}

impl Plan {
    fn from_env() -> Plan {
        let kill_at = std::env::var(KILL_AT_VAR).ok().map(|text| {
            parse(&text).unwrap_or_else(|| panic!("{KILL_AT_VAR}={text}: expected <step|eval|save>:<epoch>:<n>"))
        });
        let log = std::env::var_os(KILL_LOG_VAR).map(|path| {
            let file = OpenOptions::new().create(true).append(true).open(&path);
            Mutex::new(file.unwrap_or_else(|e| panic!("{KILL_LOG_VAR}: cannot open {path:?}: {e}")))
        });
        Plan { kill_at, log }
    }
}

fn parse(text: &str) -> Option<(Phase, usize, usize)> {
    let mut parts = text.split(':');
    let phase = parts.next()?;
    let phase = Phase::ALL.into_iter().find(|p| p.name() == phase)?;
    let epoch = parts.next()?.parse().ok()?;
    let n = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((phase, epoch, n))
}

static EPOCH: AtomicUsize = AtomicUsize::new(0);
static COUNTS: [AtomicUsize; 3] = [AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)];

/// Marks the start of epoch `epoch` (1-based): the counts start over.
pub fn enter_epoch(epoch: usize) {
    if cfg!(debug_assertions) {
        EPOCH.store(epoch, Ordering::SeqCst);
        for count in &COUNTS {
            count.store(0, Ordering::SeqCst);
        }
    }
}

/// Counts one arrival at `phase`, and kills the process if it is the point
/// `CIFAR_KERN_KILL_AT` names.
pub fn reached(phase: Phase) {
    if !cfg!(debug_assertions) {
        return;
    }
    static PLAN: OnceLock<Plan> = OnceLock::new();
    let plan = PLAN.get_or_init(Plan::from_env);
    if plan.kill_at.is_none() && plan.log.is_none() {
        return;
    }
    let epoch = EPOCH.load(Ordering::SeqCst);
    let n = COUNTS[phase as usize].fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(log) = &plan.log {
        let mut file = log.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(file, "{}:{epoch}:{n}", phase.name()).expect("the kill-point log is writable");
    }
    if plan.kill_at == Some((phase, epoch, n)) {
        // SIGKILL, not an exit: nothing gets to flush, close or clean up.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_points_parse() {
        assert_eq!(parse("step:2:3"), Some((Phase::Step, 2, 3)));
        assert_eq!(parse("save:1:1"), Some((Phase::Save, 1, 1)));
        for bad in ["step:2", "step:2:3:4", "jump:1:1", "eval:x:1", ""] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
