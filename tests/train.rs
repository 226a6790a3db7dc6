//! The training step's guard against a diverged loss, on the CPU: the bad
//! step and every later step of its epoch change nothing, and the CPU
//! reports the bad loss at once (the GPU does at the epoch's end:
//! `gpu_step_halts_after_a_non_finite_loss` in tests/gpu/step.rs).

use cifar_kern::backend::{Backend, PlacedBatch, StepGraph, StepTotals};
use cifar_kern::data::Batch;
use cifar_kern::layers::Math;
use cifar_kern::models::{ModelKind, ModelState};
use cifar_kern::optim::OptimizerConfig;
use cifar_kern::train::{train_step, TrainOptimizer};
use cifar_kern::Tensor;

fn batch(value: f32) -> PlacedBatch {
    Backend::Cpu.place_batch(Batch {
        images: Tensor::full(&[2, 32, 32, 3], value),
        labels: vec![0, 1],
    })
}

#[test]
fn non_finite_loss_stops_the_epoch_without_touching_the_state() {
    let model = ModelKind::ResNet;
    let mut state = ModelState::<f32>::init(model, 0);
    let mut optimizer = TrainOptimizer::new(Backend::Cpu, OptimizerConfig::for_model(model, 10), &mut state.params);
    let mut totals = StepTotals::new(Backend::Cpu);
    let before = state.clone();
    for (value, what) in [(f32::NAN, "the NaN batch"), (0.5, "a later batch of the epoch")] {
        let err = train_step(
            model,
            Math::Fp32,
            &mut state,
            &mut optimizer,
            batch(value),
            &mut totals,
            &mut StepGraph::Eager,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("the loss became NaN"), "{what}: {err}");
        assert_eq!(state.params, before.params, "{what}");
        assert_eq!(state.batch_stats, before.batch_stats, "{what}");
        assert_eq!(optimizer.step_count(), 0, "{what}");
    }
    let t = totals.read();
    assert_eq!((t.steps, t.first_bad_step, t.loss_sum, t.correct), (1, 1, 0.0, 0));

    // The next epoch's totals start clean, and a finite batch does train.
    totals.reset();
    train_step(
        model,
        Math::Fp32,
        &mut state,
        &mut optimizer,
        batch(0.5),
        &mut totals,
        &mut StepGraph::Eager,
    )
    .unwrap();
    let t = totals.read();
    assert!(t.loss_sum.is_finite() && t.loss_sum > 0.0 && t.steps == 1 && t.first_bad_step == 0);
    assert_eq!(optimizer.step_count(), 1);
    assert_ne!(state.params, before.params);
    assert_ne!(state.batch_stats, before.batch_stats);
}
