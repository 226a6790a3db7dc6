//! `emu_concat`: concatenation along channels and its backward split,
//! bit for bit against `ops::concat` (both are copies).
//!
//! Shapes: an inception-like 4-way concat of unequal widths (16, 33, 8, 7)
//! behind `[2, 3, 5]`, where the widest piece spans four 256-thread blocks
//! (the last partial) and the narrower pieces' block columns leave threads
//! idle; a DenseNet-like 2-way concat of 2-D tensors; and eleven pieces of
//! widths 1..=11, which take two launches (8 pieces, then 3). `launch_1d`
//! caps the grid only at 65,535 blocks, so no small shape takes the
//! grid-stride loop around twice.

use crate::common::{randn, same_bits, trial, under_seeds, Emu};
use cifar_kern::cuda::concat::{backward_plan, forward_plan};
use cifar_kern::ops::concat as cpu;
use cifar_kern::Float;
use libtest_mimic::Trial;

/// (case name, leading dims, piece widths, launches per plan)
const CASES: [(&str, &[usize], &[usize], usize); 3] = [
    ("inception", &[2, 3, 5], &[16, 33, 8, 7], 1),
    ("two_way", &[37], &[45, 16], 1),
    ("eleven_pieces", &[3, 5, 7], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 2),
];

pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for (name, lead, widths, launches) in CASES {
        trials.push(trial(format!("emu_concat_{name}_f32"), move || {
            check::<f32>(lead, widths, launches)
        }));
        trials.push(trial(format!("emu_concat_{name}_f64"), move || {
            check::<f64>(lead, widths, launches)
        }));
    }
    trials
}

fn check<T: Float>(lead: &[usize], widths: &[usize], launches: usize) -> Result<(), String> {
    let rows: usize = lead.iter().product();
    let total: usize = widths.iter().sum();
    let with_width = |w: usize| [lead, &[w]].concat();
    let parts: Vec<_> = widths
        .iter()
        .zip(1..)
        .map(|(&w, seed)| randn::<T>(&with_width(w), seed))
        .collect();
    let dy = randn::<T>(&with_width(total), 100);
    // The plan's shape: one launch per group of 8 pieces, a block column per piece.
    let plan = forward_plan::<T>(&vec![0; widths.len()], widths, 0, rows);
    let columns: Vec<u32> = plan.iter().map(|l| l.cfg.grid_dim.1).collect();
    let want: Vec<u32> = widths.chunks(8).map(|g| g.len() as u32).collect();
    if plan.len() != launches || columns != want {
        return Err(format!(
            "{} pieces: {} launches with block columns {columns:?}, expected {launches} with {want:?}",
            widths.len(),
            plan.len()
        ));
    }
    let out = under_seeds("concat", |seed| {
        let mut emu = Emu::default();
        let pparts: Vec<u64> = parts.iter().map(|p| emu.upload(p, "part")).collect();
        let pdy = emu.upload(&dy, "dy");
        let py = emu.alloc::<T>(rows * total, "y");
        let ppieces: Vec<u64> = widths.iter().map(|&w| emu.alloc::<T>(rows * w, "piece")).collect();
        emu.run(&forward_plan::<T>(&pparts, widths, py, rows), seed)?;
        emu.run(&backward_plan::<T>(pdy, &ppieces, widths, rows), seed)?;
        let mut out = vec![emu.download(py, &with_width(total))];
        out.extend(
            ppieces
                .iter()
                .zip(widths)
                .map(|(&p, &w)| emu.download(p, &with_width(w))),
        );
        Ok(out)
    })?;
    same_bits(&out[0], &cpu::forward(&parts.iter().collect::<Vec<_>>()), "concat")?;
    for (k, want) in cpu::backward(&dy, widths).iter().enumerate() {
        same_bits(&out[1 + k], want, &format!("split piece {k} of {widths:?}"))?;
    }
    Ok(())
}
