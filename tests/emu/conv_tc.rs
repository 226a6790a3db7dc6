//! `emu_conv_tc`: the tensor-core convolution (kernels/conv_tc.cu), every
//! tile in both copy widths and all three directions, against the CPU op in
//! f64 on the TF32-rounded operands, element by element within the
//! accumulation bound of `tf32.rs`. The shapes reach every path:
//! - 16-byte copies (channels multiples of 4) and 4-byte copies (the
//!   3-channel stem, 7 output channels);
//! - partial tiles in rows and columns, and reductions of one partial step
//!   (K = 27) up to 19 steps (a 5x5 kernel on 12 channels), so the 3-stage
//!   ring wraps several times;
//! - the strided data gradient's phases: 3x3/2 SAME (phases with 2 x 2,
//!   2 x 1 and 1 x 1 taps), a 1x1/2 shortcut (phases with no taps, whose
//!   pixels get zeros) and an asymmetric window (stride 1 x 2, padding 2 and
//!   0 rows, 1 and 1 columns);
//! - the weight gradient in one chunk and in several.
//!
//! Every case runs under several scheduling seeds, which must give the same
//! bits.

use crate::common::{randn, trial, under_seeds, Emu};
use crate::tf32::reference;
use cifar_kern::cuda::conv::{
    tc_backward_data_plan, tc_backward_weight_plan, tc_forward_plan, tc_weight_workspace_len, ConvShape,
};
use cifar_kern::cuda::conv_tiles::{Direction, Variant, TILES};
use cifar_kern::cuda::launch::Launch;
use cifar_kern::ops::{conv, Window};
use libtest_mimic::Trial;

struct Case {
    name: &'static str,
    x: [usize; 4],
    w: [usize; 4],
    win: Window,
    /// The copy width every direction's kernel must use (`_v4`/`_v1`).
    vec: usize,
    /// Weight-gradient chunks asked for, and how many the rows give.
    splits: (usize, u32),
}

fn cases() -> Vec<Case> {
    let same = |k: usize, s: usize, hw: usize| Window::same([k, k], [s, s], [hw, hw]);
    vec![
        Case {
            name: "stride2_phases",
            x: [2, 10, 10, 8],
            w: [3, 3, 8, 12],
            win: same(3, 2, 10),
            vec: 4,
            splits: (1, 1),
        },
        Case {
            name: "stem_3_to_7_channels",
            x: [2, 9, 9, 3],
            w: [3, 3, 3, 7],
            win: same(3, 1, 9),
            vec: 1,
            splits: (2, 2),
        },
        Case {
            name: "1x1_stride2_no_taps",
            x: [3, 8, 8, 16],
            w: [1, 1, 16, 32],
            win: Window::valid([1, 1], [2, 2]),
            vec: 4,
            splits: (3, 3),
        },
        Case {
            name: "asymmetric_window",
            x: [2, 6, 5, 5],
            w: [3, 2, 5, 7],
            win: Window {
                size: [3, 2],
                stride: [1, 2],
                pad_lo: [2, 1],
                pad_hi: [0, 1],
            },
            vec: 1,
            splits: (1, 1),
        },
        Case {
            name: "5x5_long_reduction",
            x: [1, 7, 7, 12],
            w: [5, 5, 12, 20],
            win: same(5, 1, 7),
            vec: 4,
            splits: (1, 1),
        },
    ]
}

pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for (i, case) in cases().iter().enumerate() {
        for tile in TILES {
            trials.push(trial(format!("emu_conv_tc_{}_{tile}", case.name), move || {
                check(&cases()[i], tile)
            }));
        }
    }
    trials
}

/// The kernel's copy width, from its name (`conv_tc_<direction>_<tile>_v<w>_f32`).
fn copy_width(plan: &[Launch]) -> usize {
    let name = &plan[0].kernel;
    let v = name.rsplit('_').nth(1).and_then(|v| v.strip_prefix('v'));
    v.and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("kernel {name} names no copy width"))
}

fn check(case: &Case, tile: cifar_kern::cuda::conv_tiles::Tile) -> Result<(), String> {
    let s = ConvShape::new(&case.x, &case.w, &case.win);
    let one = Variant { tile, splits: 1 };
    let split = Variant {
        tile,
        splits: case.splits.0,
    };
    let y_shape = s.y_shape();
    let o = case.w[3];
    let x = randn::<f32>(&case.x, 1);
    let w = randn::<f32>(&case.w, 2);
    let b = randn::<f32>(&[o], 3);
    let dy = randn::<f32>(&y_shape, 4);
    let what = |op: &str| format!("{op} of {} in {tile}", case.name);
    let out = under_seeds(case.name, |seed| {
        let mut emu = Emu::default();
        let (px, pw, pb, pdy) = (
            emu.upload(&x, "x"),
            emu.upload(&w, "w"),
            emu.upload(&b, "b"),
            emu.upload(&dy, "dy"),
        );
        let py = emu.alloc::<f32>(dy.numel(), "y");
        let pdx = emu.alloc::<f32>(x.numel(), "dx");
        let pdw = emu.alloc::<f32>(w.numel(), "dw");
        let partials = emu.alloc::<f32>(tc_weight_workspace_len(&s, &split), "weight partials");
        let plans = [
            tc_forward_plan(px, pw, pb, py, &s, &one),
            tc_backward_data_plan(pdy, pw, pdx, &s, &one),
            tc_backward_weight_plan(pdy, px, partials, pdw, &s, &split),
        ];
        for (plan, dir) in plans.iter().zip(Direction::ALL) {
            if copy_width(plan) != case.vec {
                return Err(format!(
                    "{}: {} copies {} wide",
                    what(dir.name()),
                    plan[0].kernel,
                    case.vec
                ));
            }
            emu.run(plan, seed)?;
        }
        let chunks = plans[2][0].cfg.grid_dim.2;
        if chunks != case.splits.1 {
            return Err(format!(
                "{}: {chunks} chunks, expected {}",
                what("weight gradient"),
                case.splits.1
            ));
        }
        Ok(vec![
            emu.download(py, &y_shape),
            emu.download(pdx, &case.x),
            emu.download(pdw, &case.w),
        ])
    })?;
    let win = case.win;
    let (_, _, k) = Direction::Forward.gemm(&s);
    let (_, _, r) = Direction::BackwardData.gemm(&s);
    reference(|x, w| conv::forward(x, w, None, &win), &x, &w, k, true)
        .plus_bias(&b)
        .check(&out[0], &what("forward"))?;
    reference(|dy, w| conv::backward_data(dy, &case.x, w, &win), &dy, &w, r, true)
        .check(&out[1], &what("data gradient"))?;
    reference(
        |dy, x| conv::backward_weight(dy, x, &case.w, &win),
        &dy,
        &x,
        s.out_rows() + case.splits.0,
        true,
    )
    .check(&out[2], &what("weight gradient"))
}
