//! The GPU optimiser against `optim::Optimizer`: three f64 updates of every
//! network's parameters for SGD, AdamW and Adam, with a schedule whose
//! boundaries fall at the 2nd and 3rd update, within 1e-12 relative; the
//! state through the host and back; bit-identical reruns.

use crate::harness::needing;
use crate::util::{assert_bit_identical, assert_close, model_params, randn};
use cifar_kern::cuda::optim::{FlatLayout, GpuOptimizer};
use cifar_kern::cuda::{DeviceFloat, Gpu, GpuTensor};
use cifar_kern::optim::{LrSchedule, Optimizer, OptimizerConfig, OptimizerKind};
use cifar_kern::{Float, Tensor};
use libtest_mimic::Trial;
use std::collections::BTreeMap;

/// The optax chain against the CPU's, update by update, in f64: a few
/// element-wise operations per parameter (correctly rounded sqrt and
/// division; nvcc may contract a product and a sum into one FMA where the
/// CPU rounds twice), three updates: a few ulps, far under 1e-12 (already
/// tighter than the suite's 1e-10), which a float32 step (6e-8) fails.
const OPTIMIZER_PARITY: f64 = 1e-12;

/// The SPEC's three chains, lr dropping x0.1 before the 2nd and the 3rd update.
fn configs() -> [(&'static str, OptimizerConfig); 3] {
    let schedule = |base_lr| LrSchedule {
        base_lr,
        boundaries: vec![1, 2],
        factor: 0.1,
    };
    [
        (
            "sgd",
            OptimizerConfig {
                kind: OptimizerKind::Sgd {
                    momentum: 0.9,
                    weight_decay: 1e-4,
                },
                schedule: schedule(0.1),
            },
        ),
        (
            "adamw",
            OptimizerConfig {
                kind: OptimizerKind::AdamW { weight_decay: 1e-4 },
                schedule: schedule(1e-3),
            },
        ),
        (
            "adam",
            OptimizerConfig {
                kind: OptimizerKind::Adam,
                schedule: schedule(1e-3),
            },
        ),
    ]
}

/// Gradients shaped like `params`, large enough that many get clipped.
fn grads<T: Float>(params: &BTreeMap<String, Tensor<T>>, seed: u64) -> BTreeMap<String, Tensor<T>> {
    params
        .iter()
        .enumerate()
        .map(|(i, (name, p))| (name.clone(), randn(p.shape(), 2.0, seed * 1000 + i as u64).cast()))
        .collect()
}

fn flat<T: DeviceFloat>(gpu: &Gpu, layout: &FlatLayout, tensors: &BTreeMap<String, Tensor<T>>) -> GpuTensor<T> {
    gpu.upload(&Tensor::new(&[layout.len()], layout.flatten(tensors)))
}

fn named<T: DeviceFloat>(gpu: &Gpu, layout: &FlatLayout, t: &GpuTensor<T>) -> BTreeMap<String, Tensor<T>> {
    layout.unflatten(gpu.download(t).data())
}

fn assert_all_close<T: Float>(
    gpu: &BTreeMap<String, Tensor<T>>,
    cpu: &BTreeMap<String, Tensor<T>>,
    tolerance: f64,
    what: &str,
) {
    assert!(gpu.keys().eq(cpu.keys()), "{what}: names");
    for (name, want) in cpu {
        assert_close(&gpu[name], want, tolerance, &format!("{what} {name}"));
    }
}

/// Three updates on the CPU and the GPU from the same start and gradients;
/// parameters, state and learning rate compared after each.
fn three_updates_match<T: DeviceFloat>(gpu: &Gpu, params: &BTreeMap<String, Tensor<T>>, tolerance: f64) {
    let layout = FlatLayout::of(params);
    for (name, config) in configs() {
        let mut cpu_params = params.clone();
        let mut cpu = Optimizer::new(config.clone(), &cpu_params);
        let mut gpu_opt = GpuOptimizer::<T>::new(gpu, config, layout.clone());
        let gpu_params = flat(gpu, &layout, params);
        for step in 0..3 {
            assert_eq!(gpu_opt.learning_rate(gpu), cpu.learning_rate(), "{name} lr at {step}");
            let g = grads(&cpu_params, step);
            cpu.step(&mut cpu_params, &g);
            gpu_opt.step(gpu, &gpu_params, &flat(gpu, &layout, &g), 0);
            let what = format!("{name} update {step}");
            assert_all_close(&named(gpu, &layout, &gpu_params), &cpu_params, tolerance, &what);
            assert_eq!(gpu_opt.step_count(gpu), cpu.step_count(), "{what}");
            let state = gpu_opt.state_tensors(gpu);
            assert_all_close(&state, &cpu.state_tensors(), tolerance, &format!("{what} state"));
        }
    }
}

fn gpu_optimizer_matches_cpu() {
    let gpu = crate::gpu();
    for (kind, state) in model_params() {
        println!("{kind}");
        three_updates_match(gpu, &state.params, OPTIMIZER_PARITY);
    }
}

/// The f32 instantiation against the CPU's f32 chain (same expressions, so
/// only the bias corrections' pow may differ by an ulp).
fn gpu_optimizer_f32_matches_cpu() {
    let gpu = crate::gpu();
    let (_, state) = &model_params()[1];
    let params: BTreeMap<String, Tensor<f32>> = state.params.iter().map(|(k, v)| (k.clone(), v.cast())).collect();
    three_updates_match(gpu, &params, 1e-6);
}

/// Two updates, the state through the host into a fresh optimiser, a third
/// update: the same bits as three straight updates, and as a rerun.
fn gpu_optimizer_resumes_and_reruns_exactly() {
    let gpu = crate::gpu();
    let (_, state) = &model_params()[0];
    let layout = FlatLayout::of(&state.params);
    for (name, config) in configs() {
        let run = |resume_after: Option<usize>| {
            let mut opt = GpuOptimizer::<f64>::new(gpu, config.clone(), layout.clone());
            let params = flat(gpu, &layout, &state.params);
            for step in 0..3 {
                if resume_after == Some(step) {
                    let saved = opt.state_tensors(gpu);
                    opt = GpuOptimizer::new(gpu, config.clone(), layout.clone());
                    opt.load_state(gpu, &saved).unwrap();
                }
                opt.step(gpu, &params, &flat(gpu, &layout, &grads(&state.params, step as u64)), 0);
            }
            gpu.download(&params)
        };
        let straight = run(None);
        assert_bit_identical(&straight, &run(None), &format!("{name} rerun"));
        assert_bit_identical(&straight, &run(Some(2)), &format!("{name} resumed"));
    }
}

/// State moves between the CPU and GPU optimisers both ways.
fn gpu_optimizer_state_converts_to_and_from_the_cpu() {
    let gpu = crate::gpu();
    let (_, state) = &model_params()[2];
    let layout = FlatLayout::of(&state.params);
    for (name, config) in configs() {
        let mut cpu_params = state.params.clone();
        let mut cpu = Optimizer::new(config.clone(), &cpu_params);
        let g = grads(&cpu_params, 0);
        cpu.step(&mut cpu_params, &g);
        let gpu_opt = GpuOptimizer::upload(gpu, &cpu, layout.clone());
        assert_eq!(gpu_opt.download(gpu).state_tensors(), cpu.state_tensors(), "{name}");
        let mut loaded = GpuOptimizer::<f64>::new(gpu, config.clone(), layout.clone());
        loaded.load_state(gpu, &cpu.state_tensors()).unwrap();
        assert_eq!(loaded.step_count(gpu), 1, "{name}");
        assert_eq!(loaded.state_tensors(gpu), cpu.state_tensors(), "{name}");
        // Another optimiser's state is refused, as on the CPU.
        let other = if name == "sgd" {
            &configs()[1].1
        } else {
            &configs()[0].1
        };
        let foreign = Optimizer::new(other.clone(), &state.params).state_tensors();
        assert!(loaded.load_state(gpu, &foreign).is_err(), "{name}");
        assert_eq!(loaded.step_count(gpu), 1, "{name}: a refused state changes nothing");
    }
}

/// The `gpu_` tests of this family, ignored without a usable GPU.
pub fn trials() -> Vec<Trial> {
    needing(
        "optim",
        &[&crate::GPU],
        tests![
            gpu_optimizer_matches_cpu,
            gpu_optimizer_f32_matches_cpu,
            gpu_optimizer_resumes_and_reruns_exactly,
            gpu_optimizer_state_converts_to_and_from_the_cpu
        ],
    )
}
