//! `emu_reduce`: the mean over H and W (the networks' heads) and its
//! backward, against the CPU ops: sums in f64 whatever T, so the f64 bound
//! is 1e-10. Shapes: a 4x4 and a 7x7 head, batch 3, channel counts that
//! are not multiples of anything (13, 41); the forward fills part of one
//! block, the backward several.

use crate::common::{bound, close, randn, trial, under_seeds, Emu};
use cifar_kern::cuda::reduce::{mean_hw_backward_plan, mean_hw_plan};
use cifar_kern::ops::reduce;
use cifar_kern::Float;
use libtest_mimic::Trial;

const SHAPES: [[usize; 4]; 2] = [[3, 4, 4, 41], [3, 7, 7, 13]];

pub fn trials() -> Vec<Trial> {
    vec![
        trial("emu_reduce_mean_hw_f32".into(), check::<f32>),
        trial("emu_reduce_mean_hw_f64".into(), check::<f64>),
    ]
}

fn check<T: Float>() -> Result<(), String> {
    for shape in SHAPES {
        let [n, _, _, c] = shape;
        let x = randn::<T>(&shape, 1);
        let dy = randn::<T>(&[n, c], 2);
        let out = under_seeds("mean_hw", |seed| {
            let mut emu = Emu::default();
            let (px, pdy) = (emu.upload(&x, "x"), emu.upload(&dy, "dy"));
            let (py, pdx) = (emu.alloc::<T>(n * c, "y"), emu.alloc::<T>(x.numel(), "dx"));
            emu.run(&mean_hw_plan::<T>(px, py, &shape), seed)?;
            emu.run(&mean_hw_backward_plan::<T>(pdy, pdx, &shape), seed)?;
            Ok(vec![emu.download(py, &[n, c]), emu.download(pdx, &shape)])
        })?;
        let what = |op: &str| format!("{op} at {shape:?}");
        close(&out[0], &reduce::mean_hw(&x), bound::<T>(), &what("mean_hw"))?;
        close(
            &out[1],
            &reduce::mean_hw_backward(&dy, &shape),
            bound::<T>(),
            &what("mean_hw backward"),
        )?;
    }
    Ok(())
}
