//! The `emu_` suite: every kernel of `kernels/*.cu`, run by the CPU kernel
//! emulator (`crates/kernel-emu`) on small shapes that reach every path, and
//! compared with the CPU reference ops.
//!
//! Each case runs the launch plans the GPU path runs (`cuda::<family>::*_plan`)
//! under several scheduling seeds; every seed must give the same bits (the
//! kernels are deterministic) and match the CPU op: bit for bit for kernels
//! built from correctly rounded operations, integers and moves (optimiser,
//! augmentation, concat, max-pool), within a stated bound otherwise (at most
//! 1e-10 relative for f64, so a float32 accumulation in an f64 path fails).
//! The emulation proves logic, never the GPU's bits.
//!
//! One binary (`harness = false`), so that after the cases it can check
//! coverage: every kernel the emulator compiled from `kernels/*.cu` (f32 and
//! f64 instantiations alike) must have been launched by some case.

mod common;
mod memory;

mod augment;
mod batchnorm;
mod concat;
mod conv;
mod conv_tc;
mod dense;
mod elementwise;
mod loss;
mod optim;
mod pool;
mod reduce;
mod tensor_core;
mod tf32;

use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    for family in [
        augment::trials,
        batchnorm::trials,
        concat::trials,
        conv::trials,
        conv_tc::trials,
        dense::trials,
        elementwise::trials,
        loss::trials,
        optim::trials,
        pool::trials,
        reduce::trials,
        tensor_core::trials,
    ] {
        trials.extend(family());
    }
    let cases = libtest_mimic::run(&args, trials);
    // Coverage only means something when every case ran.
    let complete = args.filter.is_none() && args.skip.is_empty() && !args.list && !args.ignored;
    let coverage = libtest_mimic::run(
        &args,
        vec![Trial::test("emu_coverage", check_coverage).with_ignored_flag(!complete)],
    );
    if cases.has_failed() || coverage.has_failed() {
        std::process::exit(101);
    }
}

/// Every kernel of kernels/*.cu was launched by at least one case.
fn check_coverage() -> Result<(), Failed> {
    let launched = kernel_emu::launched();
    let missing: Vec<String> = kernel_emu::kernels()
        .iter()
        .filter(|k| !launched.contains(&k.name))
        .map(|k| format!("{} (kernels/{}.cu)", k.name, k.module))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} kernels have no emu_ case: {}",
            missing.len(),
            kernel_emu::kernels().len(),
            missing.join(", ")
        )
        .into())
    }
}
