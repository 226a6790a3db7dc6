//! `emu_dense`: the dense layer's forward (`y = x W + b`, and without a bias:
//! a null bias pointer) and backward (`dx = dy W^T` and `dw = x^T dy` through
//! the strided matmul's transposed views, `db` by `column_sum`), within
//! [`bound`] of `ops::dense` (the CPU's blocked GEMM sums in another order).
//!
//! Shapes: a classifier head (n 33, k 19, o 10: the forward's 330 outputs
//! and dx's 627 span two and three blocks, the last partial, and
//! `column_sum` is one partial block), and a wide layer (n 3, k 5, o 263),
//! whose `column_sum` spans two blocks and whose dx (15 outputs) leaves
//! most of one block idle. `launch_1d` caps the grid only at 65,535 blocks,
//! so no small shape takes the grid-stride loops around twice.

use crate::common::{bound, close, randn, trial, under_seeds, Emu};
use cifar_kern::cuda::dense::{backward_plan, forward_plan};
use cifar_kern::ops::dense as cpu;
use cifar_kern::{Float, Tensor};
use libtest_mimic::Trial;

/// (case name, (n, k, o))
const CASES: [(&str, (usize, usize, usize)); 2] = [("head", (33, 19, 10)), ("wide", (3, 5, 263))];

pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for (name, dims) in CASES {
        trials.push(trial(format!("emu_dense_{name}_f32"), move || check::<f32>(dims)));
        trials.push(trial(format!("emu_dense_{name}_f64"), move || check::<f64>(dims)));
    }
    trials
}

fn check<T: Float>((n, k, o): (usize, usize, usize)) -> Result<(), String> {
    let (x, w, b) = (randn::<T>(&[n, k], 1), randn::<T>(&[k, o], 2), randn::<T>(&[o], 3));
    let dy = randn::<T>(&[n, o], 4);
    let out = under_seeds("dense", |seed| {
        let mut emu = Emu::default();
        let (px, pw, pb, pdy) = (
            emu.upload(&x, "x"),
            emu.upload(&w, "w"),
            emu.upload(&b, "b"),
            emu.upload(&dy, "dy"),
        );
        let (py, py_unbiased) = (emu.alloc::<T>(n * o, "y"), emu.alloc::<T>(n * o, "y without bias"));
        let (pdx, pdw, pdb) = (
            emu.alloc::<T>(n * k, "dx"),
            emu.alloc::<T>(k * o, "dw"),
            emu.alloc::<T>(o, "db"),
        );
        emu.run(&forward_plan::<T>(px, pw, pb, py, (n, k, o)), seed)?;
        emu.run(&forward_plan::<T>(px, pw, 0, py_unbiased, (n, k, o)), seed)?;
        emu.run(&backward_plan::<T>(pdy, px, pw, (pdx, pdw, pdb), (n, k, o)), seed)?;
        Ok(vec![
            emu.download(py, &[n, o]),
            emu.download(py_unbiased, &[n, o]),
            emu.download(pdx, &[n, k]),
            emu.download(pdw, &[k, o]),
            emu.download(pdb, &[o]),
        ])
    })?;
    let what = |op: &str| format!("dense {op} at (n, k, o) = {:?}", (n, k, o));
    close(&out[0], &cpu::forward(&x, &w, &b), bound::<T>(), &what("forward"))?;
    let no_bias = cpu::forward(&x, &w, &Tensor::zeros(&[o]));
    close(&out[1], &no_bias, bound::<T>(), &what("forward without bias"))?;
    let (dx, dw, db) = cpu::backward(&dy, &x, &w);
    close(&out[2], &dx, bound::<T>(), &what("dx"))?;
    close(&out[3], &dw, bound::<T>(), &what("dw"))?;
    close(&out[4], &db, bound::<T>(), &what("db"))
}
