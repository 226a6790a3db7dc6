//! A training step copies neither the parameters nor the state (issue 10).
//!
//! Tensors share their elements and copy them only when a shared tensor is
//! mutated, counting every such copy (`cifar_kern::counters`). A step that
//! cloned the state, or left the tape holding the parameters while the
//! optimiser updates them, would copy every parameter it updates. The
//! counters are process-wide, so this test has its binary to itself: tests
//! running beside it would count their own copies.

use cifar_kern::backend::{Backend, StepTotals};
use cifar_kern::counters::{self, Event};
use cifar_kern::data::Batch;
use cifar_kern::models::{ModelKind, ModelState};
use cifar_kern::optim::OptimizerConfig;
use cifar_kern::train::{train_step, TrainOptimizer};
use cifar_kern::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[test]
fn a_resnet_training_step_makes_no_copy() {
    let model = ModelKind::ResNet;
    let mut state = ModelState::<f32>::init(model, 0);
    let mut optimizer = TrainOptimizer::new(Backend::Cpu, OptimizerConfig::for_model(model, 10), &state.params);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut step = |state: &mut ModelState<f32>| {
        let batch = Batch {
            images: Tensor::randn(&[4, 32, 32, 3], 1.0, &mut rng),
            labels: vec![0, 1, 2, 3],
        };
        let before = counters::snapshot();
        let mut totals = StepTotals::new(Backend::Cpu);
        train_step(model, state, &mut optimizer, batch, &mut totals).unwrap();
        assert!(totals.read().loss_sum.is_finite());
        counters::snapshot().since(&before).get(Event::HostCopy)
    };
    // Every copy-on-write copy of the step counts, the ops' included: none
    // mutates a shared tensor, so the bound is exact, not one on
    // parameter-sized buffers only.
    for n in 1..=2 {
        assert_eq!(step(&mut state), 0, "step {n} copied tensors");
    }
}
