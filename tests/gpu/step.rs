//! A full training step of each network on the GPU in float32 (forward,
//! loss, every gradient, the optimiser update, the running statistics)
//! against the same step on the CPU in float64: each within 1e-4 norm-wise
//! relative error.

use crate::harness::needing;
use cifar_kern::autograd::{Tape, Var};
use cifar_kern::backend::Backend;
use cifar_kern::cuda::optim::{FlatLayout, GpuOptimizer};
use cifar_kern::models::{Ctx, ModelKind, ModelState};
use cifar_kern::optim::{Optimizer, OptimizerConfig};
use cifar_kern::{Float, Tensor};
use libtest_mimic::Trial;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

const BATCH: usize = 32;
const TOLERANCE: f64 = 1e-4;

/// Forward in train mode, loss, backward: (loss, gradient per parameter);
/// `state`'s running statistics are updated.
fn forward_backward<T: Float>(
    kind: ModelKind,
    state: &mut ModelState<T>,
    images: Tensor<T>,
    labels: &[u32],
) -> (f64, BTreeMap<String, Tensor<T>>) {
    let tape = Tape::new();
    let labels = Backend::of(&images).labels(labels);
    let mut ctx = Ctx::new(&tape, state, true);
    let logits = kind.forward(&mut ctx, &Var::constant(images));
    let running = ctx.into_running_update();
    let loss = tape.cross_entropy(&logits, &labels);
    let grads = tape.backward(&loss);
    state.update_running(running);
    let named = state
        .params
        .keys()
        .map(|k| (k.clone(), grads.get(k).expect("gradient").clone()))
        .collect();
    (loss.value().item().f64(), named)
}

fn assert_close<T: Float>(ours: &Tensor<T>, reference: &Tensor<f64>, floor: f64, what: &str) {
    let err = ours.to_host().cast::<f64>().rel_error(reference, floor);
    assert!(err <= TOLERANCE, "{what}: relative error {err:.3e}");
}

fn gpu_training_step_matches_cpu_f64() {
    let gpu = crate::gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for kind in ModelKind::ALL {
        let images = Tensor::<f64>::randn(&[BATCH, 32, 32, 3], 1.0, &mut rng);
        let labels: Vec<u32> = (0..BATCH as u32).map(|i| i * 7 % 10).collect();
        let config = OptimizerConfig::for_model(kind, 1000);

        let mut cpu = ModelState::<f64>::init(kind, 42);
        let mut gpu_state = cpu.cast::<f32>().map(|t| gpu.upload(t));
        let (cpu_loss, cpu_grads) = forward_backward(kind, &mut cpu, images.clone(), &labels);
        let mut cpu_opt = Optimizer::new(config.clone(), &cpu.params);
        cpu_opt.step(&mut cpu.params, &cpu_grads);

        let (gpu_loss, gpu_grads) = forward_backward(kind, &mut gpu_state, gpu.upload(&images.cast()), &labels);
        let mut gpu_opt = GpuOptimizer::new(gpu, config, FlatLayout::of(&gpu_state.params));
        gpu_opt.step_named(gpu, &mut gpu_state.params, &gpu_grads);

        assert!(
            (gpu_loss - cpu_loss).abs() <= TOLERANCE * cpu_loss.abs(),
            "{kind} loss {gpu_loss} vs {cpu_loss}"
        );
        let largest = cpu_grads.values().map(Tensor::norm).fold(0.0, f64::max);
        for (name, g) in &cpu_grads {
            assert_close(&gpu_grads[name], g, 1e-6 * largest, &format!("{kind} gradient {name}"));
        }
        for (name, p) in &cpu.params {
            assert_close(&gpu_state.params[name], p, 0.0, &format!("{kind} updated {name}"));
        }
        for (name, s) in &cpu.batch_stats {
            assert_close(&gpu_state.batch_stats[name], s, 0.0, &format!("{kind} running {name}"));
        }
    }
}

/// The `gpu_` tests of this family, ignored without a usable GPU.
pub fn trials() -> Vec<Trial> {
    needing("step", &[&crate::GPU], tests![gpu_training_step_matches_cpu_f64])
}
