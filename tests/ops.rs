//! Forward values of the CPU ops against direct, loop-by-loop definitions,
//! plus the properties the rest of the engine relies on: XLA's SAME rule,
//! running-statistics updates, eval mode recording nothing, and results that
//! do not depend on the thread count.

use cifar_kern::ops::batchnorm::Epilogue;
use cifar_kern::ops::{self, batchnorm, elementwise, pool, Window};
use cifar_kern::{Tape, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::rc::Rc;

fn randn(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::randn(shape, 1.0, &mut ChaCha8Rng::seed_from_u64(seed))
}

fn randn_f32(shape: &[usize], seed: u64) -> Tensor<f32> {
    Tensor::randn(shape, 1.0, &mut ChaCha8Rng::seed_from_u64(seed))
}

fn at(t: &Tensor<f64>, i: [usize; 4]) -> f64 {
    let s = t.shape();
    t.data()[((i[0] * s[1] + i[1]) * s[2] + i[2]) * s[3] + i[3]]
}

/// Direct convolution: y[n,oy,ox,o] = b[o] + sum x[n,iy,ix,c] w[ky,kx,c,o].
fn conv_reference(x: &Tensor<f64>, w: &Tensor<f64>, b: &Tensor<f64>, win: &Window) -> Tensor<f64> {
    let [n, h, wd, c] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
    let [kh, kw, _, o] = [w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]];
    let [oh, ow] = win.out_hw([h, wd]);
    let mut y = Vec::new();
    for img in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for oc in 0..o {
                    let mut acc = b.data()[oc];
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * win.stride[0] + ky) as isize - win.pad_lo[0] as isize;
                            let ix = (ox * win.stride[1] + kx) as isize - win.pad_lo[1] as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                continue;
                            }
                            for ic in 0..c {
                                acc += at(x, [img, iy as usize, ix as usize, ic]) * at(w, [ky, kx, ic, oc]);
                            }
                        }
                    }
                    y.push(acc);
                }
            }
        }
    }
    Tensor::new(&[n, oh, ow, o], y)
}

#[test]
fn same_padding_follows_xla() {
    // A stride-2 3x3 conv on 32x32 pads nothing before and one row after.
    let w = Window::same([3, 3], [2, 2], [32, 32]);
    assert_eq!((w.pad_lo, w.pad_hi, w.out_hw([32, 32])), ([0, 0], [1, 1], [16, 16]));
    let w = Window::same([5, 5], [1, 1], [8, 8]);
    assert_eq!((w.pad_lo, w.pad_hi, w.out_hw([8, 8])), ([2, 2], [2, 2], [8, 8]));
    let w = Window::same([1, 1], [2, 2], [15, 15]);
    assert_eq!((w.pad_lo, w.pad_hi, w.out_hw([15, 15])), ([0, 0], [0, 0], [8, 8]));
    // GoogleNet's VALID 3x3/2 max-pools: 32 -> 15 -> 7.
    let p = Window::valid([3, 3], [2, 2]);
    assert_eq!((p.out_hw([32, 32]), p.out_hw([15, 15])), ([15, 15], [7, 7]));
}

#[test]
fn conv_forward_matches_direct_definition() {
    let cases = [
        ([2, 9, 9, 3], [3, 3, 3, 5], Window::same([3, 3], [1, 1], [9, 9])),
        ([2, 8, 8, 4], [3, 3, 4, 6], Window::same([3, 3], [2, 2], [8, 8])),
        ([1, 7, 7, 2], [5, 5, 2, 3], Window::same([5, 5], [1, 1], [7, 7])),
        ([3, 8, 8, 5], [1, 1, 5, 4], Window::same([1, 1], [2, 2], [8, 8])),
        ([3, 4, 4, 5], [1, 1, 5, 4], Window::valid([1, 1], [1, 1])),
        // More images than one im2col chunk holds, to cross chunk boundaries.
        ([9, 32, 32, 2], [3, 3, 2, 3], Window::same([3, 3], [1, 1], [32, 32])),
    ];
    for (i, (xs, ws, win)) in cases.into_iter().enumerate() {
        let (x, w, b) = (randn(&xs, i as u64), randn(&ws, 100 + i as u64), randn(&[ws[3]], 200));
        let ours = ops::conv::forward(&x, &w, Some(&b), &win);
        let reference = conv_reference(&x, &w, &b, &win);
        assert!(ours.rel_error(&reference, 1e-30) < 1e-14, "case {i}");
    }
}

#[test]
fn batch_norm_train_uses_biased_variance_and_updates_running_stats() {
    let x = randn(&[4, 3, 3, 2], 1);
    let (scale, bias) = (Tensor::new(&[2], vec![2.0, 0.5]), Tensor::new(&[2], vec![0.1, -1.0]));
    let (y, stats) = batchnorm::forward_train(&x, &scale, &bias, Epilogue::NONE);
    for c in 0..2 {
        let vals: Vec<f64> = x.data().iter().skip(c).step_by(2).copied().collect();
        let m = vals.iter().sum::<f64>() / vals.len() as f64;
        let v = vals.iter().map(|a| (a - m).powi(2)).sum::<f64>() / vals.len() as f64;
        assert!((stats.mean.data()[c] - m).abs() < 1e-14 && (stats.var.data()[c] - v).abs() < 1e-14);
        for (k, &xv) in vals.iter().enumerate() {
            let expect = (xv - m) / (v + 1e-5).sqrt() * scale.data()[c] + bias.data()[c];
            assert!((y.data()[k * 2 + c] - expect).abs() < 1e-12);
        }
    }
    let (mut rm, mut rv) = (Tensor::zeros(&[2]), Tensor::full(&[2], 1.0));
    batchnorm::update_running(&mut rm, &mut rv, &stats);
    for c in 0..2 {
        assert!((rm.data()[c] - 0.01 * stats.mean.data()[c]).abs() < 1e-15);
        assert!((rv.data()[c] - (0.99 + 0.01 * stats.var.data()[c])).abs() < 1e-15);
    }
    // Eval mode with the batch's own statistics reproduces train mode.
    let eval = batchnorm::forward_eval(&x, &scale, &bias, &stats, Epilogue::NONE);
    assert!(eval.rel_error(&y, 1e-30) < 1e-14);
}

/// The fused epilogue computes what the separate ops compute, to the bit:
/// forward `relu(bn(x) + r)`, and backward through relu, add and bn.
#[test]
fn batch_norm_epilogue_equals_the_separate_ops() {
    let x = randn_f32(&[4, 5, 5, 6], 11);
    let r = randn_f32(&[4, 5, 5, 6], 12);
    let dy = randn_f32(&[4, 5, 5, 6], 13);
    let (scale, bias) = (randn_f32(&[6], 14), randn_f32(&[6], 15));
    let tails = [(None, false), (None, true), (Some(&r), false), (Some(&r), true)];
    for (residual, relu) in tails {
        let (y, stats) = batchnorm::forward_train(&x, &scale, &bias, Epilogue { residual, relu });
        let (bn, plain_stats) = batchnorm::forward_train(&x, &scale, &bias, Epilogue::NONE);
        assert_eq!((&stats.mean, &stats.var), (&plain_stats.mean, &plain_stats.var));
        let added = residual.map_or(bn.clone(), |r| elementwise::add(&bn, r));
        let separate = if relu { elementwise::relu(&added) } else { added };
        assert_eq!(y, separate, "forward, residual {} relu {relu}", residual.is_some());
        assert!(
            y.data().iter().any(|&v| v == 0.0) == relu,
            "the ReLU clips some outputs"
        );

        let tail = Epilogue {
            residual: residual.map(|_| ()),
            relu,
        };
        let fused = batchnorm::backward(&dy, &x, &y, &scale, &stats, true, tail);
        let g = if relu {
            elementwise::relu_backward(&dy, &y)
        } else {
            dy.clone()
        };
        let plain = batchnorm::backward(&g, &x, &bn, &scale, &stats, true, Epilogue::NONE);
        assert_eq!(fused.dx, plain.dx);
        assert_eq!((&fused.dscale, &fused.dbias), (&plain.dscale, &plain.dbias));
        assert_eq!(fused.dresidual, residual.map(|_| g));
    }
}

#[test]
fn pools_match_direct_definition() {
    let x = randn(&[2, 7, 7, 3], 3);
    let win = Window::valid([3, 3], [2, 2]);
    let (max, _) = pool::max_forward(&x, &win);
    let avg = pool::avg_forward(&x, &win);
    for img in 0..2 {
        for oy in 0..3 {
            for ox in 0..3 {
                for c in 0..3 {
                    let cells: Vec<f64> = (0..9)
                        .map(|k| at(&x, [img, oy * 2 + k / 3, ox * 2 + k % 3, c]))
                        .collect();
                    let m = cells.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    assert_eq!(at(&max, [img, oy, ox, c]), m);
                    let a = cells.iter().sum::<f64>() / 9.0;
                    assert!((at(&avg, [img, oy, ox, c]) - a).abs() < 1e-15);
                }
            }
        }
    }
    // Padded avg-pool divides by the full window, as flax.linen.avg_pool.
    let ones: Tensor<f64> = Tensor::full(&[1, 2, 2, 1], 1.0);
    let padded = pool::avg_forward(&ones, &Window::same([3, 3], [1, 1], [2, 2]));
    assert!(padded.data().iter().all(|&v| (v - 4.0 / 9.0).abs() < 1e-15));
}

#[test]
fn cross_entropy_and_accuracy_values() {
    let logits = Tensor::new(&[2, 3], vec![1.0, 2.0, 3.0, 0.0, 0.0, 5.0]);
    let labels = [2, 1];
    let lse0 = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
    let lse1 = (2.0 + 5f64.exp()).ln();
    let expect = ((lse0 - 3.0) + (lse1 - 0.0)) / 2.0;
    assert!((ops::loss::cross_entropy(&logits, &labels) - expect).abs() < 1e-15);
    assert_eq!(ops::loss::accuracy(&logits, &labels), 0.5);
    assert_eq!(ops::loss::argmax(&logits), vec![2, 2]);
}

#[test]
fn eval_tape_records_nothing() {
    let tape = Tape::<f64>::no_grad();
    let w = tape.param("Conv_0/kernel", Rc::new(randn(&[3, 3, 2, 4], 1)));
    let x = Var::constant(randn(&[1, 4, 4, 2], 2));
    let y = tape.relu(&tape.conv2d(&x, &w, None, Window::same([3, 3], [1, 1], [4, 4])));
    assert!(tape.is_empty() && !y.requires_grad() && !w.requires_grad());

    let tape = Tape::<f64>::new();
    let w = tape.param("Conv_0/kernel", Rc::new(randn(&[3, 3, 2, 4], 1)));
    let y = tape.relu(&tape.conv2d(&x, &w, None, Window::same([3, 3], [1, 1], [4, 4])));
    assert_eq!(tape.len(), 3);
    let grads = tape.backward_with(&y, Tensor::full(y.shape(), 1.0));
    assert_eq!(grads.get("Conv_0/kernel").unwrap().shape(), [3, 3, 2, 4]);
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let x = randn(&[16, 16, 16, 8], 5);
    let w = randn(&[3, 3, 8, 8], 6);
    let win = Window::same([3, 3], [1, 1], [16, 16]);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let y = ops::conv::forward(&x, &w, None, &win);
            let (bn, _) = batchnorm::forward_train(&y, &Tensor::full(&[8], 1.0), &Tensor::zeros(&[8]), Epilogue::NONE);
            let dw = ops::conv::backward_weight(&bn, &x, w.shape(), &win);
            let dx = ops::conv::backward_data(&bn, x.shape(), &w, &win);
            (bn, dw, dx)
        })
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn f32_matches_f64() {
    let (x, w) = (randn(&[4, 8, 8, 6], 7), randn(&[3, 3, 6, 5], 8));
    let win = Window::same([3, 3], [2, 2], [8, 8]);
    let y64 = ops::conv::forward(&x, &w, None, &win);
    let y32 = ops::conv::forward(&x.cast::<f32>(), &w.cast::<f32>(), None, &win);
    assert!(y32.cast::<f64>().rel_error(&y64, 1e-30) < 1e-6);
}
