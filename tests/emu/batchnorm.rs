//! `emu_batchnorm`: batch normalisation (train and eval forward, the
//! running-statistics update, train and eval backward) against
//! `ops::batchnorm`. Statistics are f64 whatever T, so f64 is held to 1e-10.
//! The update runs a second time with the epoch's halted word set (a
//! non-finite loss earlier in the epoch) and must change no bit.
//! Shapes reach every path of kernels/batchnorm.cu:
//! - 40 channels: a full and a partial tile of 32 in the `*_partials`
//!   kernels, and five blocks of eight one-warp channels in `finish_sums`;
//! - 576 rows: two chunks of 512, the second partial;
//! - 16,896 rows of 3 channels: 33 chunks, so each lane of `finish_sums`
//!   adds more than one chunk before the shuffle tree.
//!
//! Inputs are shifted by 3, so a variance computed without its mean shows.

use crate::common::{bound, close, randn, same_bits, trial, under_seeds, Emu};
use cifar_kern::cuda::batchnorm::{
    backward_plan, backward_workspace_len, forward_eval_plan, forward_eval_workspace_len, forward_train_plan,
    forward_train_workspace_len, update_running_plan, GradPtrs, StatsPtrs,
};
use cifar_kern::ops::batchnorm::{self as cpu, BatchStats};
use cifar_kern::{Float, Tensor};
use libtest_mimic::Trial;

const SHAPES: [[usize; 4]; 2] = [[4, 12, 12, 40], [33, 16, 32, 3]];

pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for shape in SHAPES {
        let name = format!("{}x{}", shape[..3].iter().product::<usize>(), shape[3]);
        trials.push(trial(format!("emu_batchnorm_{name}_f32"), move || check::<f32>(shape)));
        trials.push(trial(format!("emu_batchnorm_{name}_f64"), move || check::<f64>(shape)));
    }
    trials
}

fn shifted<T: Float>(shape: &[usize], seed: u64) -> Tensor<T> {
    let t = randn::<T>(shape, seed);
    Tensor::new(shape, t.data().iter().map(|&v| T::of(v.f64() + 3.0)).collect())
}

fn positive<T: Float>(c: usize, seed: u64) -> Tensor<T> {
    let t = randn::<T>(&[c], seed);
    Tensor::new(&[c], t.data().iter().map(|&v| T::of(v.f64().abs() + 0.5)).collect())
}

fn check<T: Float>(shape: [usize; 4]) -> Result<(), String> {
    let c = shape[3];
    let x = shifted::<T>(&shape, 1);
    let dy = randn::<T>(&shape, 2);
    let (scale, bias) = (randn::<T>(&[c], 3), randn::<T>(&[c], 4));
    let running = BatchStats {
        mean: randn::<T>(&[c], 5),
        var: positive::<T>(c, 6),
    };
    let out = under_seeds("batchnorm", |seed| {
        let mut emu = Emu::default();
        let n = x.numel();
        let (px, pdy) = (emu.upload(&x, "x"), emu.upload(&dy, "dy"));
        let (pscale, pbias) = (emu.upload(&scale, "scale"), emu.upload(&bias, "bias"));
        let run = StatsPtrs {
            mean: emu.upload(&running.mean, "running mean"),
            var: emu.upload(&running.var, "running var"),
        };
        let batch = StatsPtrs {
            mean: emu.alloc::<T>(c, "batch mean"),
            var: emu.alloc::<T>(c, "batch var"),
        };
        let (y_train, y_eval) = (emu.alloc::<T>(n, "y train"), emu.alloc::<T>(n, "y eval"));
        let grads = |emu: &mut Emu, mode: &str| GradPtrs {
            dx: emu.alloc::<T>(n, &format!("dx {mode}")),
            dscale: emu.alloc::<T>(c, &format!("dscale {mode}")),
            dbias: emu.alloc::<T>(c, &format!("dbias {mode}")),
        };
        let (g_train, g_eval) = (grads(&mut emu, "train"), grads(&mut emu, "eval"));
        let ws_train = emu.alloc::<f64>(forward_train_workspace_len(&shape), "train workspace");
        let ws_eval = emu.alloc::<f64>(forward_eval_workspace_len(&shape), "eval workspace");
        let ws_back = emu.alloc::<f64>(backward_workspace_len(&shape), "backward workspace");

        emu.run(
            &forward_train_plan::<T>(px, &shape, pscale, pbias, y_train, batch, ws_train),
            seed,
        )?;
        emu.run(
            &forward_eval_plan::<T>(px, &shape, pscale, pbias, run, y_eval, ws_eval),
            seed,
        )?;
        emu.run(
            &backward_plan::<T>(pdy, px, &shape, pscale, batch, true, g_train, ws_back),
            seed,
        )?;
        emu.run(
            &backward_plan::<T>(pdy, px, &shape, pscale, run, false, g_eval, ws_back),
            seed,
        )?;
        // The epoch's halted word: clear for the update, then set, after
        // which a second update must change nothing.
        let halted = emu.mem.upload(&[0u64][..], "halted");
        emu.run(&update_running_plan::<T>(run, batch, halted, c), seed)?;
        let vec = |emu: &Emu, p: u64| emu.download::<T>(p, &[c]);
        let updated = [vec(&emu, run.mean), vec(&emu, run.var)];
        emu.mem.write(halted, &[1u64][..]);
        emu.run(&update_running_plan::<T>(run, batch, halted, c), seed)?;
        Ok(vec![
            emu.download(y_train, &shape),
            vec(&emu, batch.mean),
            vec(&emu, batch.var),
            emu.download(y_eval, &shape),
            emu.download(g_train.dx, &shape),
            vec(&emu, g_train.dscale),
            vec(&emu, g_train.dbias),
            emu.download(g_eval.dx, &shape),
            vec(&emu, g_eval.dscale),
            vec(&emu, g_eval.dbias),
            updated[0].clone(),
            updated[1].clone(),
            vec(&emu, run.mean),
            vec(&emu, run.var),
        ])
    })?;
    let b = bound::<T>();
    let (y, stats) = cpu::forward_train(&x, &scale, &bias);
    close(&out[0], &y, b, "train forward")?;
    close(&out[1], &stats.mean, b, "batch mean")?;
    close(&out[2], &stats.var, b, "batch variance")?;
    close(
        &out[3],
        &cpu::forward_eval(&x, &scale, &bias, &running.mean, &running.var),
        b,
        "eval forward",
    )?;
    let (dx, dscale, dbias) = cpu::backward(&dy, &x, &scale, &stats, true);
    close(&out[4], &dx, b, "train dx")?;
    close(&out[5], &dscale, b, "train dscale")?;
    close(&out[6], &dbias, b, "train dbias")?;
    let (dx, dscale, dbias) = cpu::backward(&dy, &x, &scale, &running, false);
    close(&out[7], &dx, b, "eval dx")?;
    close(&out[8], &dscale, b, "eval dscale")?;
    close(&out[9], &dbias, b, "eval dbias")?;
    let (mut mean, mut var) = (running.mean.clone(), running.var.clone());
    cpu::update_running(&mut mean, &mut var, &stats);
    close(&out[10], &mean, b, "running mean")?;
    close(&out[11], &var, b, "running variance")?;
    same_bits(&out[12], &out[10], "running mean after a halted update")?;
    same_bits(&out[13], &out[11], "running variance after a halted update")
}
