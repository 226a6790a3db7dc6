//! `emu_conv`: the implicit-GEMM convolution (forward with bias, data,
//! weight and bias gradients) against `ops::conv`, on small shapes chosen to
//! reach every path of kernels/conv.cu:
//! - partial tiles in every dimension: rows, output channels (7, 70: one and
//!   two 64-wide column tiles) and reduction steps (the 3-channel stem's
//!   K = 27 is one full and one partial step of 16);
//! - padding: SAME 3x3 and 5x5, stride 2 on an even input (no padding
//!   before, one after), an explicit asymmetric window, and a 1x1 stride-2
//!   VALID shortcut;
//! - the weight gradient split into several row chunks (1,280 output pixels
//!   in 5 chunks), the bias gradient into 2 chunks of 1,024 rows, and 3
//!   groups of 32 channels (70 channels).
//!
//! Everything is summed in T in a different order from the CPU's blocked
//! GEMM, hence the bound rather than bits.

use crate::common::{bound, close, randn, trial, under_seeds, Emu};
use cifar_kern::cuda::conv::{
    backward_bias_plan, backward_data_plan, backward_weight_plan, bias_workspace_len, forward_plan,
    weight_workspace_len, ConvShape,
};
use cifar_kern::ops::{conv, Window};
use cifar_kern::Float;
use libtest_mimic::Trial;

struct Case {
    name: &'static str,
    x: [usize; 4],
    w: [usize; 4],
    win: Window,
    /// Row chunks of the weight and bias gradients' first level.
    chunks: (u32, u32),
}

fn cases() -> Vec<Case> {
    let same = |k: usize, s: usize, hw: usize| Window::same([k, k], [s, s], [hw, hw]);
    vec![
        Case {
            name: "stem_3_channels",
            x: [2, 9, 9, 3],
            w: [3, 3, 3, 16],
            win: same(3, 1, 9),
            chunks: (1, 1),
        },
        Case {
            name: "stride2_two_column_tiles",
            x: [2, 10, 10, 8],
            w: [3, 3, 8, 70],
            win: same(3, 2, 10),
            chunks: (1, 1),
        },
        Case {
            name: "5x5",
            x: [1, 7, 7, 12],
            w: [5, 5, 12, 9],
            win: same(5, 1, 7),
            chunks: (1, 1),
        },
        Case {
            name: "asymmetric_padding",
            x: [2, 6, 5, 5],
            w: [3, 2, 5, 7],
            win: Window {
                size: [3, 2],
                stride: [1, 2],
                pad_lo: [2, 1],
                pad_hi: [0, 1],
            },
            chunks: (1, 1),
        },
        Case {
            name: "1x1_stride2_shortcut",
            x: [3, 8, 8, 16],
            w: [1, 1, 16, 32],
            win: Window::valid([1, 1], [2, 2]),
            chunks: (1, 1),
        },
        Case {
            name: "split_k_chunks",
            x: [5, 16, 16, 4],
            w: [3, 3, 4, 40],
            win: same(3, 1, 16),
            chunks: (5, 2),
        },
    ]
}

pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for (i, case) in cases().into_iter().enumerate() {
        let name = case.name;
        trials.push(trial(format!("emu_conv_{name}_f32"), move || check::<f32>(&cases()[i])));
        trials.push(trial(format!("emu_conv_{name}_f64"), move || check::<f64>(&cases()[i])));
    }
    trials
}

fn check<T: Float>(case: &Case) -> Result<(), String> {
    let s = ConvShape::new(&case.x, &case.w, &case.win);
    let y_shape = s.y_shape();
    let (rows, o) = (s.out_rows(), case.w[3]);
    let x = randn::<T>(&case.x, 1);
    let w = randn::<T>(&case.w, 2);
    let b = randn::<T>(&[o], 3);
    let dy = randn::<T>(&y_shape, 4);
    let depth = |plan: &[cifar_kern::cuda::launch::Launch], axis: usize| {
        let g = plan[0].cfg.grid_dim;
        [g.0, g.1, g.2][axis]
    };
    let reached = (
        depth(&backward_weight_plan::<T>(0, 0, 0, 0, &s), 2),
        depth(&backward_bias_plan::<T>(0, 0, 0, rows, o), 0),
    );
    if reached != case.chunks {
        return Err(format!(
            "{}: (weight, bias) chunks {reached:?}, the case is for {:?}",
            case.name, case.chunks
        ));
    }
    let out = under_seeds(case.name, |seed| {
        let mut emu = Emu::default();
        let (px, pw, pb, pdy) = (
            emu.upload(&x, "x"),
            emu.upload(&w, "w"),
            emu.upload(&b, "b"),
            emu.upload(&dy, "dy"),
        );
        let py = emu.alloc::<T>(dy.numel(), "y");
        let pdx = emu.alloc::<T>(x.numel(), "dx");
        let pdw = emu.alloc::<T>(w.numel(), "dw");
        let pdb = emu.alloc::<T>(o, "db");
        let weight_partials = emu.alloc::<T>(weight_workspace_len(&s), "weight partials");
        let bias_partials = emu.alloc::<f64>(bias_workspace_len(rows, o), "bias partials");
        emu.run(&forward_plan::<T>(px, pw, pb, py, &s), seed)?;
        emu.run(&backward_data_plan::<T>(pdy, pw, pdx, &s), seed)?;
        emu.run(&backward_weight_plan::<T>(pdy, px, weight_partials, pdw, &s), seed)?;
        emu.run(&backward_bias_plan::<T>(pdy, bias_partials, pdb, rows, o), seed)?;
        Ok(vec![
            emu.download(py, &y_shape),
            emu.download(pdx, &case.x),
            emu.download(pdw, &case.w),
            emu.download(pdb, &[o]),
        ])
    })?;
    let what = |op: &str| format!("{op} of {}", case.name);
    close(
        &out[0],
        &conv::forward(&x, &w, Some(&b), &case.win),
        bound::<T>(),
        &what("forward"),
    )?;
    close(
        &out[1],
        &conv::backward_data(&dy, &case.x, &w, &case.win),
        bound::<T>(),
        &what("data gradient"),
    )?;
    close(
        &out[2],
        &conv::backward_weight(&dy, &x, &case.w, &case.win),
        bound::<T>(),
        &what("weight gradient"),
    )?;
    close(&out[3], &conv::backward_bias(&dy), bound::<T>(), &what("bias gradient"))
}
