//! The optimiser chains against optax, from `fixtures/flax/optimizers.safetensors`:
//! three float64 updates of each optimiser, and the learning-rate schedule.

use cifar_kern::checkpoint::SafetensorsFile;
use cifar_kern::fixtures::fixtures_dir;
use cifar_kern::models::ModelKind;
use cifar_kern::optim::{LrSchedule, Optimizer, OptimizerConfig, OptimizerKind, STEPS_PER_EPOCH};
use cifar_kern::Tensor;
use std::collections::BTreeMap;

/// The fixture's chains: the SPEC's hyper-parameters over 200 epochs.
fn fixture_config(name: &str) -> OptimizerConfig {
    let total_steps = 200 * STEPS_PER_EPOCH;
    let (kind, base_lr) = match name {
        "sgd" => (
            OptimizerKind::Sgd {
                momentum: 0.9,
                weight_decay: 1e-4,
            },
            0.1,
        ),
        "adamw" => (OptimizerKind::AdamW { weight_decay: 1e-4 }, 1e-3),
        "adam" => (OptimizerKind::Adam, 1e-3),
        _ => unreachable!(),
    };
    OptimizerConfig {
        kind,
        schedule: LrSchedule::tutorial(base_lr, total_steps),
    }
}

/// The tensors under `<opt>/<part>/`, named without that prefix.
fn part(file: &SafetensorsFile, opt: &str, part: &str) -> BTreeMap<String, Tensor<f64>> {
    let prefix = format!("{opt}/{part}/");
    let tensors = file.tensors::<f64>(&prefix).unwrap();
    assert!(!tensors.is_empty(), "no {prefix}* in the fixture");
    tensors
        .into_iter()
        .map(|(k, t)| (k[prefix.len()..].to_string(), t))
        .collect()
}

#[test]
fn three_updates_match_optax() {
    let Some(dir) = fixtures_dir() else { return };
    let file = SafetensorsFile::open(&dir.join("flax/optimizers.safetensors")).unwrap();
    for opt in ["sgd", "adamw", "adam"] {
        let mut params = part(&file, opt, "p0");
        let mut optimizer = Optimizer::new(fixture_config(opt), &params);
        for step in 1..=3 {
            optimizer.step(&mut params, &part(&file, opt, &format!("g{step}")));
            let want = part(&file, opt, &format!("p{step}"));
            assert!(params.keys().eq(want.keys()));
            for (name, w) in &want {
                let err = params[name].rel_error(w, 1e-300);
                println!("{opt} p{step} {name}: rel error {err:.1e}");
                assert!(err <= 1e-12, "{opt} p{step} {name}: rel error {err:e}");
            }
        }
    }
}

#[test]
fn schedule_matches_optax() {
    let Some(dir) = fixtures_dir() else { return };
    let file = SafetensorsFile::open(&dir.join("flax/optimizers.safetensors")).unwrap();
    let (_, steps) = file.i64_tensor("schedule/steps").unwrap();
    for opt in ["sgd", "adamw", "adam"] {
        let want = file.tensor::<f64>(&format!("schedule/{opt}_lr")).unwrap();
        let schedule = fixture_config(opt).schedule;
        for (&step, &lr) in steps.iter().zip(want.data()) {
            assert_eq!(schedule.at(step as usize), lr, "{opt} at step {step}");
        }
    }
}

/// The per-model defaults are the chains the fixture checks.
#[test]
fn model_defaults_are_the_fixture_chains() {
    assert_eq!(
        OptimizerConfig::for_model(ModelKind::ResNet, 200 * STEPS_PER_EPOCH),
        fixture_config("sgd")
    );
    assert_eq!(
        OptimizerConfig::for_model(ModelKind::PreActResNet, 200 * STEPS_PER_EPOCH),
        fixture_config("sgd")
    );
    assert_eq!(
        OptimizerConfig::for_model(ModelKind::GoogleNet, 200 * STEPS_PER_EPOCH),
        fixture_config("adamw")
    );
    assert_eq!(
        OptimizerConfig::for_model(ModelKind::DenseNet, 200 * STEPS_PER_EPOCH),
        fixture_config("adamw")
    );
}
