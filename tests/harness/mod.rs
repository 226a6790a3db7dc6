//! The harness of the test binaries whose tests need something a machine may
//! lack (`tests/gpu/`: a usable GPU; `tests/fixtures/`: the reference
//! fixtures). Such a test is reported as *ignored*, with the reason, when its
//! need is not met (`test gpu_conv_f32_matches_cpu ... ignored (no GPU: ...)`),
//! never as passed; and it fails instead when the need's `CIFAR_KERN_REQUIRE_*`
//! variable is `1`. The needs are probed when a test runs, so `--list` opens
//! no GPU.
//!
//! Each binary's families list their tests with [`tests!`] and turn them into
//! trials with [`needing`] (or [`plain`] for the few that need nothing); the
//! family's name becomes the trial's kind (`[conv] gpu_conv_...`), which
//! `--list` shows and a filter can select (`gpu '[conv]'`).

#![allow(dead_code)] // each binary uses its own subset

use libtest_mimic::{Arguments, Completion, Failed, Trial};

/// Something tests need that a machine may lack.
pub struct Need {
    /// What is missing when the probe fails, e.g. "no GPU": the start of the
    /// reason an ignored test shows.
    pub missing: &'static str,
    /// The variable that, set to `1`, turns a missing need into failures.
    pub require_var: &'static str,
    /// `Ok` when the need is met, else why not.
    pub probe: fn() -> Result<(), String>,
}

impl Need {
    /// `Ok(None)` when met; `Ok(Some(reason))` when a test should be ignored;
    /// `Err` when it is missing but required.
    fn check(&self) -> Result<Option<String>, String> {
        match (self.probe)() {
            Ok(()) => Ok(None),
            Err(why) if std::env::var(self.require_var).is_ok_and(|v| v == "1") => Err(format!(
                "{}: {why}, but {}=1 requires it",
                self.missing, self.require_var
            )),
            Err(why) => Ok(Some(format!("{}: {why}", self.missing))),
        }
    }
}

/// A test's name and its body, which panics on failure.
pub type Test = (&'static str, fn());

/// `tests![a, b]`: the test functions `a` and `b`, named as they are.
macro_rules! tests {
    ($($test:ident),* $(,)?) => {
        vec![$((stringify!($test), $test as fn())),*]
    };
}

/// Trials of `family` that run only when every one of `needs` is met; else
/// each is ignored with the first unmet need's reason, or fails when that
/// need is required.
pub fn needing(family: &str, needs: &[&'static Need], tests: Vec<Test>) -> Vec<Trial> {
    tests
        .into_iter()
        .map(|(name, test)| {
            let needs = needs.to_vec();
            Trial::ignorable_test(name, move || {
                for need in needs {
                    if let Some(reason) = need.check().map_err(Failed::from)? {
                        return Ok(Completion::ignored_with(reason));
                    }
                }
                test();
                Ok(Completion::Completed)
            })
            .with_kind(family)
        })
        .collect()
}

/// Trials of `family` that need nothing.
pub fn plain(family: &str, tests: Vec<Test>) -> Vec<Trial> {
    needing(family, &[], tests)
}

/// Runs the trials of every family with the command line's arguments and
/// exits with libtest's status.
pub fn main(families: &[fn() -> Vec<Trial>]) -> ! {
    let args = Arguments::from_args();
    let trials = families.iter().flat_map(|family| family()).collect();
    libtest_mimic::run(&args, trials).exit()
}
