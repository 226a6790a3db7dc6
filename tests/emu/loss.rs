//! `emu_loss`: softmax cross-entropy (mean over the batch), its backward
//! (with `dloss` read from device memory) and the count of correct
//! predictions, against `ops::loss`: the loss and the gradient within
//! [`bound`], the count exactly.
//!
//! Shapes: 300 rows of 10 classes, so in the single 256-thread block of
//! `cross_entropy` and `correct` threads 0..44 take two rows each (the
//! loop over rows goes around twice) and the backward's grid-stride launch
//! has two blocks, the last partial; and 5 rows of 13 classes, which leave
//! most threads without a row. Some rows have logits of magnitude ~1000
//! (exp overflows without the max subtraction), one row is all ties (the
//! first maximum is the prediction), and about half the labels are the
//! row's prediction so the count is neither 0 nor n. Labels out of range
//! are not tested: the CPU op panics on them, so there is no reference.

use crate::common::{bound, close, randn, same_bits, trial, under_seeds, Emu};
use cifar_kern::cuda::loss::{correct_plan, cross_entropy_backward_plan, cross_entropy_plan};
use cifar_kern::ops::loss as cpu;
use cifar_kern::{Float, Tensor};
use libtest_mimic::Trial;
use rand::Rng;

/// (case name, rows, classes)
const CASES: [(&str, usize, usize); 2] = [("batch300", 300, 10), ("batch5", 5, 13)];

/// The scale of the loss's gradient, as the backward reads it from device memory.
const DLOSS: f64 = 0.75;

pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for (name, n, k) in CASES {
        trials.push(trial(format!("emu_loss_{name}_f32"), move || check::<f32>(n, k)));
        trials.push(trial(format!("emu_loss_{name}_f64"), move || check::<f64>(n, k)));
    }
    trials
}

/// Logits of scale 3, rows 1, 150, 299 (those that exist) of magnitude
/// ~1000, row 3 all equal; labels the prediction on even rows, random
/// otherwise.
fn inputs<T: Float>(n: usize, k: usize) -> (Tensor<T>, Vec<u32>) {
    let mut logits = randn::<f64>(&[n, k], 1);
    for (r, row) in logits.data_mut().chunks_mut(k).enumerate() {
        for v in row.iter_mut() {
            *v *= match r {
                1 | 150 | 299 => 1000.0,
                3 => 0.0,
                _ => 3.0,
            };
        }
    }
    let logits: Tensor<T> = logits.cast();
    let predicted = cpu::argmax(&logits);
    let mut rng = crate::common::rng(2);
    let labels = (0..n)
        .map(|r| {
            if r % 2 == 0 {
                predicted[r]
            } else {
                rng.random_range(0..k as u32)
            }
        })
        .collect();
    (logits, labels)
}

fn check<T: Float>(n: usize, k: usize) -> Result<(), String> {
    let (logits, labels) = inputs::<T>(n, k);
    let dloss = Tensor::scalar(T::of(DLOSS));
    let out = under_seeds("loss", |seed| {
        let mut emu = Emu::default();
        let (plogits, pdloss) = (emu.upload(&logits, "logits"), emu.upload(&dloss, "dloss"));
        let plabels = emu.mem.upload(&labels, "labels");
        let (ploss, pdlogits) = (emu.alloc::<T>(1, "loss"), emu.alloc::<T>(n * k, "dlogits"));
        let pcount = emu.mem.upload(&[u32::MAX][..], "correct");
        emu.run(&cross_entropy_plan::<T>(plogits, plabels, ploss, n, k), seed)?;
        emu.run(
            &cross_entropy_backward_plan::<T>(plogits, plabels, pdloss, pdlogits, n, k),
            seed,
        )?;
        emu.run(&correct_plan::<T>(plogits, plabels, pcount, n, k), seed)?;
        let count: Vec<u32> = emu.mem.read(pcount, 1);
        Ok(vec![
            emu.download(ploss, &[]),
            emu.download(pdlogits, &[n, k]),
            // Exact: a count of at most 300 is an integer in any float.
            Tensor::scalar(T::of(count[0] as f64)),
        ])
    })?;
    let what = |op: &str| format!("{op} of {n} rows of {k} classes");
    let loss = Tensor::scalar(cpu::cross_entropy(&logits, &labels));
    if !loss.item().f64().is_finite() {
        return Err(format!(
            "the CPU loss is {}: the inputs are not the intended ones",
            loss.item().f64()
        ));
    }
    close(&out[0], &loss, bound::<T>(), &what("cross-entropy"))?;
    let grad = cpu::cross_entropy_backward(&logits, &labels, T::of(DLOSS));
    close(&out[1], &grad, bound::<T>(), &what("cross-entropy backward"))?;
    let correct = cpu::correct(&logits, &labels);
    if correct == 0 || correct == n {
        return Err(format!("{}: {correct} correct makes a weak test", what("correct")));
    }
    same_bits(&out[2], &Tensor::scalar(T::of(correct as f64)), &what("correct count"))
}
