//! The four networks against the tutorial's own JAX code, through its
//! pretrained checkpoints (`fixtures/flax/<Model>.safetensors`, computed in
//! float64 on 16 real training images with wrong labels): eval logits,
//! train-mode logits and loss, every parameter gradient, and the running
//! statistics after the train-mode pass.
//!
//! float64: each quantity within 1e-8 norm-wise relative error. float32 (the
//! trainer's path): within max(10 x the tutorial's own float32 error, 1e-5).
//! A gradient's denominator is at least 1e-6 x the model's largest gradient
//! norm, since some true gradients are exactly zero (a conv bias feeding a
//! train-mode BatchNorm). The `gpu_fixture_*` tests run the float32 checks
//! with the model on the GPU (skipped without one).

use cifar_kern::checkpoint::SafetensorsFile;
use cifar_kern::cuda::Gpu;
use cifar_kern::device::Placement;
use cifar_kern::fixtures::fixtures_dir;
use cifar_kern::models::{Ctx, ModelKind, ModelState};
use cifar_kern::{Float, Tape, Tensor, Var};
use std::collections::BTreeMap;

/// Runs one model's fixture in `T`, where `placement` puts the tensors;
/// `tolerance(f32_error)` gives the allowed error of a quantity. Returns the
/// largest error seen.
fn check_model<T: Float>(kind: ModelKind, placement: Placement, tolerance: impl Fn(f64) -> f64) -> Option<f64> {
    let dir = fixtures_dir()?;
    let file = SafetensorsFile::open(&dir.join(format!("flax/{}.safetensors", kind.name()))).unwrap();
    let mut named: BTreeMap<String, Tensor<T>> = file.tensors("params/").unwrap();
    named.extend(file.tensors("batch_stats/").unwrap());
    let state = ModelState::<T>::from_named(kind, &named)
        .unwrap()
        .map(|t| placement.place(t.clone()));
    let images = Var::constant(placement.place(file.tensor::<T>("inputs").unwrap()));
    let labels: Vec<u32> = file
        .i64_tensor("labels")
        .unwrap()
        .1
        .into_iter()
        .map(|l| l as u32)
        .collect();

    let mut worst = 0.0f64;
    let mut check = |key: &str, ours: &Tensor<T>, floor: f64| {
        let reference = file.tensor::<f64>(key).unwrap();
        let err = ours
            .cast::<f64>()
            .reshape(reference.shape())
            .rel_error(&reference, floor);
        let f32_error = file.tensor::<f64>(&format!("f32_error/{key}")).unwrap().item();
        let allowed = tolerance(f32_error);
        assert!(
            err <= allowed,
            "{kind} {} {key}: relative error {err:.3e} > {allowed:.3e}",
            T::NAME
        );
        worst = worst.max(err);
    };

    let mut eval_state = state.clone();
    let tape = Tape::no_grad();
    let logits = kind.forward(&mut Ctx::new(&tape, &mut eval_state, false), &images);
    check("eval_logits", logits.value(), 0.0);

    let mut train_state = state;
    let tape = Tape::new();
    let logits = kind.forward(&mut Ctx::new(&tape, &mut train_state, true), &images);
    check("train_logits", logits.value(), 0.0);
    let loss = tape.cross_entropy(&logits, &labels);
    check("train_loss", loss.value(), 0.0);

    let grads = tape.backward(&loss);
    let reference_grads = file.tensors::<f64>("grad/").unwrap();
    assert_eq!(
        reference_grads.len(),
        train_state.params.len(),
        "one reference gradient per parameter"
    );
    let largest = reference_grads.values().map(|g| g.norm()).fold(0.0, f64::max);
    for key in reference_grads.keys() {
        let path = key.strip_prefix("grad/").unwrap();
        let ours = grads
            .get(path)
            .unwrap_or_else(|| panic!("{kind}: no gradient for {path}"));
        check(key, ours, 1e-6 * largest);
    }
    for key in file.tensors::<f64>("batch_stats_after/").unwrap().keys() {
        let path = key.strip_prefix("batch_stats_after/").unwrap();
        check(key, &train_state.batch_stats[path], 0.0);
    }
    println!("{kind} {}: worst relative error {worst:.2e}", T::NAME);
    Some(worst)
}

fn f64_matches(kind: ModelKind) {
    check_model::<f64>(kind, Placement::Cpu, |_| 1e-8);
}

fn f32_matches_on(kind: ModelKind, placement: Placement) {
    check_model::<f32>(kind, placement, |f32_error| (10.0 * f32_error).max(1e-5));
}

fn f32_matches(kind: ModelKind) {
    f32_matches_on(kind, Placement::Cpu);
}

#[test]
fn gpu_fixture_f32_all_models() {
    let Some(gpu) = Gpu::for_tests() else { return };
    for kind in ModelKind::ALL {
        f32_matches_on(kind, Placement::Gpu(gpu));
    }
}

#[test]
fn fixture_googlenet_f64() {
    f64_matches(ModelKind::GoogleNet);
}
#[test]
fn fixture_resnet_f64() {
    f64_matches(ModelKind::ResNet);
}
#[test]
fn fixture_preactresnet_f64() {
    f64_matches(ModelKind::PreActResNet);
}
#[test]
fn fixture_densenet_f64() {
    f64_matches(ModelKind::DenseNet);
}
#[test]
fn fixture_googlenet_f32() {
    f32_matches(ModelKind::GoogleNet);
}
#[test]
fn fixture_resnet_f32() {
    f32_matches(ModelKind::ResNet);
}
#[test]
fn fixture_preactresnet_f32() {
    f32_matches(ModelKind::PreActResNet);
}
#[test]
fn fixture_densenet_f32() {
    f32_matches(ModelKind::DenseNet);
}
