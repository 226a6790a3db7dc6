//! The four networks of the tutorial, written as Flax writes them.
//!
//! A model is a function of a [`Ctx`]: it asks the context for layers
//! (`conv`, `batch_norm`, `dense`) in the order the Flax code creates them,
//! and the context names each parameter the way Flax's auto-naming does:
//! `<Type>_<n>` with one counter per module type inside each parent scope
//! (`InceptionBlock_3/Conv_2/kernel`). Running the forward once with an RNG
//! ([`ModelState::init`]) creates every parameter with its initialiser, like
//! `Module.init`; every later run looks the parameters up by name, so a
//! Flax checkpoint loads without any name mapping.
//!
//! A forward never changes the state it reads (except when initialising):
//! the tape shares the state's parameters (a tensor clone copies nothing),
//! and in train mode BatchNorm's batch statistics are collected into a
//! [`RunningUpdate`] that the caller applies with
//! [`ModelState::update_running`] once it knows the step is good (a finite
//! loss), so a failed step leaves the state as it was without a copy of it.

pub mod conv_shapes;
mod densenet;
mod googlenet;
mod resnet;

use crate::autograd::{Tape, Var};
use crate::backend::{self, Halt};
use crate::float::Float;
use crate::layers::{
    batchnorm::{BatchStats, Epilogue},
    Window,
};
use crate::tensor::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::rc::Rc;
use std::str::FromStr;

pub const NUM_CLASSES: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelKind {
    GoogleNet,
    ResNet,
    PreActResNet,
    DenseNet,
}

impl ModelKind {
    pub const ALL: [ModelKind; 4] = [Self::GoogleNet, Self::ResNet, Self::PreActResNet, Self::DenseNet];

    /// The tutorial's name (also the fixture file stem).
    pub fn name(self) -> &'static str {
        match self {
            Self::GoogleNet => "GoogleNet",
            Self::ResNet => "ResNet",
            Self::PreActResNet => "PreActResNet",
            Self::DenseNet => "DenseNet",
        }
    }

    /// Logits `[n, 10]` of NHWC images `x`.
    pub fn forward<T: Float>(self, ctx: &mut Ctx<T>, x: &Var<T>) -> Var<T> {
        match self {
            Self::GoogleNet => googlenet::forward(ctx, x),
            Self::ResNet => resnet::forward(ctx, x, false),
            Self::PreActResNet => resnet::forward(ctx, x, true),
            Self::DenseNet => densenet::forward(ctx, x),
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown model {s:?}: choose one of googlenet, resnet, preactresnet, densenet"))
    }
}

/// Weight initialisers (Flax's `variance_scaling` family).
#[derive(Clone, Copy, Debug)]
pub enum Init {
    /// variance_scaling(2, fan_in, truncated normal): `kaiming_normal`.
    Kaiming,
    /// variance_scaling(2, fan_out, normal): the tutorial's ResNet convs.
    ResNetFanOut,
    /// variance_scaling(1, fan_in, truncated normal): Flax's default.
    Lecun,
}

impl Init {
    /// Draws a kernel whose last dimension is the output features and whose
    /// other dimensions multiply to fan_in / fan_in * out / in as Flax counts.
    fn sample(self, shape: &[usize], rng: &mut ChaCha8Rng) -> Tensor<f64> {
        let (&out, rest) = shape.split_last().expect("kernel shape");
        let (&inp, receptive) = rest.split_last().expect("kernel shape");
        let receptive: usize = receptive.iter().product();
        let (scale, fan, truncated) = match self {
            Init::Kaiming => (2.0, receptive * inp, true),
            Init::ResNetFanOut => (2.0, receptive * out, false),
            Init::Lecun => (1.0, receptive * inp, true),
        };
        let std = (scale / fan as f64).sqrt();
        let data = (0..shape.iter().product())
            .map(|_| {
                if truncated {
                    // A standard normal truncated to [-2, 2], rescaled to unit variance.
                    loop {
                        let z: f64 = StandardNormal.sample(rng);
                        if z.abs() <= 2.0 {
                            break z * std / 0.879_625_661_034_239_8;
                        }
                    }
                } else {
                    Distribution::<f64>::sample(&StandardNormal, rng) * std
                }
            })
            .collect();
        Tensor::new(shape, data)
    }
}

/// Everything a model carries between steps: parameters (named by Flax
/// path, without the `params/` prefix) and BatchNorm running statistics
/// (`<path>/mean`, `<path>/var`, without `batch_stats/`).
#[derive(Clone, Debug, Default)]
pub struct ModelState<T: Float> {
    pub params: BTreeMap<String, Tensor<T>>,
    pub batch_stats: BTreeMap<String, Tensor<T>>,
}

impl<T: Float> ModelState<T> {
    /// Fresh parameters for `kind`, drawn with the SPEC's initialisers.
    pub fn init(kind: ModelKind, seed: u64) -> Self {
        let mut state = ModelState::default();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let tape = Tape::no_grad();
        let mut ctx = Ctx {
            init: Some(&mut rng),
            ..Ctx::new(&tape, &mut state, false)
        };
        // A one-image forward creates every parameter, as Flax's init does.
        kind.forward(&mut ctx, &Var::constant(Tensor::zeros(&[1, 32, 32, 3])));
        state
    }

    pub fn num_params(&self) -> usize {
        self.params.values().map(|p| p.numel()).sum()
    }

    /// Every tensor under its checkpoint name (`params/...`, `batch_stats/...`).
    pub fn named_tensors(&self) -> impl Iterator<Item = (String, &Tensor<T>)> {
        let params = self.params.iter().map(|(k, v)| (format!("params/{k}"), v));
        params.chain(self.batch_stats.iter().map(|(k, v)| (format!("batch_stats/{k}"), v)))
    }

    /// Builds a state from checkpoint names, checking that the set of names
    /// and every shape match `kind`'s own.
    pub fn from_named(kind: ModelKind, tensors: &BTreeMap<String, Tensor<T>>) -> Result<Self, String> {
        let expected = Self::init(kind, 0);
        let mut state = ModelState::default();
        for (name, reference) in expected.named_tensors() {
            let found = tensors
                .get(&name)
                .ok_or_else(|| format!("{kind} needs tensor {name:?}, which is missing"))?;
            if found.shape() != reference.shape() {
                return Err(format!(
                    "tensor {name:?} has shape {:?}, but {kind} needs {:?}",
                    found.shape(),
                    reference.shape()
                ));
            }
            match name.split_once('/') {
                Some(("params", path)) => {
                    state.params.insert(path.to_string(), found.clone());
                }
                Some((_, path)) => {
                    state.batch_stats.insert(path.to_string(), found.clone());
                }
                None => unreachable!("named_tensors always has a prefix"),
            }
        }
        let extra = tensors
            .keys()
            .filter(|k| (k.starts_with("params/") || k.starts_with("batch_stats/")) && expected.lookup(k).is_none())
            .cloned()
            .collect::<Vec<_>>();
        if !extra.is_empty() {
            return Err(format!(
                "tensors {extra:?} are not part of {kind}: is this another model's checkpoint?"
            ));
        }
        Ok(state)
    }

    fn lookup(&self, name: &str) -> Option<&Tensor<T>> {
        match name.split_once('/')? {
            ("params", path) => self.params.get(path),
            ("batch_stats", path) => self.batch_stats.get(path),
            _ => None,
        }
    }

    /// Folds a train-mode forward's batch statistics into the running ones,
    /// in place: `running = momentum * running + (1 - momentum) * batch`;
    /// nothing changes once `halt` says a loss of the epoch was not finite.
    pub fn update_running(&mut self, update: RunningUpdate<T>, halt: Halt) {
        for (path, batch) in update.0 {
            let (mean_key, var_key) = (format!("{path}mean"), format!("{path}var"));
            // Out of the map while both are updated (a map lends one at a time).
            let mut take = |key: &String| {
                let stat = self.batch_stats.remove(key);
                stat.unwrap_or_else(|| panic!("{key} is missing"))
            };
            let (mut mean, mut var) = (take(&mean_key), take(&var_key));
            backend::batch_norm_update_running(&mut mean, &mut var, &batch, halt);
            self.batch_stats.insert(mean_key, mean);
            self.batch_stats.insert(var_key, var);
        }
    }

    /// The same state with every tensor moved by `f` (to the GPU or the host).
    pub fn map(&self, f: impl Fn(&Tensor<T>) -> Tensor<T>) -> Self {
        ModelState {
            params: self.params.iter().map(|(k, v)| (k.clone(), f(v))).collect(),
            batch_stats: self.batch_stats.iter().map(|(k, v)| (k.clone(), f(v))).collect(),
        }
    }

    /// The same state in another float type.
    pub fn cast<U: Float>(&self) -> ModelState<U> {
        ModelState {
            params: self.params.iter().map(|(k, v)| (k.clone(), v.cast())).collect(),
            batch_stats: self.batch_stats.iter().map(|(k, v)| (k.clone(), v.cast())).collect(),
        }
    }
}

/// The batch statistics of every BatchNorm a train-mode forward ran, under
/// the layer's path (`ResNetBlock_0/BatchNorm_1/`), in the order they ran.
pub struct RunningUpdate<T>(Vec<(String, Rc<BatchStats<T>>)>);

/// The context a model's forward runs in: the tape, the state it reads
/// parameters and running statistics from (and creates them in when
/// initialising), the batch statistics collected in train mode, and the
/// current naming scope.
pub struct Ctx<'a, T: Float> {
    tape: &'a Tape<T>,
    state: &'a mut ModelState<T>,
    train: bool,
    /// Set while initialising: missing parameters are drawn from it.
    init: Option<&'a mut ChaCha8Rng>,
    running: RunningUpdate<T>,
    prefix: String,
    counters: HashMap<&'static str, usize>,
    /// Every convolution the forward ran, in order, while recording
    /// ([`Ctx::record_convs`]; `conv_shapes` lists a network's convs so).
    convs: Option<Vec<ConvCall>>,
}

/// One convolution a forward ran: input and kernel shapes, window, bias.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvCall {
    pub x_shape: [usize; 4],
    pub w_shape: [usize; 4],
    pub win: Window,
    pub bias: bool,
}

impl<'a, T: Float> Ctx<'a, T> {
    /// `train` selects BatchNorm's batch statistics (collected for
    /// [`Self::into_running_update`]) over the running ones; the tape
    /// decides whether gradients are recorded.
    pub fn new(tape: &'a Tape<T>, state: &'a mut ModelState<T>, train: bool) -> Self {
        Ctx {
            tape,
            state,
            train,
            init: None,
            running: RunningUpdate(Vec::new()),
            prefix: String::new(),
            counters: HashMap::new(),
            convs: None,
        }
    }

    /// From now on, note every convolution this context runs
    /// ([`Self::take_convs`]).
    pub fn record_convs(&mut self) {
        self.convs.get_or_insert_with(Vec::new);
    }

    /// The convolutions noted since [`Self::record_convs`], in the order
    /// they ran (empty if it was not called).
    pub fn take_convs(&mut self) -> Vec<ConvCall> {
        self.convs.take().unwrap_or_default()
    }

    /// The batch statistics a train-mode forward collected, for
    /// [`ModelState::update_running`] (empty in eval mode).
    pub fn into_running_update(self) -> RunningUpdate<T> {
        self.running
    }

    pub fn tape(&self) -> &'a Tape<T> {
        self.tape
    }

    /// The next auto-name for a module of type `kind` in this scope.
    fn next_name(&mut self, kind: &'static str) -> String {
        let n = self.counters.entry(kind).or_insert(0);
        *n += 1;
        format!("{}{kind}_{}/", self.prefix, *n - 1)
    }

    /// Runs `f` inside a sub-module scope `<kind>_<n>`: with that prefix and
    /// fresh name counters, restored afterwards.
    pub fn scope<R>(&mut self, kind: &'static str, f: impl FnOnce(&mut Ctx<T>) -> R) -> R {
        let prefix = self.next_name(kind);
        let outer = (
            std::mem::replace(&mut self.prefix, prefix),
            std::mem::take(&mut self.counters),
        );
        let result = f(self);
        (self.prefix, self.counters) = outer;
        result
    }

    /// The parameter at `path`, created with `init` when initialising.
    fn param(&mut self, path: String, shape: &[usize], init: impl FnOnce(&mut ChaCha8Rng) -> Tensor<f64>) -> Var<T> {
        if let Some(rng) = self.init.as_deref_mut() {
            self.state
                .params
                .entry(path.clone())
                .or_insert_with(|| init(rng).cast());
        }
        let value = self
            .state
            .params
            .get(&path)
            .unwrap_or_else(|| panic!("parameter {path} is missing"));
        assert_eq!(value.shape(), shape, "parameter {path}");
        // A clone shares the elements: the tape and its backward closures
        // read the state's own parameter, copying nothing.
        self.tape.param(&path, Rc::new(value.clone()))
    }

    /// `nn.Conv(features, (k, k), strides, padding SAME, use_bias)`.
    pub fn conv(&mut self, x: &Var<T>, features: usize, k: usize, stride: usize, bias: bool, init: Init) -> Var<T> {
        let name = self.next_name("Conv");
        let shape = [k, k, x.shape()[3], features];
        let w = self.param(format!("{name}kernel"), &shape, |rng| init.sample(&shape, rng));
        let b = bias.then(|| self.param(format!("{name}bias"), &[features], |_| Tensor::zeros(&[features])));
        let win = Window::same([k, k], [stride, stride], [x.shape()[1], x.shape()[2]]);
        if let Some(convs) = &mut self.convs {
            let dims = |s: &[usize]| <[usize; 4]>::try_from(s).expect("a conv's input and kernel are 4-D");
            convs.push(ConvCall {
                x_shape: dims(x.shape()),
                w_shape: dims(&shape),
                win,
                bias,
            });
        }
        self.tape.conv2d(x, &w, b.as_ref(), win)
    }

    /// `nn.BatchNorm()` with momentum 0.99, eps 1e-5, then `tail` (the
    /// residual add and ReLU that follow it in the Flax code), in one op.
    pub fn batch_norm(&mut self, x: &Var<T>, tail: Epilogue<&Var<T>>) -> Var<T> {
        let name = self.next_name("BatchNorm");
        let c = *x.shape().last().expect("batch norm input");
        let scale = self.param(format!("{name}scale"), &[c], |_| Tensor::full(&[c], 1.0));
        let bias = self.param(format!("{name}bias"), &[c], |_| Tensor::zeros(&[c]));
        if self.init.is_some() {
            let stats = &mut self.state.batch_stats;
            stats
                .entry(format!("{name}mean"))
                .or_insert_with(|| Tensor::zeros(&[c]));
            stats
                .entry(format!("{name}var"))
                .or_insert_with(|| Tensor::full(&[c], T::one()));
        }
        if self.train {
            let (y, batch) = self.tape.batch_norm_train(x, &scale, &bias, tail);
            self.running.0.push((name, batch));
            return y;
        }
        let stat = |key: String| {
            let value = self.state.batch_stats.get(&key);
            value.unwrap_or_else(|| panic!("{key} is missing")).clone()
        };
        let running = BatchStats {
            mean: stat(format!("{name}mean")),
            var: stat(format!("{name}var")),
        };
        self.tape.batch_norm_eval(x, &scale, &bias, running, tail)
    }

    /// `nn.Dense(features)` with Flax's default (lecun normal) kernel init.
    pub fn dense(&mut self, x: &Var<T>, features: usize) -> Var<T> {
        let name = self.next_name("Dense");
        let shape = [x.shape()[1], features];
        let w = self.param(format!("{name}kernel"), &shape, |rng| Init::Lecun.sample(&shape, rng));
        let b = self.param(format!("{name}bias"), &[features], |_| Tensor::zeros(&[features]));
        self.tape.dense(x, &w, &b)
    }

    /// Global average pool then the 10-way dense head.
    pub fn head(&mut self, x: &Var<T>) -> Var<T> {
        let pooled = self.tape.mean_hw(x);
        self.dense(&pooled, NUM_CLASSES)
    }
}
