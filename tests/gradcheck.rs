//! The gradient-check suite: every op's backward, through the tape, against
//! central finite differences of its forward, in f64.
//!
//! Each check draws random inputs, runs the op on a recording tape, seeds the
//! backward with a random output gradient `r` (so the implicit loss is
//! `L = sum(out * r)`, which exercises every output element), and compares
//! the gradient of every input with the fourth-order central difference
//! `(L(x - 2h) - 8 L(x - h) + 8 L(x + h) - L(x + 2h)) / 12h` along each
//! element: its O(h^4) truncation error lets h be 1e-4, where rounding noise
//! is ~1e-12 of L instead of the ~1e-9 the two-point rule needs.
//! The error of one element is `|analytic - numeric| / max(|analytic|,
//! |numeric|, floor)` where `floor` is 1e-3 of the input's largest numeric
//! gradient: elements whose true gradient is ~0 are judged against the
//! tensor's scale rather than against rounding noise.
//!
//! Kinks are avoided by construction: ReLU inputs are kept at least 0.1 away
//! from 0, max-pool inputs are distinct values 0.01 apart, and the composite
//! checks pick the first seed whose pre-ReLU values all stay 5e-3 from 0
//! (the stencil moves an element by at most 2h = 2e-4).

use cifar_kern::backend::Backend;
use cifar_kern::ops::batchnorm::{self, BatchStats, Epilogue};
use cifar_kern::{Tape, Tensor, Var, Window};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::Cell;

type T = Tensor<f64>;
const H: f64 = 1e-4;
const TOLERANCE: f64 = 1e-6;
/// Elements checked per input tensor; larger tensors are sampled.
const MAX_ELEMENTS: usize = 48;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn randn(shape: &[usize], rng: &mut ChaCha8Rng) -> T {
    Tensor::randn(shape, 1.0, rng)
}

/// Values with |v| in [0.1, 1] and random signs: no ReLU kink within reach.
fn away_from_zero(shape: &[usize], rng: &mut ChaCha8Rng) -> T {
    let mut t: T = Tensor::uniform(shape, 0.1, 1.0, rng);
    for v in t.data_mut() {
        if rng.random::<bool>() {
            *v = -*v;
        }
    }
    t
}

/// Distinct values 0.01 apart in random order: no max-pool ties.
fn distinct(shape: &[usize], rng: &mut ChaCha8Rng) -> T {
    let n: usize = shape.iter().product();
    let mut v: Vec<f64> = (0..n).map(|i| (i as f64 - n as f64 / 2.0) * 0.01).collect();
    v.shuffle(rng);
    Tensor::new(shape, v)
}

fn dot(a: &T, b: &T) -> f64 {
    a.data().iter().zip(b.data()).map(|(x, y)| x * y).sum()
}

/// Checks d sum(f(inputs) * r) / d inputs[i], for every input, against
/// central differences. Returns the largest relative error seen.
fn gradcheck(inputs: &[T], f: impl Fn(&Tape<f64>, &[Var<f64>]) -> Var<f64>) -> f64 {
    let tape = Tape::new();
    let vars: Vec<Var<f64>> = inputs.iter().map(|x| tape.leaf(x.clone())).collect();
    let out = f(&tape, &vars);
    let r = randn(out.shape(), &mut rng(7));
    let grads = tape.backward_with(&out, r.clone());

    let loss = |xs: &[T]| {
        let tape = Tape::no_grad();
        let vars: Vec<Var<f64>> = xs.iter().map(|x| Var::constant(x.clone())).collect();
        dot(f(&tape, &vars).value(), &r)
    };
    let mut worst = 0.0f64;
    for (i, x) in inputs.iter().enumerate() {
        let analytic = grads.of(&vars[i]).cloned().unwrap_or_else(|| Tensor::zeros(x.shape()));
        let mut elements: Vec<usize> = (0..x.numel()).collect();
        elements.shuffle(&mut rng(i as u64));
        elements.truncate(MAX_ELEMENTS);
        let mut shifted = inputs.to_vec();
        let numeric: Vec<(usize, f64)> = elements
            .iter()
            .map(|&j| {
                let mut at = |steps: f64| {
                    shifted[i].data_mut()[j] = x.data()[j] + steps * H;
                    loss(&shifted)
                };
                let d = (at(-2.0) - 8.0 * at(-1.0) + 8.0 * at(1.0) - at(2.0)) / (12.0 * H);
                shifted[i].data_mut()[j] = x.data()[j];
                (j, d)
            })
            .collect();
        let floor = 1e-3 * numeric.iter().fold(0.0f64, |m, (_, n)| m.max(n.abs()));
        for (j, n) in numeric {
            let a = analytic.data()[j];
            let err = (a - n).abs() / a.abs().max(n.abs()).max(floor).max(1e-300);
            assert!(
                err <= TOLERANCE,
                "input {i} element {j}: analytic {a:e} vs numeric {n:e} (relative error {err:e})"
            );
            worst = worst.max(err);
        }
    }
    println!("{} inputs, worst relative error {worst:.2e}", inputs.len());
    worst
}

// ----- single ops -----

/// (input NHWC, kernel size, stride, explicit window or None for SAME)
type ConvCase = ([usize; 4], [usize; 2], [usize; 2], Option<Window>);

#[test]
fn gradcheck_conv2d() {
    let mut g = rng(1);
    // (input NHWC, kernel size, stride, padding): SAME and VALID, strides 1
    // and 2, 1x1 / 3x3 / 5x5 and a rectangular kernel, asymmetric padding.
    let cases: Vec<ConvCase> = vec![
        ([2, 5, 5, 3], [3, 3], [1, 1], None),
        ([2, 6, 6, 2], [3, 3], [2, 2], None),
        ([1, 7, 6, 2], [5, 5], [1, 1], None),
        ([2, 6, 6, 3], [1, 1], [2, 2], None),
        ([2, 4, 4, 3], [1, 1], [1, 1], None),
        (
            [1, 6, 5, 2],
            [3, 2],
            [2, 1],
            Some(Window {
                size: [3, 2],
                stride: [2, 1],
                pad_lo: [2, 0],
                pad_hi: [0, 1],
            }),
        ),
        ([2, 5, 5, 2], [2, 2], [1, 1], Some(Window::valid([2, 2], [1, 1]))),
    ];
    for (x_shape, k, stride, explicit) in cases {
        let win = explicit.unwrap_or_else(|| Window::same(k, stride, [x_shape[1], x_shape[2]]));
        let (c, o) = (x_shape[3], 3);
        let x = randn(&x_shape, &mut g);
        let w = randn(&[k[0], k[1], c, o], &mut g);
        let b = randn(&[o], &mut g);
        gradcheck(&[x.clone(), w.clone(), b], |t, v| {
            t.conv2d(&v[0], &v[1], Some(&v[2]), win)
        });
        gradcheck(&[x, w], |t, v| t.conv2d(&v[0], &v[1], None, win));
    }
}

#[test]
fn gradcheck_batch_norm_train() {
    let mut g = rng(2);
    let x = randn(&[3, 4, 4, 5], &mut g);
    let scale = randn(&[5], &mut g);
    let bias = randn(&[5], &mut g);
    gradcheck(&[x, scale, bias], |t, v| {
        t.batch_norm_train(&v[0], &v[1], &v[2], Epilogue::NONE).0
    });
}

/// The batch norm's fused epilogues (add, ReLU, add then ReLU), train and
/// eval mode, with the first seed whose pre-ReLU values stay 5e-3 from 0.
#[test]
fn gradcheck_batch_norm_epilogue() {
    for (add, relu, train) in [
        (true, false, true),
        (false, true, true),
        (true, true, true),
        (true, true, false),
    ] {
        let draw = |seed| {
            let mut g = rng(100 + seed);
            let mut v = vec![randn(&[3, 4, 4, 5], &mut g), randn(&[5], &mut g), randn(&[5], &mut g)];
            if add {
                v.push(randn(&[3, 4, 4, 5], &mut g));
            }
            v
        };
        let running = || {
            let mut g = rng(7);
            BatchStats {
                mean: randn(&[5], &mut g),
                var: Tensor::uniform(&[5], 0.5, 2.0, &mut g),
            }
        };
        let forward = |t: &Tape<f64>, v: &[Var<f64>], relu: bool| {
            let tail = Epilogue {
                residual: v.get(3),
                relu,
            };
            if train {
                t.batch_norm_train(&v[0], &v[1], &v[2], tail).0
            } else {
                t.batch_norm_eval(&v[0], &v[1], &v[2], running(), tail)
            }
        };
        let inputs = (0..200u64)
            .map(draw)
            .find(|inputs| {
                let vars: Vec<_> = inputs.iter().map(|x| Var::constant(x.clone())).collect();
                let pre = forward(&Tape::no_grad(), &vars, false);
                !relu || pre.value().data().iter().all(|v| v.abs() >= 5e-3)
            })
            .expect("no seed keeps the ReLU inputs clear of 0");
        gradcheck(&inputs, |t, v| forward(t, v, relu));
    }
}

#[test]
fn gradcheck_batch_norm_eval() {
    let mut g = rng(3);
    let x = randn(&[3, 4, 4, 5], &mut g);
    let scale = randn(&[5], &mut g);
    let bias = randn(&[5], &mut g);
    let mean = randn(&[5], &mut g);
    let var = Tensor::uniform(&[5], 0.5, 2.0, &mut g);
    gradcheck(&[x, scale, bias], |t, v| {
        let running = BatchStats {
            mean: mean.clone(),
            var: var.clone(),
        };
        t.batch_norm_eval(&v[0], &v[1], &v[2], running, Epilogue::NONE)
    });
}

#[test]
fn gradcheck_relu() {
    let x = away_from_zero(&[2, 3, 3, 4], &mut rng(4));
    gradcheck(&[x], |t, v| t.relu(&v[0]));
}

#[test]
fn gradcheck_max_pool() {
    let mut g = rng(5);
    for (shape, win) in [
        ([2, 7, 7, 3], Window::valid([3, 3], [2, 2])),
        ([2, 6, 6, 2], Window::same([3, 3], [1, 1], [6, 6])),
        (
            [1, 5, 4, 2],
            Window {
                size: [2, 2],
                stride: [2, 2],
                pad_lo: [1, 0],
                pad_hi: [0, 0],
            },
        ),
    ] {
        let x = distinct(&shape, &mut g);
        gradcheck(&[x], |t, v| t.max_pool(&v[0], win));
    }
}

#[test]
fn gradcheck_avg_pool() {
    let mut g = rng(6);
    for (shape, win) in [
        ([2, 6, 6, 3], Window::valid([2, 2], [2, 2])),
        ([2, 5, 5, 2], Window::same([3, 3], [1, 1], [5, 5])),
    ] {
        gradcheck(&[randn(&shape, &mut g)], |t, v| t.avg_pool(&v[0], win));
    }
}

#[test]
fn gradcheck_mean_hw() {
    gradcheck(&[randn(&[3, 4, 5, 2], &mut rng(8))], |t, v| t.mean_hw(&v[0]));
}

#[test]
fn gradcheck_dense() {
    let mut g = rng(9);
    let inputs = [randn(&[4, 6], &mut g), randn(&[6, 3], &mut g), randn(&[3], &mut g)];
    gradcheck(&inputs, |t, v| t.dense(&v[0], &v[1], &v[2]));
}

#[test]
fn gradcheck_add() {
    let mut g = rng(10);
    let inputs = [randn(&[2, 3, 3, 4], &mut g), randn(&[2, 3, 3, 4], &mut g)];
    gradcheck(&inputs, |t, v| t.add(&v[0], &v[1]));
    // One value used twice: both contributions must add up.
    gradcheck(&inputs[..1], |t, v| t.add(&v[0], &v[0]));
}

#[test]
fn gradcheck_concat() {
    let mut g = rng(11);
    let inputs = [
        randn(&[2, 3, 3, 2], &mut g),
        randn(&[2, 3, 3, 4], &mut g),
        randn(&[2, 3, 3, 1], &mut g),
    ];
    gradcheck(&inputs, |t, v| t.concat(&[&v[0], &v[1], &v[2]]));
}

#[test]
fn gradcheck_cross_entropy() {
    let logits = randn(&[5, 10], &mut rng(12));
    let labels = [3, 0, 9, 3, 7];
    let labels = Backend::Cpu.labels(&labels);
    gradcheck(&[logits], |t, v| t.cross_entropy(&v[0], &labels));
}

// ----- composites: BN in train mode, end to end through the loss -----

/// Train-mode BN (scale `p[0]`, bias `p[1]`) of `x`, plus `residual`, then
/// ReLU, as the networks run it: one fused op. Records how close the ReLU's
/// input came to the kink, from the CPU reference without the ReLU.
fn bn_relu(t: &Tape<f64>, x: &Var<f64>, p: &[Var<f64>], residual: Option<&Var<f64>>, margin: &Cell<f64>) -> Var<f64> {
    let pre = Epilogue {
        residual: residual.map(Var::value),
        relu: false,
    };
    let (pre, _) = batchnorm::forward_train(x.value(), p[0].value(), p[1].value(), pre);
    let closest = pre.data().iter().fold(f64::INFINITY, |m, v| m.min(v.abs()));
    margin.set(margin.get().min(closest));
    t.batch_norm_train(x, &p[0], &p[1], Epilogue { residual, relu: true }).0
}

fn conv_bn_relu(t: &Tape<f64>, x: &Var<f64>, p: &[Var<f64>], stride: usize, margin: &Cell<f64>) -> Var<f64> {
    let k = p[0].shape()[0];
    let win = Window::same([k, k], [stride, stride], [x.shape()[1], x.shape()[2]]);
    let z = t.conv2d(x, &p[0], None, win);
    bn_relu(t, &z, &p[1..3], None, margin)
}

/// Params for conv(k x k, cin -> cout) + BN: kernel, scale, bias.
fn conv_bn_params(k: usize, cin: usize, cout: usize, g: &mut ChaCha8Rng) -> Vec<T> {
    vec![
        Tensor::randn(&[k, k, cin, cout], (1.0 / (k * k * cin) as f64).sqrt(), g),
        Tensor::uniform(&[cout], 0.5, 1.5, g),
        randn(&[cout], g),
    ]
}

const LABELS: [u32; 2] = [1, 7];

/// mean over H,W, dense to 10 classes, cross-entropy.
fn head(t: &Tape<f64>, x: &Var<f64>, w: &Var<f64>, b: &Var<f64>) -> Var<f64> {
    t.cross_entropy(&t.dense(&t.mean_hw(x), w, b), &Backend::Cpu.labels(&LABELS))
}

fn head_params(c: usize, g: &mut ChaCha8Rng) -> Vec<T> {
    vec![randn(&[c, 10], g), randn(&[10], g)]
}

/// Draws inputs with successive seeds until every ReLU input of the forward
/// pass stays 5e-3 from 0, then gradchecks the loss.
fn composite_check(
    build: impl Fn(&mut ChaCha8Rng) -> Vec<T>,
    f: impl Fn(&Tape<f64>, &[Var<f64>], &Cell<f64>) -> Var<f64>,
) {
    let inputs = (0..200)
        .map(|seed| build(&mut rng(seed)))
        .find(|inputs| {
            let margin = Cell::new(f64::INFINITY);
            let vars: Vec<_> = inputs.iter().map(|x| Var::constant(x.clone())).collect();
            f(&Tape::no_grad(), &vars, &margin);
            margin.get() >= 5e-3
        })
        .expect("no seed keeps the ReLU inputs clear of 0");
    gradcheck(&inputs, |t, v| f(t, v, &Cell::new(f64::INFINITY)));
}

#[test]
fn gradcheck_composite_residual_block() {
    // x -> conv3x3/2 BN ReLU conv3x3 BN, + (1x1/2 conv with bias) shortcut, ReLU.
    composite_check(
        |g| {
            let mut v = vec![randn(&[2, 6, 6, 3], g)];
            v.extend(conv_bn_params(3, 3, 4, g));
            v.extend(conv_bn_params(3, 4, 4, g));
            v.push(Tensor::randn(&[1, 1, 3, 4], 0.5, g));
            v.push(randn(&[4], g));
            v.extend(head_params(4, g));
            v
        },
        |t, v, m| {
            let z = conv_bn_relu(t, &v[0], &v[1..4], 2, m);
            let z = t.conv2d(&z, &v[4], None, Window::same([3, 3], [1, 1], [3, 3]));
            let shortcut = t.conv2d(&v[0], &v[7], Some(&v[8]), Window::same([1, 1], [2, 2], [6, 6]));
            let out = bn_relu(t, &z, &v[5..7], Some(&shortcut), m);
            head(t, &out, &v[9], &v[10])
        },
    );
}

#[test]
fn gradcheck_composite_inception_block() {
    // Four branches concatenated: 1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3 max-pool -> 1x1.
    composite_check(
        |g| {
            let mut v = vec![distinct(&[2, 5, 5, 4], g)];
            v.extend(conv_bn_params(1, 4, 2, g));
            v.extend(conv_bn_params(1, 4, 2, g));
            v.extend(conv_bn_params(3, 2, 3, g));
            v.extend(conv_bn_params(1, 4, 2, g));
            v.extend(conv_bn_params(5, 2, 2, g));
            v.extend(conv_bn_params(1, 4, 2, g));
            v.extend(head_params(9, g));
            v
        },
        |t, v, m| {
            let x = &v[0];
            let b1 = conv_bn_relu(t, x, &v[1..4], 1, m);
            let b3 = conv_bn_relu(t, &conv_bn_relu(t, x, &v[4..7], 1, m), &v[7..10], 1, m);
            let b5 = conv_bn_relu(t, &conv_bn_relu(t, x, &v[10..13], 1, m), &v[13..16], 1, m);
            let pooled = t.max_pool(x, Window::same([3, 3], [1, 1], [5, 5]));
            let bmax = conv_bn_relu(t, &pooled, &v[16..19], 1, m);
            head(t, &t.concat(&[&b1, &b3, &b5, &bmax]), &v[19], &v[20])
        },
    );
}

#[test]
fn gradcheck_composite_dense_stack() {
    // Two dense layers (BN ReLU 1x1, BN ReLU 3x3, concat with the input),
    // a transition (BN ReLU 1x1, 2x2 avg-pool), then the head.
    let bn_params = |c: usize, g: &mut ChaCha8Rng| vec![Tensor::uniform(&[c], 0.5, 1.5, g), randn(&[c], g)];
    composite_check(
        |g| {
            let mut v = vec![randn(&[2, 4, 4, 3], g)];
            for cin in [3, 5] {
                v.extend(bn_params(cin, g));
                v.push(Tensor::randn(&[1, 1, cin, 4], 0.5, g));
                v.extend(bn_params(4, g));
                v.push(Tensor::randn(&[3, 3, 4, 2], 0.3, g));
            }
            v.extend(bn_params(7, g));
            v.push(Tensor::randn(&[1, 1, 7, 3], 0.5, g));
            v.extend(head_params(3, g));
            v
        },
        |t, v, m| {
            let mut x = v[0].clone();
            for p in [&v[1..7], &v[7..13]] {
                let z = t.conv2d(
                    &bn_relu(t, &x, &p[0..2], None, m),
                    &p[2],
                    None,
                    Window::valid([1, 1], [1, 1]),
                );
                let z = t.conv2d(
                    &bn_relu(t, &z, &p[3..5], None, m),
                    &p[5],
                    None,
                    Window::same([3, 3], [1, 1], [4, 4]),
                );
                x = t.concat(&[&x, &z]);
            }
            let z = t.conv2d(
                &bn_relu(t, &x, &v[13..15], None, m),
                &v[15],
                None,
                Window::valid([1, 1], [1, 1]),
            );
            head(t, &t.avg_pool(&z, Window::valid([2, 2], [2, 2])), &v[16], &v[17])
        },
    );
}
