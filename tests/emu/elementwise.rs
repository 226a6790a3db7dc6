//! `emu_elementwise`: ReLU, its backward and the add, bit for bit against
//! the CPU ops (each element is a move, a comparison or one correctly
//! rounded addition). 700 elements: three blocks of 256, the last partial;
//! NaN, zeros and negative values included. A second run of each plan with
//! its grid cut to one block takes the grid-stride loop around three times.

use crate::common::{randn, same_bits, trial, under_seeds, Emu};
use cifar_kern::cuda::elementwise::{add_plan, relu_backward_plan, relu_plan};
use cifar_kern::cuda::launch::Launch;
use cifar_kern::ops::elementwise;
use cifar_kern::{Float, Tensor};
use libtest_mimic::Trial;

const N: usize = 700;

pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for one_block in [false, true] {
        let grid = if one_block { "_one_block" } else { "" };
        trials.push(trial(format!("emu_elementwise_f32{grid}"), move || {
            check::<f32>(one_block)
        }));
        trials.push(trial(format!("emu_elementwise_f64{grid}"), move || {
            check::<f64>(one_block)
        }));
    }
    trials
}

/// Values with NaN, exact zeros and both signs.
fn input<T: Float>(seed: u64) -> Tensor<T> {
    let mut t = randn::<T>(&[N], seed);
    for i in (0..N).step_by(97) {
        t.data_mut()[i] = T::of(0.0);
    }
    t.data_mut()[5] = T::of(f64::NAN);
    t
}

fn grid_of(mut plan: Vec<Launch>, one_block: bool) -> Vec<Launch> {
    if one_block {
        plan[0].cfg.grid_dim = (1, 1, 1);
    }
    plan
}

fn check<T: Float>(one_block: bool) -> Result<(), String> {
    let (x, dy, b) = (input::<T>(1), input::<T>(2), input::<T>(3));
    let out = under_seeds("elementwise", |seed| {
        let mut emu = Emu::default();
        let (px, pdy, pb) = (emu.upload(&x, "x"), emu.upload(&dy, "dy"), emu.upload(&b, "b"));
        let (py, pdx, psum) = (
            emu.alloc::<T>(N, "y"),
            emu.alloc::<T>(N, "dx"),
            emu.alloc::<T>(N, "sum"),
        );
        emu.run(&grid_of(relu_plan::<T>(px, py, N), one_block), seed)?;
        emu.run(&grid_of(relu_backward_plan::<T>(pdy, py, pdx, N), one_block), seed)?;
        emu.run(&grid_of(add_plan::<T>(px, pb, psum, N), one_block), seed)?;
        Ok(vec![
            emu.download(py, &[N]),
            emu.download(pdx, &[N]),
            emu.download(psum, &[N]),
        ])
    })?;
    let y = elementwise::relu(&x);
    same_bits(&out[0], &y, "relu")?;
    same_bits(&out[1], &elementwise::relu_backward(&dy, &y), "relu backward")?;
    same_bits(&out[2], &elementwise::add(&x, &b), "add")
}
