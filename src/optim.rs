//! The tutorial's optax optimiser chains, on named parameters.
//!
//! Every update runs, element-wise and in this order (SPEC "Training"):
//! 1. clip each gradient value to [-1, 1] (`optax.clip(1.0)`, not norm clipping);
//! 2. SGD only: add `weight_decay * param` (`optax.add_decayed_weights`);
//! 3. the optimiser: SGD with momentum (`optax.trace`: `m = g + momentum*m`),
//!    Adam, or AdamW (Adam plus decoupled `weight_decay * param`);
//! 4. scale by `-lr(t)` from a piecewise-constant schedule, `t` the 0-based
//!    index of the update, and add to the parameter.
//!
//! The arithmetic follows optax's expression by expression, so a float64 run
//! reproduces the optax reference to rounding. The state (moments per
//! parameter and the update count) converts to and from named tensors,
//! `opt/mu/<name>`, `opt/nu/<name>` and `opt/step`, to travel in checkpoints.

use crate::float::Float;
use crate::models::ModelKind;
use crate::tensor::Tensor;
use std::collections::BTreeMap;
use std::fmt;

/// Training batches per epoch: 45,000 training images in batches of 128, the
/// last partial batch dropped.
pub const STEPS_PER_EPOCH: usize = 45_000 / 128;

/// Adam's constants, optax's defaults (the tutorial keeps them).
pub(crate) const ADAM_B1: f64 = 0.9;
pub(crate) const ADAM_B2: f64 = 0.999;
pub(crate) const ADAM_EPS: f64 = 1e-8;

/// The bound of the element-wise gradient clip.
pub(crate) const CLIP: f64 = 1.0;

#[derive(Clone, Debug, PartialEq)]
pub enum OptimizerKind {
    /// `optax.sgd` with momentum (not Nesterov); the weight decay is added to
    /// the clipped gradient before the momentum.
    Sgd { momentum: f64, weight_decay: f64 },
    /// `optax.adamw`: Adam with weight decay added to the Adam direction.
    AdamW { weight_decay: f64 },
    /// `optax.adam`.
    Adam,
}

/// `optax.piecewise_constant_schedule`: `base_lr`, multiplied by `factor` once
/// for every boundary the update index has reached.
#[derive(Clone, Debug, PartialEq)]
pub struct LrSchedule {
    pub base_lr: f64,
    pub boundaries: Vec<usize>,
    pub factor: f64,
}

impl LrSchedule {
    /// The tutorial's schedule over `total_steps` updates: x0.1 at 60% and
    /// again at 85% of training, the boundaries truncated as Python's `int`.
    pub fn tutorial(base_lr: f64, total_steps: usize) -> Self {
        let at = |fraction: f64| (total_steps as f64 * fraction) as usize;
        LrSchedule {
            base_lr,
            boundaries: vec![at(0.6), at(0.85)],
            factor: 0.1,
        }
    }

    /// The learning rate of the update with 0-based index `step`.
    pub fn at(&self, step: usize) -> f64 {
        // Repeated multiplication, as optax does: 0.1 * 0.1 is not 0.01 in floats.
        self.boundaries
            .iter()
            .filter(|&&b| step >= b)
            .fold(self.base_lr, |lr, _| lr * self.factor)
    }
}

/// An optimiser and its learning-rate schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub schedule: LrSchedule,
}

impl OptimizerConfig {
    /// The tutorial's choice for `model` over `total_steps` updates: AdamW
    /// lr 1e-3 for GoogleNet and DenseNet, SGD lr 0.1 with momentum 0.9 for
    /// ResNet and PreActResNet, weight decay 1e-4 for all.
    pub fn for_model(model: ModelKind, total_steps: usize) -> Self {
        let (kind, base_lr) = match model {
            ModelKind::GoogleNet | ModelKind::DenseNet => (OptimizerKind::AdamW { weight_decay: 1e-4 }, 1e-3),
            ModelKind::ResNet | ModelKind::PreActResNet => (
                OptimizerKind::Sgd {
                    momentum: 0.9,
                    weight_decay: 1e-4,
                },
                0.1,
            ),
        };
        OptimizerConfig {
            kind,
            schedule: LrSchedule::tutorial(base_lr, total_steps),
        }
    }
}

/// Why saved optimiser state does not fit this optimiser.
#[derive(Debug, Clone, PartialEq)]
pub struct StateError(pub String);

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "optimizer state: {}", self.0)
    }
}

impl std::error::Error for StateError {}

const STEP_KEY: &str = "opt/step";
const MU_PREFIX: &str = "opt/mu/";
const NU_PREFIX: &str = "opt/nu/";

/// One moment tensor per parameter name.
pub(crate) type Moments<T> = BTreeMap<String, Tensor<T>>;

/// An optimiser with its state for one set of named parameters.
pub struct Optimizer<T> {
    config: OptimizerConfig,
    /// Updates applied so far: the index of the next update.
    step: usize,
    /// SGD's momentum trace, or Adam's first moment.
    mu: BTreeMap<String, Tensor<T>>,
    /// Adam's second moment; empty for SGD.
    nu: BTreeMap<String, Tensor<T>>,
}

impl<T: Float> Optimizer<T> {
    /// A fresh optimiser for `params` (optax's `init`): zero moments shaped
    /// like each parameter, no update done.
    pub fn new(config: OptimizerConfig, params: &BTreeMap<String, Tensor<T>>) -> Self {
        let zeros = || {
            params
                .iter()
                .map(|(name, p)| (name.clone(), Tensor::zeros(p.shape())))
                .collect()
        };
        let nu = match config.kind {
            OptimizerKind::Sgd { .. } => BTreeMap::new(),
            OptimizerKind::AdamW { .. } | OptimizerKind::Adam => zeros(),
        };
        Optimizer {
            config,
            step: 0,
            mu: zeros(),
            nu,
        }
    }

    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// An optimiser holding the given state (`nu` empty for SGD): the GPU
    /// optimiser's state, downloaded.
    pub(crate) fn from_parts(config: OptimizerConfig, step: usize, mu: Moments<T>, nu: Moments<T>) -> Self {
        Optimizer { config, step, mu, nu }
    }

    /// The update count and the moments `(step, mu, nu)`, for the GPU optimiser's upload.
    pub(crate) fn parts(&self) -> (usize, &Moments<T>, &Moments<T>) {
        (self.step, &self.mu, &self.nu)
    }

    /// Updates applied so far.
    pub fn step_count(&self) -> usize {
        self.step
    }

    /// The learning rate the next update uses.
    pub fn learning_rate(&self) -> f64 {
        self.config.schedule.at(self.step)
    }

    /// Applies one update to `params` from `grads` (same names and shapes as
    /// the parameters the optimiser was made for).
    pub fn step(&mut self, params: &mut BTreeMap<String, Tensor<T>>, grads: &BTreeMap<String, Tensor<T>>) {
        assert!(
            params.keys().eq(self.mu.keys()) && grads.keys().eq(self.mu.keys()),
            "step: parameters and gradients must have the names the optimizer was made for"
        );
        let neg_lr = T::of(-self.learning_rate());
        self.step += 1;
        let clip = |g: T| {
            // Comparisons, not min/max, so a NaN gradient stays NaN as in optax.
            let bound = T::of(CLIP);
            if g > bound {
                bound
            } else if g < -bound {
                -bound
            } else {
                g
            }
        };
        // Adam's bias corrections for this update count (computed in f64, as
        // optax's `1 - decay**count` is with float64 enabled).
        let count = self.step as f64;
        let correction1 = T::of(1.0 - ADAM_B1.powf(count));
        let correction2 = T::of(1.0 - ADAM_B2.powf(count));
        let (b1, b2, eps) = (T::of(ADAM_B1), T::of(ADAM_B2), T::of(ADAM_EPS));
        let (one_minus_b1, one_minus_b2) = (T::of(1.0 - ADAM_B1), T::of(1.0 - ADAM_B2));
        let adamw_decay = match self.config.kind {
            OptimizerKind::AdamW { weight_decay } => Some(T::of(weight_decay)),
            _ => None,
        };

        for (name, param) in params.iter_mut() {
            let grad = &grads[name];
            assert_eq!(
                param.shape(),
                grad.shape(),
                "step: gradient of `{name}` has the wrong shape"
            );
            let mu = self.mu.get_mut(name).expect("names checked above").data_mut();
            let p = param.data_mut();
            match self.config.kind {
                OptimizerKind::Sgd { momentum, weight_decay } => {
                    let (momentum, wd) = (T::of(momentum), T::of(weight_decay));
                    for ((p, &g), m) in p.iter_mut().zip(grad.data()).zip(mu.iter_mut()) {
                        let g = clip(g) + wd * *p;
                        *m = g + momentum * *m;
                        *p += neg_lr * *m;
                    }
                }
                OptimizerKind::AdamW { .. } | OptimizerKind::Adam => {
                    let nu = self
                        .nu
                        .get_mut(name)
                        .expect("Adam keeps nu for every parameter")
                        .data_mut();
                    for (((p, &g), m), v) in p.iter_mut().zip(grad.data()).zip(mu.iter_mut()).zip(nu.iter_mut()) {
                        let g = clip(g);
                        *m = one_minus_b1 * g + b1 * *m;
                        *v = one_minus_b2 * (g * g) + b2 * *v;
                        let m_hat = *m / correction1;
                        let v_hat = *v / correction2;
                        let mut update = m_hat / (v_hat.sqrt() + eps);
                        if let Some(wd) = adamw_decay {
                            update += wd * *p;
                        }
                        *p += neg_lr * update;
                    }
                }
            }
        }
    }

    /// The state as named tensors: `opt/step` (a scalar holding the update
    /// count), `opt/mu/<name>` and, for Adam, `opt/nu/<name>`.
    pub fn state_tensors(&self) -> BTreeMap<String, Tensor<T>> {
        let step = T::of(self.step as f64);
        assert_eq!(
            step.f64(),
            self.step as f64,
            "step count {} does not fit {}",
            self.step,
            T::NAME
        );
        let mut state = BTreeMap::from([(STEP_KEY.to_string(), Tensor::scalar(step))]);
        for (prefix, moments) in [(MU_PREFIX, &self.mu), (NU_PREFIX, &self.nu)] {
            state.extend(moments.iter().map(|(name, m)| (format!("{prefix}{name}"), m.clone())));
        }
        state
    }

    /// Restores state saved by [`Self::state_tensors`] from `tensors`
    /// (entries outside `opt/` are ignored, so a whole checkpoint may be
    /// passed). The state must match this optimiser's kind and parameters
    /// exactly; on error nothing changes.
    pub fn load_state(&mut self, tensors: &BTreeMap<String, Tensor<T>>) -> Result<(), StateError> {
        let step_tensor = tensors
            .get(STEP_KEY)
            .ok_or_else(|| StateError(format!("`{STEP_KEY}` is missing")))?;
        let step = step_tensor.data().first().map(|v| v.f64()).unwrap_or(-1.0);
        if step_tensor.numel() != 1 || step < 0.0 || step.fract() != 0.0 {
            return Err(StateError(format!(
                "`{STEP_KEY}` is not a count: {:?}",
                step_tensor.data()
            )));
        }
        let restore = |prefix: &str, current: &BTreeMap<String, Tensor<T>>| {
            current
                .iter()
                .map(|(name, zero)| {
                    let key = format!("{prefix}{name}");
                    match tensors.get(&key) {
                        Some(saved) if saved.shape() == zero.shape() => Ok((name.clone(), saved.clone())),
                        Some(saved) => Err(StateError(format!(
                            "`{key}` has shape {:?}, the parameter {:?}",
                            saved.shape(),
                            zero.shape()
                        ))),
                        None => Err(StateError(format!("`{key}` is missing"))),
                    }
                })
                .collect::<Result<BTreeMap<_, _>, _>>()
        };
        let mu = restore(MU_PREFIX, &self.mu)?;
        let nu = restore(NU_PREFIX, &self.nu)?;
        // Anything else under `opt/` is state of another optimiser or model.
        let expected = 1 + mu.len() + nu.len();
        let found = tensors.keys().filter(|k| k.starts_with("opt/")).count();
        if found != expected {
            return Err(StateError(format!(
                "{found} `opt/` tensors where this {:?} optimizer expects {expected}",
                self.config.kind
            )));
        }
        self.step = step as usize;
        self.mu = mu;
        self.nu = nu;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> BTreeMap<String, Tensor<f64>> {
        BTreeMap::from([
            (
                "params/Dense_0/kernel".to_string(),
                Tensor::new(&[2, 2], vec![0.5, -1.0, 2.0, 0.25]),
            ),
            ("params/Dense_0/bias".to_string(), Tensor::new(&[2], vec![0.1, -0.2])),
        ])
    }

    fn grads(scale: f64) -> BTreeMap<String, Tensor<f64>> {
        params()
            .into_iter()
            .map(|(k, p)| {
                (
                    k,
                    Tensor::new(p.shape(), p.data().iter().map(|v| v * scale + 0.3).collect()),
                )
            })
            .collect()
    }

    #[test]
    fn tutorial_schedule_boundaries() {
        let ten_epochs = LrSchedule::tutorial(0.1, 10 * STEPS_PER_EPOCH);
        assert_eq!(ten_epochs.boundaries, vec![2106, 2983]);
        let full = OptimizerConfig::for_model(ModelKind::ResNet, 200 * STEPS_PER_EPOCH);
        assert_eq!(full.schedule.boundaries, vec![42120, 59670]);
        assert_eq!(full.schedule.at(42119), 0.1);
        assert_eq!(full.schedule.at(42120), 0.1 * 0.1);
        assert_eq!(full.schedule.at(59670), 0.1 * 0.1 * 0.1);
    }

    #[test]
    fn model_defaults() {
        let adamw = OptimizerConfig::for_model(ModelKind::DenseNet, STEPS_PER_EPOCH);
        assert_eq!(adamw.kind, OptimizerKind::AdamW { weight_decay: 1e-4 });
        assert_eq!(adamw.schedule.base_lr, 1e-3);
        let sgd = OptimizerConfig::for_model(ModelKind::PreActResNet, STEPS_PER_EPOCH);
        assert_eq!(
            sgd.kind,
            OptimizerKind::Sgd {
                momentum: 0.9,
                weight_decay: 1e-4
            }
        );
        assert_eq!(sgd.schedule.base_lr, 0.1);
    }

    /// A run interrupted after two updates and resumed from its exported
    /// state ends exactly where the uninterrupted run does.
    #[test]
    fn state_round_trip_resumes_exactly() {
        for model in [ModelKind::ResNet, ModelKind::GoogleNet] {
            let config = OptimizerConfig::for_model(model, STEPS_PER_EPOCH);
            let mut straight_params = params();
            let mut straight = Optimizer::new(config.clone(), &straight_params);
            for s in 0..3 {
                straight.step(&mut straight_params, &grads(s as f64));
            }

            let mut resumed_params = params();
            let mut first = Optimizer::new(config.clone(), &resumed_params);
            for s in 0..2 {
                first.step(&mut resumed_params, &grads(s as f64));
            }
            let mut saved = first.state_tensors();
            saved.insert("params/unrelated".into(), Tensor::scalar(1.0));
            let mut resumed = Optimizer::new(config, &resumed_params);
            resumed.load_state(&saved).unwrap();
            assert_eq!(resumed.step_count(), 2);
            resumed.step(&mut resumed_params, &grads(2.0));
            assert_eq!(resumed_params, straight_params, "{model}");
        }
    }

    #[test]
    fn load_state_rejects_mismatches() {
        let p = params();
        let sgd = Optimizer::new(OptimizerConfig::for_model(ModelKind::ResNet, STEPS_PER_EPOCH), &p);
        let mut adam = Optimizer::new(OptimizerConfig::for_model(ModelKind::GoogleNet, STEPS_PER_EPOCH), &p);
        // SGD state lacks Adam's second moments.
        assert!(adam.load_state(&sgd.state_tensors()).is_err());

        let mut sgd2 = Optimizer::new(OptimizerConfig::for_model(ModelKind::ResNet, STEPS_PER_EPOCH), &p);
        // Adam's extra moments are not SGD state.
        assert!(sgd2.load_state(&adam.state_tensors()).is_err());

        let mut state = sgd.state_tensors();
        state.insert(STEP_KEY.into(), Tensor::scalar(1.5));
        assert!(sgd2.load_state(&state).is_err());

        let mut state = sgd.state_tensors();
        state.insert("opt/mu/params/Dense_0/bias".into(), Tensor::zeros(&[3]));
        let err = sgd2.load_state(&state).unwrap_err();
        assert!(err.to_string().contains("opt/mu/params/Dense_0/bias"), "{err}");
        assert_eq!(sgd2.step_count(), 0);
    }

    /// Runs `config` on one parameter vector `p0` for the given gradients
    /// and returns the parameter after each step.
    fn trajectory(config: OptimizerConfig, p0: Vec<f64>, grads: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let mut p = BTreeMap::from([("w".to_string(), Tensor::new(&[p0.len()], p0))]);
        let mut opt = Optimizer::new(config, &p);
        grads
            .iter()
            .map(|g| {
                let g = BTreeMap::from([("w".to_string(), Tensor::new(&[g.len()], g.clone()))]);
                opt.step(&mut p, &g);
                p["w"].data().to_vec()
            })
            .collect()
    }

    fn assert_steps(got: &[Vec<f64>], want: &[&[f64]]) {
        assert_eq!(got.len(), want.len());
        for (step, (g, w)) in got.iter().zip(want).enumerate() {
            for (a, b) in g.iter().zip(w.iter()) {
                assert!((a - b).abs() <= 1e-12, "step {}: {g:?} != {w:?}", step + 1);
            }
        }
    }

    #[test]
    fn sgd_adds_weight_decay_before_momentum() {
        // lr 0.1, momentum 0.9, weight decay 0.01; the second gradient is clipped to 1.
        // Step 1: g = [0.5 + 0.01*1, 1 + 0.01*(-2)] = [0.51, 0.98] = m,
        //         p = [1 - 0.051, -2 - 0.098] = [0.949, -2.098].
        // Step 2: g = [0.5 + 0.00949, 1 - 0.02098] = [0.50949, 0.97902],
        //         m = g + 0.9*[0.51, 0.98] = [0.96849, 1.86102],
        //         p = [0.949 - 0.096849, -2.098 - 0.186102] = [0.852151, -2.284102].
        let config = OptimizerConfig {
            kind: OptimizerKind::Sgd {
                momentum: 0.9,
                weight_decay: 0.01,
            },
            schedule: LrSchedule::tutorial(0.1, 100),
        };
        let got = trajectory(config, vec![1.0, -2.0], &[vec![0.5, 3.0], vec![0.5, 3.0]]);
        assert_steps(&got, &[&[0.949, -2.098], &[0.852151, -2.284102]]);
    }

    /// Adam's three steps from p = 1 with gradients 0.5, -0.25 and 3 (clipped
    /// to 1), lr 0.1; `kind` is Adam or AdamW.
    fn adam_steps(kind: OptimizerKind) -> Vec<Vec<f64>> {
        let config = OptimizerConfig {
            kind,
            schedule: LrSchedule::tutorial(0.1, 100),
        };
        trajectory(config, vec![1.0], &[vec![0.5], vec![-0.25], vec![3.0]])
    }

    #[test]
    fn adam_corrects_the_bias_of_both_moments() {
        // Step 1: m = 0.05, v = 0.00025; m/(1-0.9) = 0.5, v/(1-0.999) = 0.25,
        //         p = 1 - 0.1 * 0.5/(sqrt(0.25) + 1e-8) = 0.900000002.
        // Step 2: m = 0.02, v = 0.00031225; m^ = 0.02/0.19, v^ = 0.00031225/0.001999,
        //         p = 0.900000002 - 0.1 * m^/(sqrt(v^) + 1e-8).
        // Step 3: g = clip(3) = 1, likewise (values from these formulas in f64).
        let got = adam_steps(OptimizerKind::Adam);
        assert_steps(&got, &[&[0.900000002], &[0.8733662987078463], &[0.8075551396770898]]);
    }

    #[test]
    fn adamw_decays_the_weights_outside_the_moments() {
        // As Adam, plus 0.01 * p (before the step) in each update:
        // step 1: p = 1 - 0.1 * (0.99999998 + 0.01) = 0.899000002.
        let got = adam_steps(OptimizerKind::AdamW { weight_decay: 0.01 });
        assert_steps(&got, &[&[0.899000002], &[0.8714672987058464], &[0.8047846723763841]]);
    }

    #[test]
    fn gradients_are_clipped_element_wise() {
        // The first SGD step moves by -lr * clip(g).
        let mut p = BTreeMap::from([("w".to_string(), Tensor::new(&[2], vec![0.0, 0.0]))]);
        let g = BTreeMap::from([("w".to_string(), Tensor::new(&[2], vec![1e6, -0.5]))]);
        let config = OptimizerConfig {
            kind: OptimizerKind::Sgd {
                momentum: 0.9,
                weight_decay: 0.0,
            },
            schedule: LrSchedule::tutorial(0.1, 100),
        };
        let mut sgd = Optimizer::new(config, &p);
        sgd.step(&mut p, &g);
        assert_eq!(p["w"].data(), &[-0.1, 0.05]);
    }
}
