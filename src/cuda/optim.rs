//! The optimiser on the GPU: `optim::Optimizer`'s update over flat buffers,
//! launched by `kernels/optim.cu`.
//!
//! Every parameter tensor is a view of one flat buffer ([`FlatParams`]),
//! at the range a [`FlatLayout`] gives (the table of name, shape and
//! offset, in name order as the CPU optimiser's maps); gradients and
//! moments use the same layout. One launch updates all parameters in
//! place; the update count lives in device memory
//! and a one-thread launch advances it, so a captured graph of training
//! steps replays with the right learning rate and bias corrections. The
//! schedule's base rate and boundaries are launch constants.
//!
//! The state converts to and from a CPU [`Optimizer`] ([`GpuOptimizer::download`],
//! [`GpuOptimizer::upload`]), whose named tensors travel in checkpoints.

use super::launch::Launch;
use super::{DeviceBuffer, DeviceFloat, Gpu, GpuTensor};
use crate::float::Float;
use crate::optim::{Optimizer, OptimizerConfig, OptimizerKind, StateError, ADAM_B1, ADAM_B2, ADAM_EPS, CLIP};
use crate::tensor::Tensor;
use cudarc::driver::LaunchConfig;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

/// Schedule boundaries one launch can carry (`MAX_BOUNDARIES` in optim.cu).
const MAX_BOUNDARIES: usize = 8;

/// `KIND_*` in optim.cu.
const KIND_SGD: u32 = 0;
const KIND_ADAM: u32 = 1;
const KIND_ADAMW: u32 = 2;

/// Threads per block of the update; its grid-stride loop covers any length.
const UPDATE_THREADS: u32 = 256;
/// Enough blocks to fill an H100 or H200 several times over.
const MAX_UPDATE_BLOCKS: usize = 1024;

crate::kernel_params! {
    /// `OptimizerParams<T>` in optim.cu.
    pub struct OptimizerParams {
        params: u64,
        grads: u64,
        mu: u64,
        nu: u64,
        state: u64,
        halted: u64,
        len: u64,
        kind: u32,
        num_boundaries: u32,
        boundaries: [u64; MAX_BOUNDARIES],
        base_lr: f64,
        factor: f64,
        clip: f64,
        momentum: f64,
        weight_decay: f64,
        b1: f64,
        b2: f64,
        eps: f64,
    }
}

crate::kernel_params! {
    /// `AdvanceParams` in optim.cu.
    pub struct AdvanceParams {
        state: u64,
        halted: u64,
    }
}

/// The launch constants of `config` (pointers and length left 0).
fn hyper_params(config: &OptimizerConfig) -> OptimizerParams {
    let schedule = &config.schedule;
    assert!(
        schedule.boundaries.len() <= MAX_BOUNDARIES,
        "the GPU optimizer takes at most {MAX_BOUNDARIES} schedule boundaries, got {}",
        schedule.boundaries.len()
    );
    let mut boundaries = [0; MAX_BOUNDARIES];
    for (b, &s) in boundaries.iter_mut().zip(&schedule.boundaries) {
        *b = s as u64;
    }
    let (kind, momentum, weight_decay) = match config.kind {
        OptimizerKind::Sgd { momentum, weight_decay } => (KIND_SGD, momentum, weight_decay),
        OptimizerKind::Adam => (KIND_ADAM, 0.0, 0.0),
        OptimizerKind::AdamW { weight_decay } => (KIND_ADAMW, 0.0, weight_decay),
    };
    OptimizerParams {
        kind,
        num_boundaries: schedule.boundaries.len() as u32,
        boundaries,
        base_lr: schedule.base_lr,
        factor: schedule.factor,
        clip: CLIP,
        momentum,
        weight_decay,
        b1: ADAM_B1,
        b2: ADAM_B2,
        eps: ADAM_EPS,
        ..Default::default()
    }
}

/// Grid of the update over `len` elements.
fn update_launch(len: usize) -> LaunchConfig {
    let blocks = len.div_ceil(UPDATE_THREADS as usize).clamp(1, MAX_UPDATE_BLOCKS);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (UPDATE_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One update of `config`'s optimiser, then the advance of its update
/// count: `params` (updated in place), `grads` and `mu` hold `len` elements
/// of T, `nu` too for Adam and AdamW (SGD reads no `nu`: pass 0), and `step`
/// is the update count (`StepState` of optim.cu: one u64). Both launches
/// change nothing when the u64 at `halted` is nonzero (the epoch's
/// `first_bad_step`, see `cuda::loss::DeviceTotals`); 0 never halts.
#[allow(clippy::too_many_arguments)] // one per buffer of the update
pub fn step_plan<T: Float>(
    config: &OptimizerConfig,
    params: u64,
    grads: u64,
    mu: u64,
    nu: u64,
    step: u64,
    halted: u64,
    len: usize,
) -> Vec<Launch> {
    let update = OptimizerParams {
        params,
        grads,
        mu,
        nu,
        state: step,
        halted,
        len: len as u64,
        ..hyper_params(config)
    };
    let one_thread = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (1, 1, 1),
        shared_mem_bytes: 0,
    };
    vec![
        Launch::new::<T, _>("optim", "optimizer_update", update_launch(len), update),
        Launch::new::<T, _>(
            "optim",
            "advance_step",
            one_thread,
            AdvanceParams { state: step, halted },
        ),
    ]
}

/// Every tensor of a [`FlatLayout`] starts at a multiple of this many
/// elements (256 bytes of f32): the tensor-core conv's 16-byte `cp.async`
/// copies of a weight need a 16-byte-aligned address (else it falls back to
/// 4-byte copies). The gaps hold zeros, which every update keeps zero (a
/// zero gradient moves no moment and no parameter).
pub const FLAT_ALIGN: usize = 64;

/// Where each named tensor lives in a flat buffer: ranges in name order,
/// each starting at a multiple of [`FLAT_ALIGN`].
#[derive(Clone, Debug, PartialEq)]
pub struct FlatLayout {
    /// (name, shape, offset), sorted by name.
    entries: Vec<(String, Vec<usize>, usize)>,
    len: usize,
}

impl FlatLayout {
    pub fn new(shapes: &BTreeMap<String, Vec<usize>>) -> Self {
        let mut len = 0;
        let entries = shapes
            .iter()
            .map(|(name, shape)| {
                let offset = len;
                len = (len + shape.iter().product::<usize>()).next_multiple_of(FLAT_ALIGN);
                (name.clone(), shape.clone(), offset)
            })
            .collect();
        FlatLayout { entries, len }
    }

    /// The layout of these tensors' names and shapes.
    pub fn of<T: Float>(tensors: &BTreeMap<String, Tensor<T>>) -> Self {
        Self::new(&tensors.iter().map(|(n, t)| (n.clone(), t.shape().to_vec())).collect())
    }

    /// Elements of the whole flat buffer.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `(name, shape, range in the flat buffer)` of every tensor, in name order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &[usize], Range<usize>)> {
        self.entries.iter().map(|(name, shape, offset)| {
            let len: usize = shape.iter().product();
            (name.as_str(), shape.as_slice(), *offset..offset + len)
        })
    }

    /// The range of tensor `name` in the flat buffer.
    pub fn range(&self, name: &str) -> Option<Range<usize>> {
        self.entries().find(|(n, ..)| *n == name).map(|(.., r)| r)
    }

    /// `tensors` (exactly this layout's names and shapes) at their ranges,
    /// zeros between them.
    pub fn flatten<T: Float>(&self, tensors: &BTreeMap<String, Tensor<T>>) -> Vec<T> {
        assert!(
            tensors.len() == self.entries.len()
                && self
                    .entries()
                    .all(|(name, shape, _)| tensors.get(name).is_some_and(|t| t.shape() == shape)),
            "flatten: the tensors do not have the layout's names and shapes"
        );
        let mut flat = vec![T::zero(); self.len];
        for (name, _, range) in self.entries() {
            flat[range].copy_from_slice(tensors[name].data());
        }
        flat
    }

    /// The named tensors of a flat buffer.
    pub fn unflatten<T: Float>(&self, flat: &[T]) -> BTreeMap<String, Tensor<T>> {
        assert_eq!(flat.len(), self.len, "unflatten: buffer length");
        self.entries()
            .map(|(name, shape, range)| (name.to_string(), Tensor::new(shape, flat[range].to_vec())))
            .collect()
    }
}

/// A model's parameters and their gradients as views into one flat buffer
/// each, laid out by a [`FlatLayout`] (as llm.c lays them out): the model
/// reads its parameters through the views, backward writes each gradient
/// into its slot ([`FlatParams::grad_slots`]), and [`GpuOptimizer::step`]
/// updates all parameters with one launch, in place. Nothing is gathered or
/// scattered per step.
pub struct FlatParams<T> {
    layout: FlatLayout,
    params: GpuTensor<T>,
    grads: GpuTensor<T>,
    /// Every parameter's slot of `grads`, by name.
    grad_slots: Arc<BTreeMap<String, Tensor<T>>>,
}

impl<T: DeviceFloat> FlatParams<T> {
    /// Moves the GPU tensors `params` into one flat buffer (one copy each,
    /// once), replacing every entry by its view of it, and allocates the
    /// flat gradient buffer.
    pub fn adopt(gpu: &Gpu, params: &mut BTreeMap<String, Tensor<T>>) -> Self {
        let layout = FlatLayout::of(params);
        // Zeros: the gaps between the tensors stay zero (see FLAT_ALIGN).
        let flat = gpu.zeros::<T>(&[layout.len()]);
        for (name, shape, range) in layout.entries() {
            let view = flat.view(range.start, shape);
            gpu.copy(&params[name], &view);
            params.insert(name.to_string(), view);
        }
        let grads = gpu.zeros::<T>(&[layout.len()]);
        let slots = layout
            .entries()
            .map(|(name, shape, range)| (name.to_string(), grads.view(range.start, shape)));
        FlatParams {
            grad_slots: Arc::new(slots.collect()),
            grads,
            params: flat,
            layout,
        }
    }

    pub fn layout(&self) -> &FlatLayout {
        &self.layout
    }

    /// The flat parameter and gradient buffers.
    pub fn buffers(&self) -> (&GpuTensor<T>, &GpuTensor<T>) {
        (&self.params, &self.grads)
    }

    /// Every parameter's slot of the flat gradient buffer, by name.
    pub fn grad_slots(&self) -> Arc<BTreeMap<String, Tensor<T>>> {
        Arc::clone(&self.grad_slots)
    }

    /// Whether every one of `params` is still a view of the flat buffer
    /// (and every gradient of the gradient buffer), so that an update of
    /// the buffers is an update of them.
    pub fn holds(&self, params: &BTreeMap<String, Tensor<T>>, grads: &BTreeMap<String, Tensor<T>>) -> bool {
        self.layout.entries().all(|(name, ..)| {
            let inside = |flat: &Tensor<T>, named: &BTreeMap<String, Tensor<T>>| {
                named.get(name).is_some_and(|t| flat.contains(t))
            };
            inside(&self.params, params) && inside(&self.grads, grads)
        })
    }
}

/// [`Optimizer`] on the GPU, for parameters and gradients in flat buffers
/// of one [`FlatLayout`].
pub struct GpuOptimizer<T> {
    config: OptimizerConfig,
    layout: FlatLayout,
    /// SGD's momentum trace, or Adam's first moment.
    mu: DeviceBuffer<T>,
    /// Adam's second moment; None for SGD.
    nu: Option<DeviceBuffer<T>>,
    /// `StepState` of optim.cu: the update count.
    step: DeviceBuffer<u64>,
}

impl<T: DeviceFloat> GpuOptimizer<T> {
    /// A fresh optimiser (zero moments, no update done) for the parameters of `layout`.
    pub fn new(gpu: &Gpu, config: OptimizerConfig, layout: FlatLayout) -> Self {
        let zeros = layout.unflatten(&vec![T::zero(); layout.len()]);
        Self::upload(gpu, &Optimizer::new(config, &zeros), layout)
    }

    /// The GPU twin of `optimizer` (e.g. one restored from a checkpoint),
    /// whose parameters must be those of `layout`.
    pub fn upload(gpu: &Gpu, optimizer: &Optimizer<T>, layout: FlatLayout) -> Self {
        let (step, mu, nu) = optimizer.parts();
        let flat = |moments: &BTreeMap<String, Tensor<T>>| gpu.upload_buffer(&layout.flatten(moments));
        let (mu, nu) = (flat(mu), (!nu.is_empty()).then(|| flat(nu)));
        GpuOptimizer {
            config: optimizer.config().clone(),
            step: gpu.upload_buffer(&[step as u64]),
            layout,
            mu,
            nu,
        }
    }

    /// The state as a CPU optimiser (for checkpoints: its `state_tensors`).
    /// Waits for the GPU.
    pub fn download(&self, gpu: &Gpu) -> Optimizer<T> {
        let moments = |b: &DeviceBuffer<T>| self.layout.unflatten(&gpu.download_buffer(b));
        Optimizer::from_parts(
            self.config.clone(),
            self.step_count(gpu),
            moments(&self.mu),
            self.nu.as_ref().map(moments).unwrap_or_default(),
        )
    }

    /// The state as named tensors, as [`Optimizer::state_tensors`].
    pub fn state_tensors(&self, gpu: &Gpu) -> BTreeMap<String, Tensor<T>> {
        self.download(gpu).state_tensors()
    }

    /// Restores state saved by [`Self::state_tensors`] or the CPU optimiser,
    /// checked as [`Optimizer::load_state`] does; on error nothing changes.
    /// The device buffers keep their addresses, so captured graphs stay valid.
    pub fn load_state(&mut self, gpu: &Gpu, tensors: &BTreeMap<String, Tensor<T>>) -> Result<(), StateError> {
        let zeros = self.layout.unflatten(&vec![T::zero(); self.layout.len()]);
        let mut host = Optimizer::new(self.config.clone(), &zeros);
        host.load_state(tensors)?;
        let (step, mu, nu) = host.parts();
        gpu.write_buffer(&mut self.step, &[step as u64]);
        gpu.write_buffer(&mut self.mu, &self.layout.flatten(mu));
        if let Some(gpu_nu) = &mut self.nu {
            gpu.write_buffer(gpu_nu, &self.layout.flatten(nu));
        }
        Ok(())
    }

    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    pub fn layout(&self) -> &FlatLayout {
        &self.layout
    }

    /// Updates applied so far, read from the device (so replays of a
    /// captured graph count). Waits for the GPU.
    pub fn step_count(&self, gpu: &Gpu) -> usize {
        gpu.download_buffer(&self.step)[0] as usize
    }

    /// The learning rate the next update uses. Waits for the GPU.
    pub fn learning_rate(&self, gpu: &Gpu) -> f64 {
        self.config.schedule.at(self.step_count(gpu))
    }

    /// Enqueues one update of the flat `params` from the flat `grads` (both
    /// of this optimiser's layout) and the advance of the update count;
    /// `halted` as for [`step_plan`]. The update writes `params`' buffer in
    /// place: every view of it (a model's parameters, see [`FlatParams`])
    /// sees the new values, and nothing is copied.
    pub fn step(&mut self, gpu: &Gpu, params: &GpuTensor<T>, grads: &GpuTensor<T>, halted: u64) {
        let len = self.layout.len();
        assert_eq!(
            params.numel(),
            len,
            "step: parameters are not of the optimizer's layout"
        );
        assert_eq!(grads.numel(), len, "step: gradients are not of the optimizer's layout");
        let plan = step_plan::<T>(
            &self.config,
            gpu.ptr(params),
            gpu.ptr(grads),
            gpu.buffer_ptr(&self.mu),
            self.nu.as_ref().map_or(0, |nu| gpu.buffer_ptr(nu)),
            gpu.buffer_ptr(&self.step),
            halted,
            len,
        );
        // SAFETY: params, grads, mu (and nu for Adam, the only kinds that
        // read it) hold len elements each; step is one StepState. The
        // stream orders the advance after the update.
        unsafe { gpu.run(&plan) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::LrSchedule;

    #[test]
    fn parameter_structs_match_the_kernels() {
        for suffix in ["f32", "f64"] {
            let bytes = |name: &str| crate::cuda::ptx_param_bytes("optim", &format!("{name}_{suffix}"));
            if let Some(update) = bytes("optimizer_update") {
                assert_eq!(update, std::mem::size_of::<OptimizerParams>());
                assert_eq!(bytes("advance_step"), Some(std::mem::size_of::<AdvanceParams>()));
            }
        }
    }

    fn shapes() -> BTreeMap<String, Vec<usize>> {
        BTreeMap::from([
            ("b/kernel".to_string(), vec![3, 3, 2, 4]),
            ("a/bias".to_string(), vec![4]),
            ("c/scale".to_string(), vec![]),
        ])
    }

    #[test]
    fn layout_is_aligned_in_name_order() {
        let layout = FlatLayout::new(&shapes());
        assert_eq!(layout.len(), 3 * FLAT_ALIGN + FLAT_ALIGN);
        let ranges: Vec<_> = layout.entries().map(|(n, _, r)| (n.to_string(), r)).collect();
        assert_eq!(
            ranges,
            [
                ("a/bias".to_string(), 0..4),
                ("b/kernel".to_string(), 64..136),
                ("c/scale".to_string(), 192..193)
            ]
        );
        assert_eq!(layout.range("b/kernel"), Some(64..136));
        assert_eq!(layout.range("missing"), None);
    }

    #[test]
    fn flatten_round_trips() {
        let layout = FlatLayout::new(&shapes());
        let mut flat: Vec<f64> = (0..layout.len()).map(|i| i as f64).collect();
        let tensors = layout.unflatten(&flat);
        assert_eq!(tensors["b/kernel"].data()[0], 64.0);
        assert_eq!(FlatLayout::of(&tensors), layout);
        // The gaps come back as zeros.
        for (i, v) in flat.iter_mut().enumerate() {
            if !layout.entries().any(|(.., r)| r.contains(&i)) {
                *v = 0.0;
            }
        }
        assert_eq!(layout.flatten(&tensors), flat);
    }

    #[test]
    #[should_panic(expected = "names and shapes")]
    fn flatten_refuses_other_shapes() {
        let layout = FlatLayout::new(&shapes());
        let mut tensors = layout.unflatten(&vec![0.0; layout.len()]);
        tensors.insert("a/bias".into(), Tensor::zeros(&[5]));
        layout.flatten(&tensors);
    }

    #[test]
    fn launch_constants_follow_the_config() {
        let config = OptimizerConfig {
            kind: OptimizerKind::Sgd {
                momentum: 0.9,
                weight_decay: 1e-4,
            },
            schedule: LrSchedule::tutorial(0.1, 1000),
        };
        let p = hyper_params(&config);
        assert_eq!((p.kind, p.momentum, p.weight_decay), (KIND_SGD, 0.9, 1e-4));
        assert_eq!((p.num_boundaries, &p.boundaries[..3]), (2, &[600, 850, 0][..]));
        assert_eq!((p.base_lr, p.factor, p.clip), (0.1, 0.1, 1.0));
        let adamw = hyper_params(&OptimizerConfig {
            kind: OptimizerKind::AdamW { weight_decay: 1e-4 },
            ..config.clone()
        });
        assert_eq!((adamw.kind, adamw.weight_decay), (KIND_ADAMW, 1e-4));
        assert_eq!((adamw.b1, adamw.b2, adamw.eps), (0.9, 0.999, 1e-8));
        let adam = hyper_params(&OptimizerConfig {
            kind: OptimizerKind::Adam,
            ..config
        });
        assert_eq!((adam.kind, adam.weight_decay), (KIND_ADAM, 0.0));
    }

    #[test]
    #[should_panic(expected = "schedule boundaries")]
    fn too_many_boundaries_are_refused() {
        let schedule = LrSchedule {
            base_lr: 0.1,
            boundaries: (1..=MAX_BOUNDARIES + 1).collect(),
            factor: 0.5,
        };
        hyper_params(&OptimizerConfig {
            kind: OptimizerKind::Adam,
            schedule,
        });
    }

    #[test]
    fn a_step_updates_then_advances() {
        let config = OptimizerConfig {
            kind: OptimizerKind::Adam,
            schedule: LrSchedule::tutorial(0.1, 1000),
        };
        let plan = step_plan::<f32>(&config, 1, 2, 3, 4, 5, 6, 1000);
        let kernels: Vec<_> = plan.iter().map(|l| l.kernel.as_str()).collect();
        assert_eq!(kernels, ["optimizer_update_f32", "advance_step_f32"]);
        assert_eq!(plan[1].params_size(), 16);
        crate::cuda::launch::assert_plan_matches_ptx(&plan);
    }

    #[test]
    fn update_grid_covers_small_and_caps_large() {
        assert_eq!(update_launch(0).grid_dim.0, 1);
        assert_eq!(update_launch(257).grid_dim.0, 2);
        assert_eq!(update_launch(272_378).grid_dim.0, MAX_UPDATE_BLOCKS as u32);
    }
}
