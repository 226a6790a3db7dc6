//! The training step on the GPU, through `train::train_step` itself (the
//! trainer's own code: forward, loss, epoch totals, backward, the
//! optimiser's update, the running statistics), in float32, against the
//! same step in float64 on the CPU.
//!
//! Bounds: each quantity (the loss, every gradient, every updated parameter
//! and running statistic) is held to max(10 x the CPU float32 step's own
//! error against float64, 1e-5), as the fixture tests hold the models to
//! the tutorial's float32 error. A flat bound does not fit: a BatchNorm
//! bias gradient is a sum whose terms largely cancel, so float32 itself is
//! off by ~1e-3 there (GoogleNet's `BatchNorm_0/bias`), while most
//! quantities agree to ~1e-7.
//!
//! Gradients are not visible through `train_step`, so they are compared
//! from one forward and backward on the tape, the way `train_step` runs them.

use crate::harness::needing;
use cifar_kern::autograd::{Tape, Var};
use cifar_kern::backend::{Backend, Halt, StepGraph, StepTotals};
use cifar_kern::cuda::Gpu;
use cifar_kern::data::Batch;
use cifar_kern::failure;
use cifar_kern::layers::Math;
use cifar_kern::models::{Ctx, ModelKind, ModelState};
use cifar_kern::optim::{Optimizer, OptimizerConfig};
use cifar_kern::train::{train_step, TrainOptimizer};
use cifar_kern::{Float, Tensor};
use libtest_mimic::Trial;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

const BATCH: usize = 32;
/// The GPU may be this many times further from float64 than the CPU's float32.
const FACTOR: f64 = 10.0;
/// The bound where float32 on the CPU happens to land very close.
const FLOOR: f64 = 1e-5;

/// Forward in train mode, loss, backward: (loss, gradient per parameter).
fn gradients<T: Float>(
    kind: ModelKind,
    state: &ModelState<T>,
    images: Tensor<T>,
    labels: &[u32],
) -> BTreeMap<String, Tensor<T>> {
    let mut state = state.clone();
    let tape = Tape::new();
    let labels = Backend::of(&images).labels(labels);
    let mut ctx = Ctx::new(&tape, &mut state, true);
    let logits = kind.forward(&mut ctx, &Var::constant(images));
    let grads = tape.backward(&tape.cross_entropy(&logits, &labels));
    let names = state.params.keys();
    names
        .map(|k| (k.clone(), grads.get(k).expect("gradient").clone()))
        .collect()
}

/// The float64 reference step: (loss, state after the step).
fn reference_step(
    kind: ModelKind,
    state: &ModelState<f64>,
    images: &Tensor<f64>,
    labels: &[u32],
) -> (f64, ModelState<f64>) {
    let mut state = state.clone();
    let tape = Tape::new();
    let mut ctx = Ctx::new(&tape, &mut state, true);
    let logits = kind.forward(&mut ctx, &Var::constant(images.clone()));
    let running = ctx.into_running_update();
    let loss = tape.cross_entropy(&logits, &Backend::Cpu.labels(labels));
    let all = tape.backward(&loss);
    let grads: BTreeMap<_, _> = state
        .params
        .keys()
        .map(|k| (k.clone(), all.get(k).unwrap().clone()))
        .collect();
    drop((logits, tape));
    let mut optimizer = Optimizer::new(OptimizerConfig::for_model(kind, 1000), &state.params);
    optimizer.step(&mut state.params, &grads);
    state.update_running(running, Halt::NEVER);
    (loss.value().item(), state)
}

/// One `train_step` in float32 where `backend` says: (loss, state after it).
fn float32_step(
    kind: ModelKind,
    backend: Backend,
    start: &ModelState<f64>,
    images: &Tensor<f64>,
    labels: &[u32],
) -> (f64, ModelState<f32>) {
    let mut state = start.cast::<f32>().map(|t| backend.place(t.clone()));
    let mut optimizer = TrainOptimizer::new(backend, OptimizerConfig::for_model(kind, 1000), &mut state.params);
    let mut totals = StepTotals::new(backend);
    let batch = backend.place_batch(Batch {
        images: images.cast(),
        labels: labels.to_vec(),
    });
    train_step(
        kind,
        Math::Fp32,
        &mut state,
        &mut optimizer,
        batch,
        &mut totals,
        &mut StepGraph::Eager,
    )
    .expect("a finite step");
    let totals = totals.read();
    assert_eq!((totals.steps, totals.first_bad_step), (1, 0), "{kind}: one good step");
    (totals.loss_sum, state.map(Tensor::to_host))
}

/// Norm-wise relative error of a float32 tensor against float64.
fn error(ours: &Tensor<f32>, reference: &Tensor<f64>, floor: f64) -> f64 {
    ours.to_host().cast::<f64>().rel_error(reference, floor)
}

/// Checks the GPU's `gpu` against float64 within FACTOR x the CPU's `cpu` error.
fn assert_within(what: &str, gpu: f64, cpu: f64) {
    let bound = (FACTOR * cpu).max(FLOOR);
    assert!(
        gpu <= bound,
        "{what}: relative error {gpu:.3e} > {bound:.3e} (CPU float32: {cpu:.3e})"
    );
}

fn each_network(gpu: &'static Gpu, check: impl Fn(ModelKind, &ModelState<f64>, &Tensor<f64>, &[u32], Backend)) {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for kind in ModelKind::ALL {
        let images = Tensor::<f64>::randn(&[BATCH, 32, 32, 3], 1.0, &mut rng);
        let labels: Vec<u32> = (0..BATCH as u32).map(|i| i * 7 % 10).collect();
        check(
            kind,
            &ModelState::<f64>::init(kind, 42),
            &images,
            &labels,
            Backend::Gpu(gpu),
        );
    }
}

fn gpu_training_step_matches_cpu_f64() {
    each_network(crate::gpu(), |kind, start, images, labels, gpu| {
        let (loss64, after64) = reference_step(kind, start, images, labels);
        let (cpu_loss, cpu_after) = float32_step(kind, Backend::Cpu, start, images, labels);
        let (gpu_loss, gpu_after) = float32_step(kind, gpu, start, images, labels);
        let loss_error = |l: f64| (l - loss64).abs() / loss64.abs();
        assert_within(&format!("{kind} loss"), loss_error(gpu_loss), loss_error(cpu_loss));
        let tensors = |s: &ModelState<f32>| {
            s.named_tensors()
                .map(|(k, t)| (k, t.clone()))
                .collect::<BTreeMap<_, _>>()
        };
        let (cpu_tensors, gpu_tensors) = (tensors(&cpu_after), tensors(&gpu_after));
        for (name, reference) in after64.named_tensors() {
            let (g, c) = (&gpu_tensors[&name], &cpu_tensors[&name]);
            assert_within(
                &format!("{kind} after the step: {name}"),
                error(g, reference, 0.0),
                error(c, reference, 0.0),
            );
        }
    });
}

fn gpu_gradients_match_cpu_f64() {
    each_network(crate::gpu(), |kind, start, images, labels, gpu| {
        let grads64 = gradients(kind, start, images.clone(), labels);
        let start32 = start.cast::<f32>();
        let cpu = gradients(kind, &start32, images.cast(), labels);
        let on_gpu = start32.map(|t| gpu.place(t.clone()));
        let gpu_grads = gradients(kind, &on_gpu, gpu.place(images.cast()), labels);
        // Relative to the largest gradient: a vanishing one is noise.
        let floor = 1e-6 * grads64.values().map(Tensor::norm).fold(0.0, f64::max);
        for (name, reference) in &grads64 {
            let (g, c) = (
                error(&gpu_grads[name], reference, floor),
                error(&cpu[name], reference, floor),
            );
            assert_within(&format!("{kind} gradient {name}"), g, c);
        }
    });
}

/// A NaN batch on the GPU is no error at the step (the host does not look):
/// it and every later step of the epoch change nothing, and the epoch's
/// totals name it; after a reset, steps train again.
fn gpu_step_halts_after_a_non_finite_loss() {
    let gpu = Backend::Gpu(crate::gpu());
    let kind = ModelKind::ResNet;
    let mut state = ModelState::<f32>::init(kind, 0).map(|t| gpu.place(t.clone()));
    let mut optimizer = TrainOptimizer::new(gpu, OptimizerConfig::for_model(kind, 10), &mut state.params);
    let mut totals = StepTotals::new(gpu);
    let mut step = |state: &mut ModelState<f32>, totals: &mut StepTotals, value: f32| {
        let batch = gpu.place_batch(Batch {
            images: Tensor::full(&[2, 32, 32, 3], value),
            labels: vec![0, 1],
        });
        train_step(
            kind,
            Math::Fp32,
            state,
            &mut optimizer,
            batch,
            totals,
            &mut StepGraph::Eager,
        )
        .expect("no error on the GPU");
        (state.map(Tensor::to_host), optimizer.step_count())
    };
    let (trained, count) = step(&mut state, &mut totals, 0.5);
    assert_eq!(count, 1);
    for (value, what) in [(f32::NAN, "the NaN step"), (0.5, "a later step of the epoch")] {
        let (after, count) = step(&mut state, &mut totals, value);
        assert_eq!(after.params, trained.params, "{what} changed parameters");
        assert_eq!(
            after.batch_stats, trained.batch_stats,
            "{what} changed running statistics"
        );
        assert_eq!(count, 1, "{what} advanced the step count");
    }
    let t = totals.read();
    assert_eq!((t.steps, t.first_bad_step), (2, 2));
    assert!(t.bad_loss().is_some_and(f64::is_nan));
    totals.reset();
    let (after, count) = step(&mut state, &mut totals, 0.5);
    assert_eq!(count, 2);
    assert_ne!(after.params, trained.params, "a step after the reset trains");
}

/// Out of GPU memory is an error, not a panic: for a bare allocation, and
/// for a training step whose batch cannot fit (ResNet at batch 131,072
/// needs far more than an H200's 141 GB: each 16-channel activation of the
/// first stage is 8.6 GB), whose message names the batch size. The failed
/// step leaves the state as it was, and the GPU works on afterwards.
fn gpu_out_of_memory_is_an_error() {
    let gpu = crate::gpu();
    let err = failure::catch(|| gpu.alloc::<f32>(&[1 << 40])).unwrap_err();
    assert!(err.is_out_of_memory(), "{err}");
    assert!(
        err.to_string()
            .starts_with("out of GPU memory while allocating a [1099511627776] tensor"),
        "{err}"
    );

    let backend = Backend::Gpu(gpu);
    let kind = ModelKind::ResNet;
    let mut state = ModelState::<f32>::init(kind, 0).map(|t| backend.place(t.clone()));
    let before = state.map(Tensor::to_host);
    let mut optimizer = TrainOptimizer::new(backend, OptimizerConfig::for_model(kind, 10), &mut state.params);
    let mut totals = StepTotals::new(backend);
    let huge = 1 << 17;
    let batch = |n: usize| {
        backend.place_batch(Batch {
            images: Tensor::full(&[n, 32, 32, 3], 0.5),
            labels: (0..n as u32).map(|i| i % 10).collect(),
        })
    };
    let err = train_step(
        kind,
        Math::Fp32,
        &mut state,
        &mut optimizer,
        batch(huge),
        &mut totals,
        &mut StepGraph::Eager,
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("out of GPU memory with --batch-size 131072 ("), "{err}");
    assert!(err.ends_with("): try a smaller batch"), "{err}");
    assert_eq!(
        state.map(Tensor::to_host).params,
        before.params,
        "the failed step changed parameters"
    );
    assert_eq!(optimizer.step_count(), 0);
    train_step(
        kind,
        Math::Fp32,
        &mut state,
        &mut optimizer,
        batch(8),
        &mut totals,
        &mut StepGraph::Eager,
    )
    .expect("a small step after the failure");
    assert_eq!(optimizer.step_count(), 1);
}

/// The `gpu_` tests of this family, ignored without a usable GPU.
pub fn trials() -> Vec<Trial> {
    needing(
        "step",
        &[&crate::GPU],
        tests![
            gpu_training_step_matches_cpu_f64,
            gpu_gradients_match_cpu_f64,
            gpu_step_halts_after_a_non_finite_loss,
            gpu_out_of_memory_is_an_error
        ],
    )
}
