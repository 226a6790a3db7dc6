//! `emu_loss`: softmax cross-entropy (mean over the batch), its backward
//! (with `dloss` read from device memory) and a step's addition to the
//! epoch's totals (`accumulate_step`), against `ops::loss` and
//! `EpochTotals::record`: the loss and the gradient within [`bound`], the
//! totals exactly. The totals take three steps: the batch's own loss, a NaN
//! loss (the first bad step, after which nothing is added) and the batch's
//! loss again, which must not count.
//!
//! Shapes: 300 rows of 10 classes, so in the single 256-thread block of
//! `cross_entropy` and `accumulate_step` threads 0..44 take two rows each (the
//! loop over rows goes around twice) and the backward's grid-stride launch
//! has two blocks, the last partial; and 5 rows of 13 classes, which leave
//! most threads without a row. Some rows have logits of magnitude ~1000
//! (exp overflows without the max subtraction), one row is all ties (the
//! first maximum is the prediction), and about half the labels are the
//! row's prediction so the count is neither 0 nor n. Labels out of range
//! are not tested: the CPU op panics on them, so there is no reference.

use crate::common::{bound, close, randn, same_bits, trial, under_seeds, Emu};
use cifar_kern::cuda::loss::{accumulate_step_plan, cross_entropy_backward_plan, cross_entropy_plan};
use cifar_kern::layers::loss::{EpochTotals, WORDS};
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
        let pnan = emu.upload(&Tensor::scalar(T::of(f64::NAN)), "NaN loss");
        let ptotals = emu.mem.upload(&[0u64; WORDS][..], "totals");
        emu.run(&cross_entropy_plan::<T>(plogits, plabels, ploss, n, k), seed)?;
        emu.run(
            &cross_entropy_backward_plan::<T>(plogits, plabels, pdloss, pdlogits, n, k),
            seed,
        )?;
        for loss in [ploss, pnan, ploss] {
            emu.run(&accumulate_step_plan::<T>(plogits, plabels, loss, ptotals, n, k), seed)?;
        }
        let words: Vec<u64> = emu.mem.read(ptotals, WORDS);
        let totals = EpochTotals::from_words(words.try_into().unwrap());
        // The reference: the same three steps through EpochTotals::record,
        // with the loss the kernel computed and the CPU's count.
        let loss = emu.download::<T>(ploss, &[]).item().f64();
        let correct = cpu::correct(&logits, &labels) as u64;
        let mut want = EpochTotals::default();
        for l in [loss, f64::NAN, loss] {
            want.record(l, correct);
        }
        let nan_kept = totals.bad_loss().is_some_and(f64::is_nan);
        let without_nan = |t: EpochTotals| EpochTotals { bad_loss: 0.0, ..t };
        if !nan_kept || without_nan(totals) != without_nan(want) {
            return Err(format!("epoch totals {totals:?}, want {want:?}"));
        }
        Ok(vec![
            emu.download(ploss, &[]),
            emu.download(pdlogits, &[n, k]),
            // Exact: a count of at most 300 is an integer in any float.
            Tensor::scalar(T::of(totals.correct as f64)),
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
    // Only the first step counts: the third comes after the bad one.
    same_bits(
        &out[2],
        &Tensor::scalar(T::of(correct as f64)),
        &what("correct count of the epoch"),
    )
}
