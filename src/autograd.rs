//! Tape autograd.
//!
//! A [`Tape`] in train mode records, for every op whose inputs need a
//! gradient, a node holding the ids of those inputs and a closure that maps
//! the output's gradient to the inputs' gradients (the closure owns, through
//! `Rc`s, exactly the tensors its backward needs). [`Tape::backward`] walks
//! the nodes in reverse creation order, which is a topological order, and
//! adds up every contribution a node receives, so a value used twice (a
//! residual shortcut, a dense block's concatenation) gets both.
//!
//! In eval mode the tape records nothing: every [`Var`] is a constant,
//! intermediate values are freed as soon as the model drops them, and no
//! gradient memory exists.
//!
//! Ops that do not change from step to step (shapes, windows) are captured by
//! value; the tensors live in `Rc`s shared between the forward values and the
//! closures, so recording copies no data.

use crate::backend::{self, Backend, Labels};
use crate::float::Float;
use crate::layers::{
    batchnorm::{BatchStats, Epilogue},
    Math, Window,
};
use crate::tensor::Tensor;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

/// A value in a computation: its tensor, and its node on the tape if a
/// gradient flows to it.
#[derive(Clone, Debug)]
pub struct Var<T: Float> {
    value: Rc<Tensor<T>>,
    id: Option<usize>,
}

impl<T: Float> Var<T> {
    /// A value no gradient flows to (input images, running statistics).
    pub fn constant(value: Tensor<T>) -> Self {
        Var {
            value: Rc::new(value),
            id: None,
        }
    }
    pub fn value(&self) -> &Tensor<T> {
        &self.value
    }
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }
    pub fn requires_grad(&self) -> bool {
        self.id.is_some()
    }
}

/// Each parameter's gradient slot, by name: views of the GPU's flat
/// gradient buffer, built once and shared by every step's tape.
pub type GradSlots<T> = BTreeMap<String, Tensor<T>>;

/// What a backward closure is asked for one input.
pub enum Want<T> {
    Nothing,
    Gradient,
    /// The gradient, written into this tensor: a parameter's slot of the
    /// GPU's flat gradient buffer (the optimiser reads the buffer whole).
    Into(Tensor<T>),
}

impl<T> Want<T> {
    pub fn any(&self) -> bool {
        !matches!(self, Want::Nothing)
    }

    /// Where to write the gradient, if somewhere.
    pub fn slot(&self) -> Option<&Tensor<T>> {
        match self {
            Want::Into(slot) => Some(slot),
            _ => None,
        }
    }
}

/// Maps the output gradient to one gradient per input, as `wanted[i]` asks
/// (it may return None where nothing is wanted). A gradient asked `Into` a
/// slot is returned as that slot.
type BackwardFn<T> = Box<dyn FnOnce(&Tensor<T>, &[Want<T>]) -> Vec<Option<Tensor<T>>>>;

struct Node<T> {
    inputs: Vec<Option<usize>>,
    /// None for leaves (parameters), and for nodes already differentiated.
    backward: Option<BackwardFn<T>>,
    /// For a parameter with a slot: where its gradient goes.
    grad_slot: Option<Tensor<T>>,
}

pub struct Tape<T> {
    recording: bool,
    nodes: RefCell<Vec<Node<T>>>,
    names: RefCell<Vec<(String, usize)>>,
    /// Gradient slots by parameter name ([`Tape::with_grad_slots`]).
    grad_slots: Arc<GradSlots<T>>,
    /// How convolutions multiply on the GPU ([`Tape::with_math`]).
    math: Math,
    /// Shown every tensor an op or a backward computes
    /// ([`Tape::with_buffer_observer`]).
    observer: Option<BufferObserver<T>>,
}

/// Sees each tensor a step computes, as it is computed.
pub type BufferObserver<T> = Rc<dyn Fn(&Tensor<T>)>;

/// Gradients from one backward pass.
pub struct Grads<T> {
    by_node: Vec<Option<Tensor<T>>>,
    names: Vec<(String, usize)>,
}

impl<T: Float> Grads<T> {
    /// The gradient of a leaf created by [`Tape::param`] or [`Tape::leaf`];
    /// None when nothing flowed to it.
    pub fn of(&self, var: &Var<T>) -> Option<&Tensor<T>> {
        self.by_node[var.id?].as_ref()
    }

    /// The gradient of the parameter called `name`, if any flowed to it.
    pub fn get(&self, name: &str) -> Option<&Tensor<T>> {
        let (_, id) = self.names.iter().find(|(n, _)| n == name)?;
        self.by_node[*id].as_ref()
    }
}

impl<T: Float> Tape<T> {
    /// A tape that records (train mode).
    pub fn new() -> Self {
        Tape {
            recording: true,
            nodes: RefCell::default(),
            names: RefCell::default(),
            grad_slots: Arc::default(),
            math: Math::Fp32,
            observer: None,
        }
    }

    /// This tape with its convolutions (forward and backward) computed in
    /// `math` where they run on the GPU.
    pub fn with_math(self, math: Math) -> Self {
        Tape { math, ..self }
    }

    /// This tape showing `observer` every tensor its ops and its backward
    /// compute, in order: the buffers a step asks for, so the step arena's
    /// plan can be tested on the CPU (`tests/arena.rs`).
    pub fn with_buffer_observer(self, observer: BufferObserver<T>) -> Self {
        Tape {
            observer: Some(observer),
            ..self
        }
    }

    fn observe(&self, t: &Tensor<T>) {
        if let Some(observe) = &self.observer {
            observe(t);
        }
    }

    /// A recording tape that writes the gradient of each parameter named in
    /// `slots` into its slot (a view of the GPU's flat gradient buffer),
    /// where the op's backward computes it, so no gradient is copied.
    pub fn with_grad_slots(slots: Arc<GradSlots<T>>) -> Self {
        Tape {
            grad_slots: slots,
            ..Self::new()
        }
    }

    /// A tape that records nothing (eval mode).
    pub fn no_grad() -> Self {
        Tape {
            recording: false,
            ..Self::new()
        }
    }

    pub fn is_recording(&self) -> bool {
        self.recording
    }

    /// How many nodes the tape holds (0 for an eval-mode tape).
    pub fn len(&self) -> usize {
        self.nodes.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&self, inputs: Vec<Option<usize>>, backward: Option<BackwardFn<T>>, grad_slot: Option<Tensor<T>>) -> usize {
        let mut nodes = self.nodes.borrow_mut();
        nodes.push(Node {
            inputs,
            backward,
            grad_slot,
        });
        nodes.len() - 1
    }

    /// A named parameter: a leaf whose gradient [`Grads::get`] returns.
    /// On a non-recording tape it is a plain constant.
    pub fn param(&self, name: &str, value: Rc<Tensor<T>>) -> Var<T> {
        if !self.recording {
            return Var { value, id: None };
        }
        let slot = self.grad_slots.get(name).cloned();
        if let Some(slot) = &slot {
            assert_eq!(slot.shape(), value.shape(), "gradient slot of {name}");
        }
        let id = self.push(Vec::new(), None, slot);
        self.names.borrow_mut().push((name.to_string(), id));
        Var { value, id: Some(id) }
    }

    /// An unnamed leaf that wants a gradient (for checks on op inputs).
    pub fn leaf(&self, value: Tensor<T>) -> Var<T> {
        let id = self.recording.then(|| self.push(Vec::new(), None, None));
        Var {
            value: Rc::new(value),
            id,
        }
    }

    /// Records `value = op(inputs)` with its backward, if any input needs a
    /// gradient and the tape records.
    fn record(
        &self,
        value: Rc<Tensor<T>>,
        inputs: &[&Var<T>],
        backward: impl FnOnce(&Tensor<T>, &[Want<T>]) -> Vec<Option<Tensor<T>>> + 'static,
    ) -> Var<T> {
        self.observe(&value);
        let ids: Vec<Option<usize>> = inputs.iter().map(|v| v.id).collect();
        if !self.recording || ids.iter().all(Option::is_none) {
            return Var { value, id: None };
        }
        let id = self.push(ids, Some(Box::new(backward)), None);
        Var { value, id: Some(id) }
    }

    /// Backward from a scalar: d`loss`/d(every leaf).
    pub fn backward(&self, loss: &Var<T>) -> Grads<T> {
        assert_eq!(
            loss.value.numel(),
            1,
            "backward() needs a scalar loss; use backward_with"
        );
        let seed = Backend::of(&loss.value).one().reshape(loss.shape());
        self.backward_with(loss, seed)
    }

    /// Backward seeded with `seed` = dL/d`out` for some implicit scalar L.
    /// Consumes the recorded closures: one backward per tape.
    pub fn backward_with(&self, out: &Var<T>, seed: Tensor<T>) -> Grads<T> {
        assert_eq!(seed.shape(), out.shape(), "seed gradient shape");
        let mut nodes = self.nodes.borrow_mut();
        let mut grads: Vec<Option<Tensor<T>>> = (0..nodes.len()).map(|_| None).collect();
        let Some(out_id) = out.id else {
            return Grads {
                by_node: grads,
                names: self.names.borrow().clone(),
            };
        };
        grads[out_id] = Some(seed);
        let slots: Vec<Option<Tensor<T>>> = nodes.iter().map(|n| n.grad_slot.clone()).collect();
        for id in (0..=out_id).rev() {
            let node = &mut nodes[id];
            let Some(backward) = node.backward.take() else { continue };
            // An interior node's gradient is consumed here; leaves keep theirs.
            let Some(g) = grads[id].take() else { continue };
            // A parameter's first gradient goes straight into its slot.
            let wanted: Vec<Want<T>> = node
                .inputs
                .iter()
                .map(|input| match input.map(|i| (&slots[i], &grads[i])) {
                    None => Want::Nothing,
                    Some((Some(slot), None)) => Want::Into(slot.clone()),
                    Some(_) => Want::Gradient,
                })
                .collect();
            let input_grads = backward(&g, &wanted);
            for (input, ig) in node.inputs.iter().zip(input_grads) {
                if let (Some(input), Some(ig)) = (input, ig) {
                    self.observe(&ig);
                    match &mut grads[*input] {
                        Some(acc) => {
                            *acc = backend::add(acc, &ig);
                            self.observe(acc);
                        }
                        slot => *slot = Some(ig),
                    }
                }
            }
        }
        // A parameter used twice had its gradients added into a new tensor:
        // that sum goes into its slot (none of the four networks does this).
        for (grad, slot) in grads.iter_mut().zip(&slots) {
            if let (Some(g), Some(slot)) = (grad.as_mut(), slot) {
                if !slot.contains(g) {
                    backend::copy(g, slot);
                    *g = slot.clone();
                }
            }
        }
        Grads {
            by_node: grads,
            names: self.names.borrow().clone(),
        }
    }

    // ----- ops -----

    pub fn conv2d(&self, x: &Var<T>, w: &Var<T>, b: Option<&Var<T>>, win: Window) -> Var<T> {
        let math = self.math;
        let y = backend::conv_forward(&x.value, &w.value, b.map(|b| &*b.value), &win, math);
        let (xv, wv) = (x.value.clone(), w.value.clone());
        let mut inputs = vec![x, w];
        inputs.extend(b);
        self.record(Rc::new(y), &inputs, move |dy, wanted| {
            let mut g = vec![
                wanted[0]
                    .any()
                    .then(|| backend::conv_backward_data(dy, xv.shape(), &wv, &win, math)),
                wanted[1]
                    .any()
                    .then(|| backend::conv_backward_weight(dy, &xv, wv.shape(), &win, math, wanted[1].slot())),
            ];
            if wanted.len() == 3 {
                g.push(
                    wanted[2]
                        .any()
                        .then(|| backend::conv_backward_bias(dy, wanted[2].slot())),
                );
            }
            g
        })
    }

    /// Train-mode batch norm then `tail` (a residual added, a ReLU), in
    /// one op; also returns the batch statistics.
    pub fn batch_norm_train(
        &self,
        x: &Var<T>,
        scale: &Var<T>,
        bias: &Var<T>,
        tail: Epilogue<&Var<T>>,
    ) -> (Var<T>, Rc<BatchStats<T>>) {
        let values = tail_values(tail);
        let (y, stats) = backend::batch_norm_train(&x.value, &scale.value, &bias.value, values);
        let stats = Rc::new(stats);
        let y = self.batch_norm_record(y, [x, scale, bias], tail, stats.clone(), true);
        (y, stats)
    }

    /// Eval-mode batch norm with the running statistics, then `tail`.
    pub fn batch_norm_eval(
        &self,
        x: &Var<T>,
        scale: &Var<T>,
        bias: &Var<T>,
        running: BatchStats<T>,
        tail: Epilogue<&Var<T>>,
    ) -> Var<T> {
        let y = backend::batch_norm_eval(&x.value, &scale.value, &bias.value, &running, tail_values(tail));
        self.batch_norm_record(y, [x, scale, bias], tail, Rc::new(running), false)
    }

    fn batch_norm_record(
        &self,
        y: Tensor<T>,
        [x, scale, bias]: [&Var<T>; 3],
        tail: Epilogue<&Var<T>>,
        stats: Rc<BatchStats<T>>,
        train: bool,
    ) -> Var<T> {
        let (xv, sv) = (x.value.clone(), scale.value.clone());
        let y = Rc::new(y);
        // The backward reads y only to mask with the ReLU.
        let yv = if tail.relu { y.clone() } else { xv.clone() };
        let grad_tail = Epilogue {
            residual: tail.residual.map(|_| ()),
            relu: tail.relu,
        };
        let mut inputs = vec![x, scale, bias];
        inputs.extend(tail.residual);
        self.record(y, &inputs, move |dy, wanted| {
            let slots = param_slots(wanted);
            let g = backend::batch_norm_backward(dy, &xv, &yv, &sv, &stats, train, grad_tail, slots);
            let mut grads = vec![Some(g.dx), Some(g.dscale), Some(g.dbias)];
            grads.extend(g.dresidual.map(Some));
            grads
        })
    }

    pub fn relu(&self, x: &Var<T>) -> Var<T> {
        let y = Rc::new(backend::relu(&x.value));
        let saved = y.clone();
        self.record(y, &[x], move |dy, _| vec![Some(backend::relu_backward(dy, &saved))])
    }

    pub fn add(&self, a: &Var<T>, b: &Var<T>) -> Var<T> {
        let y = backend::add(&a.value, &b.value);
        // Both gradients are dy: clones that share its elements, no copy.
        self.record(Rc::new(y), &[a, b], |dy, _| vec![Some(dy.clone()), Some(dy.clone())])
    }

    pub fn max_pool(&self, x: &Var<T>, win: Window) -> Var<T> {
        let (y, argmax) = backend::max_pool(&x.value, &win);
        let x_shape = x.shape().to_vec();
        self.record(Rc::new(y), &[x], move |dy, _| {
            vec![Some(backend::max_pool_backward(dy, &argmax, &x_shape, &win))]
        })
    }

    pub fn avg_pool(&self, x: &Var<T>, win: Window) -> Var<T> {
        let y = backend::avg_pool(&x.value, &win);
        let x_shape = x.shape().to_vec();
        self.record(Rc::new(y), &[x], move |dy, _| {
            vec![Some(backend::avg_pool_backward(dy, &x_shape, &win))]
        })
    }

    pub fn mean_hw(&self, x: &Var<T>) -> Var<T> {
        let y = backend::mean_hw(&x.value);
        let x_shape = x.shape().to_vec();
        self.record(Rc::new(y), &[x], move |dy, _| {
            vec![Some(backend::mean_hw_backward(dy, &x_shape))]
        })
    }

    pub fn dense(&self, x: &Var<T>, w: &Var<T>, b: &Var<T>) -> Var<T> {
        let y = backend::dense(&x.value, &w.value, &b.value);
        let (xv, wv) = (x.value.clone(), w.value.clone());
        self.record(Rc::new(y), &[x, w, b], move |dy, wanted| {
            let (dx, dw, db) = backend::dense_backward(dy, &xv, &wv, param_slots(wanted));
            vec![Some(dx), Some(dw), Some(db)]
        })
    }

    pub fn concat(&self, parts: &[&Var<T>]) -> Var<T> {
        let y = backend::concat(&parts.iter().map(|p| &*p.value).collect::<Vec<_>>());
        let widths: Vec<usize> = parts.iter().map(|p| *p.shape().last().expect("4-D")).collect();
        self.record(Rc::new(y), parts, move |dy, _| {
            backend::concat_backward(dy, &widths).into_iter().map(Some).collect()
        })
    }

    /// Mean softmax cross-entropy: a scalar, where the logits are.
    pub fn cross_entropy(&self, logits: &Var<T>, labels: &Labels) -> Var<T> {
        let loss = Rc::new(backend::cross_entropy(&logits.value, labels));
        let (lv, labels) = (logits.value.clone(), labels.clone());
        self.record(loss, &[logits], move |dl, _| {
            vec![Some(backend::cross_entropy_backward(&lv, &labels, dl))]
        })
    }
}

/// An epilogue's residual as the tensor it holds.
fn tail_values<T: Float>(tail: Epilogue<&Var<T>>) -> Epilogue<&Tensor<T>> {
    Epilogue {
        residual: tail.residual.map(|r| &*r.value),
        relu: tail.relu,
    }
}

/// The slots of an op's two parameters, inputs 1 and 2 (a weight or scale
/// and a bias), when both have one.
fn param_slots<T>(wanted: &[Want<T>]) -> Option<[&Tensor<T>; 2]> {
    Some([wanted[1].slot()?, wanted[2].slot()?])
}

impl<T: Float> Default for Tape<T> {
    fn default() -> Self {
        Self::new()
    }
}
