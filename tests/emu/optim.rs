//! `emu_optim`: the optimiser's update (`optimizer_update`) and the advance
//! of its device-side update count (`advance_step`), bit for bit against
//! `optim::Optimizer::step`: the kernel does the CPU's arithmetic
//! expression by expression, correctly rounded and never fused, and its
//! bias corrections call the same libm `pow` as the CPU here.
//!
//! SGD with momentum and weight decay, Adam and AdamW, three updates each
//! with the learning rate dropping x0.1 before the 2nd and the 3rd (both
//! schedule boundaries crossed, the count read from device memory each
//! time); gradients of scale 2, so many are clipped. After every update the
//! parameters, the moments and the count are compared. A fourth update
//! with the epoch's halted word set (a non-finite loss earlier in the
//! epoch) must change no bit of any of them.
//!
//! Layout: three named tensors (a bias of 13, a 3x3x5x7 kernel, a scalar),
//! 329 elements: two blocks, the last partial. The update's grid is capped
//! at 1,024 blocks of 256 (checked on the plan of 262,444 elements), so only
//! beyond 262,144 elements does a thread take the grid-stride loop around
//! twice; emulating that many threads takes seconds. So the `_one_block`
//! cases add a 19x21 tensor (728 elements) and cut the plan's grid to one
//! block: the update's loops (SGD's and Adam's are separate) go around three
//! times for the first 216 threads and twice for the rest, exactly as
//! with the capped grid.

use crate::common::{randn, same_bits, trial, under_seeds, Emu};
use cifar_kern::cuda::optim::{step_plan, FlatLayout};
use cifar_kern::optim::{LrSchedule, Optimizer, OptimizerConfig, OptimizerKind};
use cifar_kern::{Float, Tensor};
use libtest_mimic::Trial;
use std::collections::BTreeMap;

/// Updates per case.
const UPDATES: usize = 3;
/// `UPDATE_THREADS * MAX_UPDATE_BLOCKS` in src/cuda/optim.rs: the most
/// elements one pass of the capped grid covers.
const CAPPED_GRID_THREADS: usize = 256 * 1024;

fn config(kind: &str) -> OptimizerConfig {
    let (kind, base_lr) = match kind {
        "sgd" => (
            OptimizerKind::Sgd {
                momentum: 0.9,
                weight_decay: 1e-4,
            },
            0.1,
        ),
        "adam" => (OptimizerKind::Adam, 1e-3),
        "adamw" => (OptimizerKind::AdamW { weight_decay: 1e-4 }, 1e-3),
        _ => unreachable!("optimizer kind {kind}"),
    };
    OptimizerConfig {
        kind,
        schedule: LrSchedule {
            base_lr,
            boundaries: vec![1, 2],
            factor: 0.1,
        },
    }
}

fn small_shapes() -> Vec<(&'static str, Vec<usize>)> {
    vec![
        ("b/kernel", vec![3, 3, 5, 7]),
        ("a/bias", vec![13]),
        ("c/scale", vec![]),
    ]
}

pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for one_block in [false, true] {
        let grid = if one_block { "_one_block" } else { "" };
        for kind in ["sgd", "adam", "adamw"] {
            trials.push(trial(format!("emu_optim_{kind}{grid}_f32"), move || {
                check::<f32>(kind, one_block)
            }));
            trials.push(trial(format!("emu_optim_{kind}{grid}_f64"), move || {
                check::<f64>(kind, one_block)
            }));
        }
    }
    trials
}

/// Named tensors of `shapes`, random of scale `scale`.
fn named<T: Float>(shapes: &[(&str, Vec<usize>)], scale: f64, seed: u64) -> BTreeMap<String, Tensor<T>> {
    shapes
        .iter()
        .zip(seed * 100..)
        .map(|((name, shape), s)| {
            let t = randn::<f64>(shape, s);
            let scaled = Tensor::new(shape, t.data().iter().map(|v| T::of(v * scale)).collect());
            (name.to_string(), scaled)
        })
        .collect()
}

fn check<T: Float>(kind: &str, one_block: bool) -> Result<(), String> {
    let config = config(kind);
    let mut shapes = small_shapes();
    if one_block {
        shapes.push(("d/dense", vec![19, 21]));
    }
    let adam = !matches!(config.kind, OptimizerKind::Sgd { .. });
    let params = named::<T>(&shapes, 1.0, 1);
    let grads: Vec<_> = (0..UPDATES as u64).map(|s| named::<T>(&shapes, 2.0, 2 + s)).collect();
    let layout = FlatLayout::of(&params);
    let len = layout.len();
    let flat = |named: &BTreeMap<String, Tensor<T>>| Tensor::new(&[len], layout.flatten(named));

    // The update's grid covers len, up to the cap of 1,024 blocks.
    for n in [len, CAPPED_GRID_THREADS + 300] {
        let blocks = step_plan::<T>(&config, 0, 0, 0, 0, 0, 0, n)[0].cfg.grid_dim.0 as usize;
        if blocks != n.div_ceil(256).min(1024) {
            return Err(format!("{n} elements: the update has {blocks} blocks"));
        }
    }
    let plan = |pparams, pgrad, pmu, pnu, pstep, phalted| {
        let mut plan = step_plan::<T>(&config, pparams, pgrad, pmu, pnu, pstep, phalted, len);
        if one_block {
            plan[0].cfg.grid_dim = (1, 1, 1);
        }
        plan
    };

    let out = under_seeds(kind, |seed| {
        let mut emu = Emu::default();
        let pparams = emu.upload(&flat(&params), "params");
        let pgrads: Vec<u64> = grads.iter().map(|g| emu.upload(&flat(g), "grads")).collect();
        let zeros = Tensor::<T>::zeros(&[len]);
        let pmu = emu.upload(&zeros, "mu");
        let pnu = if adam { emu.upload(&zeros, "nu") } else { 0 };
        let pstep = emu.mem.upload(&[0u64][..], "step");
        let phalted = emu.mem.upload(&[0u64][..], "halted");
        let mut out = Vec::new();
        let mut update = |emu: &mut Emu, pgrad| -> Result<(), String> {
            emu.run(&plan(pparams, pgrad, pmu, pnu, pstep, phalted), seed)?;
            out.push(emu.download(pparams, &[len]));
            out.push(emu.download(pmu, &[len]));
            if adam {
                out.push(emu.download(pnu, &[len]));
            }
            let step: Vec<u64> = emu.mem.read(pstep, 1);
            out.push(Tensor::scalar(T::of(step[0] as f64)));
            Ok(())
        };
        for &pgrad in &pgrads {
            update(&mut emu, pgrad)?;
        }
        // A non-finite loss earlier in the epoch: the update must change nothing.
        emu.mem.write(phalted, &[1u64][..]);
        update(&mut emu, pgrads[0])?;
        Ok(out)
    })?;

    let mut cpu_params = params.clone();
    let mut cpu = Optimizer::new(config.clone(), &cpu_params);
    let mut got = out.iter();
    for (update, g) in grads.iter().enumerate() {
        let lr = cpu.learning_rate();
        cpu.step(&mut cpu_params, g);
        let what = |x: &str| format!("{kind} {x} after update {update} (lr {lr:e})");
        let state = cpu.state_tensors();
        let moment = |prefix: &str| {
            let named = layout
                .entries()
                .map(|(name, ..)| (name.to_string(), state[&format!("opt/{prefix}/{name}")].clone()))
                .collect();
            Tensor::new(&[len], layout.flatten(&named))
        };
        same_bits(got.next().unwrap(), &flat(&cpu_params), &what("parameters"))?;
        same_bits(got.next().unwrap(), &moment("mu"), &what("mu"))?;
        if adam {
            same_bits(got.next().unwrap(), &moment("nu"), &what("nu"))?;
        }
        let count = Tensor::scalar(T::of(cpu.step_count() as f64));
        same_bits(got.next().unwrap(), &count, &what("update count"))?;
    }
    // The halted update: every buffer as after the last real one.
    let per_update = out.len() / (UPDATES + 1);
    let (last, halted) = out[out.len() - 2 * per_update..].split_at(per_update);
    for (i, (after, before)) in halted.iter().zip(last).enumerate() {
        same_bits(after, before, &format!("{kind} buffer {i} after a halted update"))?;
    }
    Ok(())
}
