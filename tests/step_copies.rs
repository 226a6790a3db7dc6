//! A training step copies neither the parameters nor the state, and on the
//! GPU never waits for it (issue 10).
//!
//! Tensors share their elements and copy them only when a shared tensor is
//! mutated, counting every such copy (`cifar_kern::counters`), as the GPU
//! runtime counts its synchronisations. A step that cloned the state, left
//! the tape holding the parameters while the optimiser updates them, or
//! gathered the GPU's parameters into a flat buffer would count copies; a
//! loss or accuracy read back each step would count a wait. The counters
//! are process-wide, so this binary runs its tests one at a time
//! (`harness = false`, `tests/harness/`: the GPU test is ignored without a
//! GPU, and fails under `CIFAR_KERN_REQUIRE_GPU=1`).

#[macro_use]
#[path = "harness/mod.rs"]
mod harness;

use cifar_kern::backend::{Backend, StepGraph, StepTotals};
use cifar_kern::counters::{self, Counts, Event};
use cifar_kern::cuda::{Gpu, REQUIRE_GPU_VAR};
use cifar_kern::data::Batch;
use cifar_kern::models::{ModelKind, ModelState};
use cifar_kern::optim::OptimizerConfig;
use cifar_kern::train::{train_step, TrainOptimizer, TRAIN_MATH};
use cifar_kern::Tensor;
use harness::Need;
use libtest_mimic::Arguments;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

static GPU: Need = Need {
    missing: "no GPU",
    require_var: REQUIRE_GPU_VAR,
    probe: || Gpu::for_tests().map(|_| ()),
};

/// The counts of two ResNet training steps on `backend`, one by one.
fn two_steps(backend: Backend) -> [Counts; 2] {
    let model = ModelKind::ResNet;
    let mut state = ModelState::<f32>::init(model, 0).map(|t| backend.place(t.clone()));
    let mut optimizer = TrainOptimizer::new(backend, OptimizerConfig::for_model(model, 10), &mut state.params);
    let mut totals = StepTotals::new(backend);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    [1, 2].map(|_| {
        // Placed before counting: the batch's arrival is the loader's business.
        let batch = backend.place_batch(Batch {
            images: Tensor::randn(&[4, 32, 32, 3], 1.0, &mut rng),
            labels: vec![0, 1, 2, 3],
        });
        let before = counters::snapshot();
        train_step(
            model,
            TRAIN_MATH,
            &mut state,
            &mut optimizer,
            batch,
            &mut totals,
            &mut StepGraph::Eager,
        )
        .unwrap();
        let counts = counters::snapshot().since(&before);
        assert!(totals.read().loss_sum.is_finite());
        counts
    })
}

fn a_resnet_training_step_makes_no_copy() {
    // Every copy-on-write copy of the step counts, the ops' included: none
    // mutates a shared tensor, so the bound is exact, not one on
    // parameter-sized buffers only.
    for (n, counts) in (1..).zip(two_steps(Backend::Cpu)) {
        assert_eq!(counts.get(Event::HostCopy), 0, "step {n} copied tensors");
    }
}

fn gpu_resnet_step_copies_nothing_and_never_waits() {
    let gpu = Gpu::for_tests().expect("the harness runs gpu_ tests only with a usable GPU");
    for (n, counts) in (1..).zip(two_steps(Backend::Gpu(gpu))) {
        assert_eq!(
            counts.get(Event::DeviceCopy),
            0,
            "step {n} copied on the GPU: {counts:?}"
        );
        assert_eq!(
            counts.get(Event::HostCopy),
            0,
            "step {n} copied on the host: {counts:?}"
        );
        assert_eq!(
            counts.get(Event::HostSync),
            0,
            "step {n} waited for the GPU: {counts:?}"
        );
        println!("step {n}: {counts:?}");
    }
}

fn main() {
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    let mut trials = harness::plain("cpu", tests![a_resnet_training_step_makes_no_copy]);
    trials.extend(harness::needing(
        "gpu",
        &[&GPU],
        tests![gpu_resnet_step_copies_nothing_and_never_waits],
    ));
    libtest_mimic::run(&args, trials).exit()
}
