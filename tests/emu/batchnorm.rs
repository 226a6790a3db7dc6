//! `emu_batchnorm`: the fused batch norm (train and eval forward with each
//! epilogue, the running-statistics update, train and eval backward) against
//! `ops::batchnorm`. Statistics are f64 whatever T, so f64 is held to 1e-10.
//! The update runs a second time with the epoch's halted word set (a
//! non-finite loss earlier in the epoch) and must change no bit, and the
//! reductions' ticket word must be back at 0 after every launch (the next
//! launch, or graph replay, counts from it).
//!
//! Each shape runs three epilogues: none, ReLU, residual add then ReLU; the
//! emulator runs the blocks in a seeded random order, so a different block
//! finishes each reduction under each seed. Shapes reach every path of
//! kernels/batchnorm.cu:
//! - 40 channels: a full and a partial tile of 32;
//! - 16 channels: a 16-channel tile with 16 row lanes, rows not a multiple
//!   of the chunk;
//! - 16,896 rows of 3 channels: a 4-channel tile (one lane idle) and 512
//!   chunks, so each lane of the last block's merge adds 16 chunks.
//!
//! Inputs are shifted by 3, so a variance computed without its mean shows.

use crate::common::{bound, close, randn, same_bits, trial, under_seeds, Emu};
use cifar_kern::cuda::batchnorm::{
    backward_plan, backward_workspace_len, forward_eval_plan, forward_eval_workspace_len, forward_train_plan,
    forward_train_workspace_len, update_running_plan, GradPtrs, StatsPtrs,
};
use cifar_kern::ops::batchnorm::{self as cpu, BatchStats, Epilogue};
use cifar_kern::{Float, Tensor};
use libtest_mimic::Trial;

const SHAPES: [[usize; 4]; 3] = [[4, 12, 12, 40], [3, 7, 9, 16], [33, 16, 32, 3]];
/// (residual added, ReLU)
const TAILS: [(bool, bool); 3] = [(false, false), (false, true), (true, true)];

pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for shape in SHAPES {
        for (add, relu) in TAILS {
            let name = format!(
                "{}x{}{}{}",
                shape[..3].iter().product::<usize>(),
                shape[3],
                if add { "_add" } else { "" },
                if relu { "_relu" } else { "" }
            );
            trials.push(trial(format!("emu_batchnorm_{name}_f32"), move || {
                check::<f32>(shape, add, relu)
            }));
            trials.push(trial(format!("emu_batchnorm_{name}_f64"), move || {
                check::<f64>(shape, add, relu)
            }));
        }
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

fn check<T: Float>(shape: [usize; 4], add: bool, relu: bool) -> Result<(), String> {
    let c = shape[3];
    let x = shifted::<T>(&shape, 1);
    let dy = randn::<T>(&shape, 2);
    let residual = randn::<T>(&shape, 7);
    let (scale, bias) = (randn::<T>(&[c], 3), randn::<T>(&[c], 4));
    let running = BatchStats {
        mean: randn::<T>(&[c], 5),
        var: positive::<T>(c, 6),
    };
    let cpu_tail = Epilogue {
        residual: add.then_some(&residual),
        relu,
    };
    let out = under_seeds("batchnorm", |seed| {
        let mut emu = Emu::default();
        let n = x.numel();
        let (px, pdy) = (emu.upload(&x, "x"), emu.upload(&dy, "dy"));
        let (pscale, pbias) = (emu.upload(&scale, "scale"), emu.upload(&bias, "bias"));
        let tail = Epilogue {
            residual: add.then(|| emu.upload(&residual, "residual")),
            relu,
        };
        let ticket = emu.mem.upload(&[0u32][..], "ticket");
        let run = StatsPtrs {
            mean: emu.upload(&running.mean, "running mean"),
            var: emu.upload(&running.var, "running var"),
        };
        let batch = StatsPtrs {
            mean: emu.alloc::<T>(c, "batch mean"),
            var: emu.alloc::<T>(c, "batch var"),
        };
        let (y_train, y_eval) = (emu.alloc::<T>(n, "y train"), emu.alloc::<T>(n, "y eval"));
        let grads = |emu: &mut Emu, mode: &str| {
            let ptrs = GradPtrs {
                dx: emu.alloc::<T>(n, &format!("dx {mode}")),
                dscale: emu.alloc::<T>(c, &format!("dscale {mode}")),
                dbias: emu.alloc::<T>(c, &format!("dbias {mode}")),
            };
            let dresidual = add.then(|| emu.alloc::<T>(n, &format!("dresidual {mode}")));
            (
                ptrs,
                Epilogue {
                    residual: dresidual,
                    relu,
                },
            )
        };
        let (g_train, g_eval) = (grads(&mut emu, "train"), grads(&mut emu, "eval"));
        let ws_train = emu.alloc::<f64>(forward_train_workspace_len(&shape), "train workspace");
        let ws_eval = emu.alloc::<f64>(forward_eval_workspace_len(&shape), "eval workspace");
        let ws_back = emu.alloc::<f64>(backward_workspace_len(&shape), "backward workspace");
        let ticket_is_zero = |emu: &Emu, after: &str| match emu.mem.read::<u32>(ticket, 1)[0] {
            0 => Ok(()),
            t => Err(format!("the ticket is {t} after {after}, not 0")),
        };

        emu.run(
            &forward_train_plan::<T>(px, &shape, pscale, pbias, tail, y_train, batch, ws_train, ticket),
            seed,
        )?;
        ticket_is_zero(&emu, "the train forward")?;
        emu.run(
            &forward_eval_plan::<T>(px, &shape, pscale, pbias, run, tail, y_eval, ws_eval),
            seed,
        )?;
        let (grads_train, tail_train) = g_train;
        emu.run(
            &backward_plan::<T>(
                pdy,
                px,
                y_train,
                &shape,
                pscale,
                batch,
                true,
                tail_train,
                grads_train,
                ws_back,
                ticket,
            ),
            seed,
        )?;
        ticket_is_zero(&emu, "the train backward")?;
        let (grads_eval, tail_eval) = g_eval;
        emu.run(
            &backward_plan::<T>(
                pdy, px, y_eval, &shape, pscale, run, false, tail_eval, grads_eval, ws_back, ticket,
            ),
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
        let dresidual = |emu: &Emu, t: Epilogue<u64>| match t.residual {
            Some(p) => emu.download(p, &shape),
            None => Tensor::new(&[0], vec![]),
        };
        Ok(vec![
            emu.download(y_train, &shape),
            vec(&emu, batch.mean),
            vec(&emu, batch.var),
            emu.download(y_eval, &shape),
            emu.download(grads_train.dx, &shape),
            vec(&emu, grads_train.dscale),
            vec(&emu, grads_train.dbias),
            dresidual(&emu, tail_train),
            emu.download(grads_eval.dx, &shape),
            vec(&emu, grads_eval.dscale),
            vec(&emu, grads_eval.dbias),
            dresidual(&emu, tail_eval),
            updated[0].clone(),
            updated[1].clone(),
            vec(&emu, run.mean),
            vec(&emu, run.var),
        ])
    })?;
    let b = bound::<T>();
    let (y, stats) = cpu::forward_train(&x, &scale, &bias, cpu_tail);
    close(&out[0], &y, b, "train forward")?;
    close(&out[1], &stats.mean, b, "batch mean")?;
    close(&out[2], &stats.var, b, "batch variance")?;
    let y_eval = cpu::forward_eval(&x, &scale, &bias, &running, cpu_tail);
    close(&out[3], &y_eval, b, "eval forward")?;
    let grad_tail = Epilogue {
        residual: add.then_some(()),
        relu,
    };
    // The GPU's outputs as the masks: where y is within rounding of 0, the
    // CPU's y could fall on the other side of the ReLU.
    let empty = || Tensor::new(&[0], vec![]);
    let train = cpu::backward(&dy, &x, &out[0], &scale, &stats, true, grad_tail);
    close(&out[4], &train.dx, b, "train dx")?;
    close(&out[5], &train.dscale, b, "train dscale")?;
    close(&out[6], &train.dbias, b, "train dbias")?;
    same_bits(&out[7], &train.dresidual.unwrap_or_else(empty), "train dresidual")?;
    let eval = cpu::backward(&dy, &x, &out[3], &scale, &running, false, grad_tail);
    close(&out[8], &eval.dx, b, "eval dx")?;
    close(&out[9], &eval.dscale, b, "eval dscale")?;
    close(&out[10], &eval.dbias, b, "eval dbias")?;
    same_bits(&out[11], &eval.dresidual.unwrap_or_else(empty), "eval dresidual")?;
    let (mut mean, mut var) = (running.mean.clone(), running.var.clone());
    cpu::update_running(&mut mean, &mut var, &stats);
    close(&out[12], &mean, b, "running mean")?;
    close(&out[13], &var, b, "running variance")?;
    same_bits(&out[14], &out[12], "running mean after a halted update")?;
    same_bits(&out[15], &out[13], "running variance after a halted update")
}
