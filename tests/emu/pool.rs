//! `emu_pool`: max-pool and avg-pool, forward and backward, against
//! `ops::pool`.
//!
//! Max-pool is compared bit for bit: its output copies the winning input
//! element, its argmax is an integer, and its gathered backward adds each
//! input's winning windows in ascending (oy, ox) order, the order in which
//! the CPU's scatter visits them. The inputs are pairwise distinct (no ties),
//! one image holds a NaN (which must win its windows). Avg-pool is compared
//! within [`bound`].
//!
//! Windows: GoogleNet's 3x3 stride 2 VALID and DenseNet's 2x2 stride 2, a
//! Flax SAME 3x3 stride 1 (one padded row and column on every side), an
//! asymmetric padded window with stride 2 in one axis, and a stride larger
//! than the window (inputs no window covers get a zero gradient). Batch 2 or
//! 3, channel counts 35, 37, 5, 3 and 6 (none a multiple of 32); every launch
//! but the smallest spans several 256-thread blocks, the last one partial.
//! `launch_1d` caps the grid only at 65,535 blocks, so no small shape takes
//! the grid-stride loop around twice.

use crate::common::{bound, close, randn, same_bits, trial, under_seeds, Emu};
use cifar_kern::cuda::pool::{avg_backward_plan, avg_forward_plan, max_backward_plan, max_forward_plan, PoolGeometry};
use cifar_kern::ops::pool as cpu;
use cifar_kern::{Float, Tensor, Window};
use libtest_mimic::Trial;
use rand::seq::SliceRandom;

/// The shapes and windows every case runs, with a name for messages.
fn windows() -> Vec<(&'static str, [usize; 4], Window)> {
    let explicit = |size, stride, pad_lo, pad_hi| Window {
        size,
        stride,
        pad_lo,
        pad_hi,
    };
    vec![
        ("googlenet 3x3/2", [2, 9, 9, 35], Window::valid([3, 3], [2, 2])),
        ("densenet 2x2/2", [3, 8, 8, 37], Window::valid([2, 2], [2, 2])),
        ("same 3x3/1", [2, 7, 8, 5], Window::same([3, 3], [1, 1], [7, 8])),
        (
            "padded 3x2/(2,1)",
            [3, 7, 9, 3],
            explicit([3, 2], [2, 1], [1, 0], [2, 1]),
        ),
        (
            "gapped 2x3/(3,4)",
            [2, 10, 11, 6],
            explicit([2, 3], [3, 4], [0, 1], [1, 0]),
        ),
    ]
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("emu_pool_max_f32".into(), max::<f32>),
        trial("emu_pool_max_f64".into(), max::<f64>),
        trial("emu_pool_avg_f32".into(), avg::<f32>),
        trial("emu_pool_avg_f64".into(), avg::<f64>),
    ]
}

/// Pairwise distinct values in [-1, 1), shuffled.
fn distinct<T: Float>(shape: &[usize], seed: u64) -> Tensor<T> {
    let n: usize = shape.iter().product();
    let mut ranks: Vec<usize> = (0..n).collect();
    ranks.shuffle(&mut crate::common::rng(seed));
    Tensor::new(
        shape,
        ranks
            .into_iter()
            .map(|r| T::of(2.0 * r as f64 / n as f64 - 1.0))
            .collect(),
    )
}

/// u32 indices as T (exact: every index here is far below 2^24).
fn indices_as<T: Float>(shape: &[usize], v: &[u32]) -> Tensor<T> {
    Tensor::new(shape, v.iter().map(|&i| T::of(i as f64)).collect())
}

fn max<T: Float>() -> Result<(), String> {
    for (i, (name, shape, win)) in windows().into_iter().enumerate() {
        let g = PoolGeometry::new(&shape, &win);
        let (in_shape, out_shape) = (g.in_shape(), g.out_shape());
        let mut x = distinct::<T>(&shape, 10 + i as u64);
        if i == 2 {
            // A NaN wins every window it is in, as in XLA's max.
            x.data_mut()[in_shape.iter().product::<usize>() / 2 + 1] = T::nan();
        }
        let out_len: usize = out_shape.iter().product();
        let dy = randn::<T>(&out_shape, 20 + i as u64);
        let out = under_seeds(name, |seed| {
            let mut emu = Emu::default();
            let (px, pdy) = (emu.upload(&x, "x"), emu.upload(&dy, "dy"));
            let (py, pdx) = (emu.alloc::<T>(out_len, "y"), emu.alloc::<T>(x.numel(), "dx"));
            let parg = emu.mem.alloc(out_len * 4, "argmax");
            emu.run(&max_forward_plan::<T>(px, py, parg, &g), seed)?;
            emu.run(&max_backward_plan::<T>(pdy, parg, pdx, &g), seed)?;
            let argmax: Vec<u32> = emu.mem.read(parg, out_len);
            Ok(vec![
                emu.download(py, &out_shape),
                indices_as(&out_shape, &argmax),
                emu.download(pdx, &in_shape),
            ])
        })?;
        let (y, arg) = cpu::max_forward(&x, &win);
        let dx = cpu::max_backward(&dy, &arg, &shape);
        let what = |op: &str| format!("max-pool {op}, {name} at {shape:?}");
        same_bits(&out[0], &y, &what("forward"))?;
        same_bits(&out[1], &indices_as(&out_shape, &arg), &what("argmax"))?;
        same_bits(&out[2], &dx, &what("backward"))?;
    }
    Ok(())
}

fn avg<T: Float>() -> Result<(), String> {
    for (i, (name, shape, win)) in windows().into_iter().enumerate() {
        let g = PoolGeometry::new(&shape, &win);
        let (in_shape, out_shape) = (g.in_shape(), g.out_shape());
        let x = randn::<T>(&shape, 30 + i as u64);
        let dy = randn::<T>(&out_shape, 40 + i as u64);
        let out = under_seeds(name, |seed| {
            let mut emu = Emu::default();
            let (px, pdy) = (emu.upload(&x, "x"), emu.upload(&dy, "dy"));
            let (py, pdx) = (emu.alloc::<T>(dy.numel(), "y"), emu.alloc::<T>(x.numel(), "dx"));
            emu.run(&avg_forward_plan::<T>(px, py, &g), seed)?;
            emu.run(&avg_backward_plan::<T>(pdy, pdx, &g), seed)?;
            Ok(vec![emu.download(py, &out_shape), emu.download(pdx, &in_shape)])
        })?;
        let what = |op: &str| format!("avg-pool {op}, {name} at {shape:?}");
        close(&out[0], &cpu::avg_forward(&x, &win), bound::<T>(), &what("forward"))?;
        close(
            &out[1],
            &cpu::avg_backward(&dy, &shape, &win),
            bound::<T>(),
            &what("backward"),
        )?;
    }
    Ok(())
}
