//! Loading a model checkpoint for a given network, and measuring accuracy.

use crate::autograd::{Tape, Var};
use crate::backend::Backend;
use crate::checkpoint::{self, CheckpointMetadata};
use crate::data::{eval_batches, ImageSet};
use crate::kill_point::{self, Phase};
use crate::layers::Math;
use crate::models::{Ctx, ModelKind, ModelState};
use crate::ops::loss;
use crate::tensor::Tensor;
use anyhow::{anyhow, bail, Result};
use std::path::Path;

/// Images per evaluation batch (no gradients are kept, so this only bounds memory).
pub const EVAL_BATCH: usize = 256;

/// Reads `path` (our safetensors or a Flax msgpack checkpoint) as `kind`'s
/// weights. A checkpoint of another model, or with missing or mis-shaped
/// tensors, is an error that says so.
pub fn load_model(kind: ModelKind, path: &Path) -> Result<(ModelState<f32>, CheckpointMetadata)> {
    let (tensors, metadata) = checkpoint::load_any(path)?;
    if let Some(saved) = metadata.get("model") {
        if saved != kind.name() {
            bail!(
                "{} is a {saved} checkpoint, not {kind}: pass the matching model name",
                path.display()
            );
        }
    }
    let state = ModelState::from_named(kind, &tensors).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok((state, metadata))
}

/// The math a command computes in: `asked` (`--math`), or `default` when
/// it was not given; always fp32 on the CPU, which computes exactly whatever
/// is asked. An explicit `--math tf32` there says so in one line on stderr.
pub fn effective_math(asked: Option<Math>, default: Math, backend: Backend) -> Math {
    match backend {
        Backend::Gpu(_) => asked.unwrap_or(default),
        Backend::Cpu => {
            if asked == Some(Math::Tf32) {
                eprintln!("--math tf32 has no effect on the CPU, which always computes in exact fp32");
            }
            Math::Fp32
        }
    }
}

/// Logits `[n, 10]` (on the host) for normalised host images, in eval
/// mode, computed where `state` lives, the convolutions in `math` on the GPU
/// (the CPU always computes exactly).
pub fn logits(kind: ModelKind, state: &ModelState<f32>, images: Tensor<f32>, math: Math) -> Tensor<f32> {
    let backend = Backend::of(state.params.values().next().expect("a model has parameters"));
    let images = backend.place(images);
    let mut state = state.clone();
    let tape = Tape::no_grad().with_math(math);
    let out = kind.forward(&mut Ctx::new(&tape, &mut state, false), &Var::constant(images));
    out.value().to_host()
}

/// Fraction of `set[indices]` classified correctly, in eval mode, with the
/// convolutions in `math`.
pub fn accuracy(kind: ModelKind, state: &ModelState<f32>, set: &ImageSet, indices: &[usize], math: Math) -> f64 {
    let correct: usize = eval_batches::<f32>(set, indices, EVAL_BATCH)
        .map(|batch| {
            kill_point::reached(Phase::Eval);
            loss::correct(&logits(kind, state, batch.images, math), &batch.labels)
        })
        .sum();
    correct as f64 / indices.len() as f64
}
