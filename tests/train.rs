//! The training step's guard against a diverged loss.

use cifar_kern::backend::Backend;
use cifar_kern::data::Batch;
use cifar_kern::models::{ModelKind, ModelState};
use cifar_kern::optim::OptimizerConfig;
use cifar_kern::train::{train_step, TrainOptimizer};
use cifar_kern::Tensor;

#[test]
fn non_finite_loss_stops_without_touching_the_state() {
    let model = ModelKind::ResNet;
    let mut state = ModelState::<f32>::init(model, 0);
    let mut optimizer = TrainOptimizer::new(Backend::Cpu, OptimizerConfig::for_model(model, 10), &state.params);
    let before = state.clone();
    let batch = Batch {
        images: Tensor::full(&[2, 32, 32, 3], f32::NAN),
        labels: vec![0, 1],
    };
    let err = train_step(model, &mut state, &mut optimizer, batch)
        .unwrap_err()
        .to_string();
    assert!(err.contains("the loss became NaN"), "{err}");
    assert_eq!(state.params, before.params);
    assert_eq!(state.batch_stats, before.batch_stats);
    assert_eq!(optimizer.step_count(), 0);

    // A finite batch does train.
    let batch = Batch {
        images: Tensor::full(&[2, 32, 32, 3], 0.5),
        labels: vec![0, 1],
    };
    let (loss, _) = train_step(model, &mut state, &mut optimizer, batch).unwrap();
    assert!(loss.is_finite() && optimizer.step_count() == 1);
    assert_ne!(state.params, before.params);
}
