//! The training step as a CUDA graph, and the step arena under it, through
//! `train::train_step` itself:
//! - replayed steps give the same bits as eager steps (parameters, running
//!   statistics, epoch totals), each replay one launch and no allocation;
//! - eager steps after the first allocate nothing (the arena's plan);
//! - capture safety: a sealed arena refuses an unplanned buffer, and a
//!   forbidden wait is refused, each with a message that says so.
//!
//! The counts are process-wide: `scripts/gpu/run.sh` runs the `gpu_` tests
//! one at a time.

use crate::harness::needing;
use cifar_kern::backend::{Backend, PlacedBatch, StepGraph, StepTotals};
use cifar_kern::counters::{self, Event};
use cifar_kern::data::Batch;
use cifar_kern::layers::Math;
use cifar_kern::models::{ModelKind, ModelState};
use cifar_kern::optim::OptimizerConfig;
use cifar_kern::train::{train_step, TrainOptimizer};
use cifar_kern::Tensor;
use libtest_mimic::Trial;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const BATCH: usize = 16;
const STEPS: usize = 5;

/// The batches of a run: different images each step, all written into one
/// fixed input buffer (as the trainer's placer does), and fixed labels.
struct Inputs {
    fixed: PlacedBatch,
    images: Vec<Tensor<f32>>,
}

impl Inputs {
    fn new(backend: Backend) -> Self {
        let image = |seed| {
            let t = Tensor::<f32>::randn(&[BATCH, 32, 32, 3], 1.0, &mut ChaCha8Rng::seed_from_u64(seed));
            backend.place(t)
        };
        let labels = (0..BATCH).map(|i| (i * 3 % 10) as u32).collect();
        let fixed = backend.place_batch(Batch {
            images: Tensor::zeros(&[BATCH, 32, 32, 3]),
            labels,
        });
        Inputs {
            fixed,
            images: (0..STEPS as u64).map(image).collect(),
        }
    }
}

/// `STEPS` training steps of `kind` from the same start, through `graph`;
/// the state (on the host) and the epoch's loss sum after them, and the
/// counts of each step after the first two.
fn run(kind: ModelKind, graphs: bool) -> (ModelState<f32>, f64, Vec<counters::Counts>) {
    let gpu = crate::gpu();
    let backend = Backend::Gpu(gpu);
    let inputs = Inputs::new(backend);
    let mut state = ModelState::<f32>::init(kind, 3).map(|t| backend.place(t.clone()));
    let mut optimizer = TrainOptimizer::new(backend, OptimizerConfig::for_model(kind, 100), &mut state.params);
    let mut totals = StepTotals::new(backend);
    let mut graph = StepGraph::new(backend, graphs);
    let mut counts = Vec::new();
    for (i, images) in inputs.images.iter().enumerate() {
        gpu.copy(images, &inputs.fixed.images);
        let before = counters::snapshot();
        let step = train_step(
            kind,
            Math::Tf32,
            &mut state,
            &mut optimizer,
            inputs.fixed.clone(),
            &mut totals,
            &mut graph,
        );
        step.expect("a finite step");
        if i >= 2 {
            counts.push(counters::snapshot().since(&before));
        }
    }
    let loss = totals.read().loss_sum;
    drop(graph);
    gpu.use_arena(false);
    (state.map(Tensor::to_host), loss, counts)
}

fn gpu_graph_steps_are_the_eager_steps() {
    for kind in ModelKind::ALL {
        let (eager, eager_loss, eager_counts) = run(kind, false);
        let (graphed, graphed_loss, graphed_counts) = run(kind, true);
        assert_eq!(graphed_loss.to_bits(), eager_loss.to_bits(), "{kind}: the loss sum");
        assert_eq!(graphed.params, eager.params, "{kind}: the parameters");
        assert_eq!(graphed.batch_stats, eager.batch_stats, "{kind}: the running statistics");
        for c in &graphed_counts {
            assert_eq!(c.get(Event::KernelLaunch), 1, "{kind}: a replayed step is one launch");
            assert_eq!(c.get(Event::DeviceAllocation), 0, "{kind}: a replayed step allocates");
            assert_eq!(c.get(Event::HostSync), 0, "{kind}: a replayed step waits");
        }
        for c in &eager_counts {
            assert_eq!(
                c.get(Event::DeviceAllocation),
                0,
                "{kind}: an eager step after the first allocates"
            );
            assert_eq!(c.get(Event::HostSync), 0, "{kind}: an eager step waits");
            assert!(
                c.get(Event::KernelLaunch) > 50,
                "{kind}: an eager step launches its kernels"
            );
        }
    }
}

/// Sealed, the arena lends what it planned and refuses anything else; a
/// forbidden wait is refused; both say what happened.
fn gpu_capture_safety_refuses_unplanned_buffers_and_waits() {
    let gpu = crate::gpu();
    gpu.use_arena(true);
    let planned = gpu.alloc::<f32>(&[1000]);
    drop(planned);
    gpu.seal_arena(true);
    let again = gpu.alloc::<f32>(&[1000]);
    drop(again);
    let unplanned = std::panic::catch_unwind(|| gpu.alloc::<f32>(&[1001])).expect_err("an unplanned buffer");
    let message = unplanned.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("did not plan"), "{message}");
    gpu.seal_arena(false);
    gpu.use_arena(false);

    gpu.forbid_waits(true);
    let waited = std::panic::catch_unwind(|| gpu.synchronize()).expect_err("a forbidden wait");
    gpu.forbid_waits(false);
    let message = waited.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("capture-safety"), "{message}");
}

/// The `gpu_` tests of this family, ignored without a usable GPU.
pub fn trials() -> Vec<Trial> {
    needing(
        "graph",
        &[&crate::GPU],
        tests![
            gpu_graph_steps_are_the_eager_steps,
            gpu_capture_safety_refuses_unplanned_buffers_and_waits
        ],
    )
}
