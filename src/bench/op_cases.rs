//! The kernels of a step other than the convolutions (batch norm with its
//! epilogues, pools, concat, element-wise, loss, optimiser), as launch plans
//! at the networks' shapes: `benches/gpu_ops.rs` times them on the GPU, and
//! the unit tests below check every plan against the PTX without one.

use super::{STEP_ITERS, STEP_WARMUP};
use crate::cuda::conv::ConvShape;
use crate::cuda::launch::Launch;
use crate::cuda::optim::{self as gpu_optim, FlatLayout};
use crate::cuda::{batchnorm, concat, elementwise, loss, pool, DeviceBuffer, Gpu};
use crate::float::Float;
use crate::layers::batchnorm::Epilogue;
use crate::layers::Window;
use crate::models::conv_shapes::conv_calls;
use crate::models::{ModelKind, ModelState, NUM_CLASSES};
use crate::optim::{OptimizerConfig, OptimizerKind};
use crate::tensor::Tensor;
use rand::SeedableRng;
use std::any::Any;

/// `n{batch}_h{height}_w{width}_c{channels}` of an NHWC activation.
pub fn activation_key(shape: &[usize; 4]) -> String {
    let [n, h, w, c] = *shape;
    format!("n{n}_h{h}_w{w}_c{c}")
}

/// The distinct activations (NHWC at `batch`, in order of first use) that
/// the convs of `kinds` read and write, found by running the networks
/// ([`conv_calls`]): batch norm, ReLU and add run on such tensors. The
/// networks' input image is left out.
pub fn activation_shapes(kinds: &[ModelKind], batch: usize) -> Vec<[usize; 4]> {
    let mut shapes = Vec::new();
    for &kind in kinds {
        let calls = conv_calls(kind);
        let image = calls[0].x_shape;
        for call in &calls {
            let y = ConvShape::new(&call.x_shape, &call.w_shape, &call.win).y_shape();
            for mut shape in [call.x_shape, y] {
                if shape == image {
                    continue;
                }
                shape[0] = batch;
                if !shapes.contains(&shape) {
                    shapes.push(shape);
                }
            }
        }
    }
    shapes
}

/// Max- or average-pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

/// One pool of a network: its kind, NHWC input and window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolUse {
    pub kind: PoolKind,
    pub x_shape: [usize; 4],
    pub win: Window,
}

impl PoolUse {
    /// `max3x3s2/n128_h32_w32_c96`.
    pub fn key(&self) -> String {
        let kind = match self.kind {
            PoolKind::Max => "max",
            PoolKind::Avg => "avg",
        };
        let [kh, kw] = self.win.size;
        format!(
            "{kind}{kh}x{kw}s{}/{}",
            self.win.stride[0],
            activation_key(&self.x_shape)
        )
    }
}

/// How `kind` pools (src/models): GoogleNet with 3x3/2 max-pools, DenseNet's
/// transitions with 2x2/2 average pools, both VALID; the ResNets subsample
/// with strided convs instead.
fn pooling(kind: ModelKind) -> Option<(PoolKind, Window)> {
    match kind {
        ModelKind::GoogleNet => Some((PoolKind::Max, Window::valid([3, 3], [2, 2]))),
        ModelKind::DenseNet => Some((PoolKind::Avg, Window::valid([2, 2], [2, 2]))),
        ModelKind::ResNet | ModelKind::PreActResNet => None,
    }
}

/// The distinct pools of `kinds` at `batch`. Only a pool shrinks a tensor
/// between two convs of these networks, so a conv whose input is smaller
/// than the output of the conv run just before it reads a pooled tensor:
/// the pool's input has that output's height and width and this conv's
/// channels.
pub fn pool_shapes(kinds: &[ModelKind], batch: usize) -> Vec<PoolUse> {
    let mut pools = Vec::new();
    for &kind in kinds {
        let Some((pool_kind, win)) = pooling(kind) else {
            continue;
        };
        let calls = conv_calls(kind);
        for pair in calls.windows(2) {
            let before = ConvShape::new(&pair[0].x_shape, &pair[0].w_shape, &pair[0].win).y_shape();
            let x = pair[1].x_shape;
            let pool = PoolUse {
                kind: pool_kind,
                x_shape: [batch, before[1], before[2], x[3]],
                win,
            };
            if x[1] < before[1] && !pools.contains(&pool) {
                pools.push(pool);
            }
        }
    }
    pools
}

/// One concatenation along the channels: the parts' NHW and their widths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConcatUse {
    pub nhw: [usize; 3],
    pub widths: Vec<usize>,
}

impl ConcatUse {
    /// `n128_h32_w32_c16+32+8+8`.
    pub fn key(&self) -> String {
        let [n, h, w] = self.nhw;
        let widths: Vec<String> = self.widths.iter().map(ToString::to_string).collect();
        format!("n{n}_h{h}_w{w}_c{}", widths.join("+"))
    }

    pub fn rows(&self) -> usize {
        self.nhw.iter().product()
    }
}

/// The distinct concatenations of `kinds` at `batch`, from their convs
/// ([`conv_calls`]) and the structure of src/models: an inception block of
/// GoogleNet runs six convs after the stem and concatenates the outputs of
/// the 1st, 3rd, 5th and 6th; a DenseNet layer concatenates its input (its
/// 1x1 conv's) with the output of its 3x3 conv (every 3x3 conv but the
/// stem, the only one with a bias).
pub fn concat_shapes(kinds: &[ModelKind], batch: usize) -> Vec<ConcatUse> {
    let mut concats = Vec::new();
    for &kind in kinds {
        let calls = conv_calls(kind);
        let nhw = |x: &[usize; 4]| [batch, x[1], x[2]];
        let found: Vec<ConcatUse> = match kind {
            ModelKind::GoogleNet => calls[1..]
                .chunks(6)
                .map(|block| ConcatUse {
                    nhw: nhw(&block[0].x_shape),
                    widths: [0, 2, 4, 5].map(|i| block[i].w_shape[3]).to_vec(),
                })
                .collect(),
            ModelKind::DenseNet => (1..calls.len())
                .filter(|&i| calls[i].w_shape[0] == 3 && !calls[i].bias)
                .map(|i| ConcatUse {
                    nhw: nhw(&calls[i].x_shape),
                    widths: vec![calls[i - 1].x_shape[3], calls[i].w_shape[3]],
                })
                .collect(),
            ModelKind::ResNet | ModelKind::PreActResNet => Vec::new(),
        };
        for c in found {
            if !concats.contains(&c) {
                concats.push(c);
            }
        }
    }
    concats
}

/// What a buffer of an [`OpCase`] holds before the timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// f32 uniform in [-1, 1): activations, gradients, parameters.
    Signed,
    /// f32 uniform in [0.5, 1.5): variances and Adam's second moment,
    /// whose square roots the kernels take.
    Positive,
    /// f64 the kernels write before reading (a reduction's workspace).
    Workspace,
    /// u32 class labels below [`NUM_CLASSES`].
    Labels,
    /// u32 the setup launches write (max-pool's argmax).
    Indices,
    /// One u32 zero: a one-launch reduction's ticket word (`Gpu::ticket`).
    Ticket,
    /// One u64 zero: the optimiser's update count.
    Count,
}

impl Fill {
    fn element_bytes(self) -> usize {
        match self {
            Fill::Workspace | Fill::Count => 8,
            Fill::Signed | Fill::Positive | Fill::Labels | Fill::Indices | Fill::Ticket => 4,
        }
    }
}

/// Launches for the buffers at the given addresses.
type PlanFn = Box<dyn Fn(&[u64]) -> Vec<Launch>>;

/// One case of `benches/gpu_ops.rs`: a kernel family's launches at one of
/// the networks' shapes, over buffers it describes, so that the plans can be
/// built with made-up addresses (checked against the PTX without a GPU) or
/// with real ones.
pub struct OpCase {
    /// The criterion group: `batchnorm_fwd`, `pool_bwd`, `optimizer`, ...
    pub group: &'static str,
    pub id: String,
    /// Element count and fill of each buffer, in the order of the addresses
    /// the plans take.
    buffers: Vec<(usize, Fill)>,
    /// Run once before the timing: what fills buffers the timed launches
    /// read (max-pool's argmax).
    setup: Option<PlanFn>,
    timed: PlanFn,
    /// The least bytes the timed launches move: each buffer they read or
    /// write, once (twice if both), as the copy ceiling counts them.
    pub bytes: f64,
}

/// The buffers of an [`OpCase`] being described: [`Buffers::add`] gives
/// each one's index in the address slice the plans get.
#[derive(Default)]
struct Buffers(Vec<(usize, Fill)>);

impl Buffers {
    fn add(&mut self, len: usize, fill: Fill) -> usize {
        self.0.push((len, fill));
        self.0.len() - 1
    }
}

impl OpCase {
    /// `moved`: the buffers the timed launches must read or write, those
    /// updated in place twice.
    fn new(
        group: &'static str,
        id: String,
        buffers: Buffers,
        moved: &[usize],
        timed: impl Fn(&[u64]) -> Vec<Launch> + 'static,
    ) -> Self {
        let bytes = moved
            .iter()
            .map(|&i| {
                let (len, fill) = buffers.0[i];
                (len * fill.element_bytes()) as f64
            })
            .sum();
        OpCase {
            group,
            id,
            buffers: buffers.0,
            setup: None,
            timed: Box::new(timed),
            bytes,
        }
    }

    fn with_setup(self, setup: impl Fn(&[u64]) -> Vec<Launch> + 'static) -> Self {
        OpCase {
            setup: Some(Box::new(setup)),
            ..self
        }
    }

    pub fn buffer_count(&self) -> usize {
        self.buffers.len()
    }

    /// The setup and the timed launches over buffers at `addresses`.
    pub fn plans(&self, addresses: &[u64]) -> (Vec<Launch>, Vec<Launch>) {
        assert_eq!(
            addresses.len(),
            self.buffers.len(),
            "{}: one address per buffer",
            self.id
        );
        let setup = self.setup.as_ref().map_or_else(Vec::new, |f| f(addresses));
        (setup, (self.timed)(addresses))
    }

    /// The buffers on `gpu`, filled, and the setup run: what to time.
    pub fn prepare(&self, gpu: &Gpu) -> PreparedOp {
        // Each buffer's address, and the buffer to keep alive behind it.
        fn tensor<T: Float>(gpu: &Gpu, t: Tensor<T>) -> (u64, Box<dyn Any>) {
            (gpu.ptr(&t), Box::new(t))
        }
        fn buffer<E: 'static>(gpu: &Gpu, b: DeviceBuffer<E>) -> (u64, Box<dyn Any>) {
            (gpu.buffer_ptr(&b), Box::new(b))
        }
        let (addresses, held): (Vec<u64>, Vec<Box<dyn Any>>) = self
            .buffers
            .iter()
            .enumerate()
            .map(|(i, &(len, fill))| {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(100 + i as u64);
                match fill {
                    Fill::Signed => tensor(gpu, gpu.upload(&Tensor::<f32>::uniform(&[len], -1.0, 1.0, &mut rng))),
                    Fill::Positive => tensor(gpu, gpu.upload(&Tensor::<f32>::uniform(&[len], 0.5, 1.5, &mut rng))),
                    Fill::Workspace => tensor(gpu, gpu.alloc::<f64>(&[len])),
                    Fill::Labels => {
                        let labels: Vec<u32> = (0..len).map(|r| (r % NUM_CLASSES) as u32).collect();
                        buffer(gpu, gpu.upload_buffer(&labels))
                    }
                    Fill::Indices => buffer(gpu, gpu.alloc_buffer::<u32>(len)),
                    Fill::Ticket => buffer(gpu, gpu.upload_buffer(&vec![0u32; len])),
                    Fill::Count => buffer(gpu, gpu.upload_buffer(&vec![0u64; len])),
                }
            })
            .unzip();
        let (setup, timed) = self.plans(&addresses);
        // SAFETY: every address is a live buffer of the length the case's
        // plans were written for.
        unsafe { gpu.run(&setup) };
        PreparedOp {
            plan: timed,
            _buffers: held,
        }
    }
}

/// An [`OpCase`] ready on the GPU: its timed launches and their buffers.
pub struct PreparedOp {
    pub plan: Vec<Launch>,
    /// What the plan's addresses point into, kept alive as long as it.
    _buffers: Vec<Box<dyn Any>>,
}

/// Batch norm (train mode) then ReLU, after adding a residual if `residual`.
fn batchnorm_cases(shape: [usize; 4], residual: bool) -> [OpCase; 2] {
    let (n, c) = (shape.iter().product::<usize>(), shape[3]);
    let id = format!(
        "{}/{}",
        activation_key(&shape),
        if residual { "residual_relu" } else { "relu" }
    );
    let stats = |p: &[u64], mean: usize, var: usize| batchnorm::StatsPtrs {
        mean: p[mean],
        var: p[var],
    };
    let forward = {
        let mut b = Buffers::default();
        let (x, scale, bias) = (b.add(n, Fill::Signed), b.add(c, Fill::Signed), b.add(c, Fill::Signed));
        let res = residual.then(|| b.add(n, Fill::Signed));
        let (y, mean, var) = (b.add(n, Fill::Signed), b.add(c, Fill::Signed), b.add(c, Fill::Signed));
        let ws = b.add(batchnorm::forward_train_workspace_len(&shape), Fill::Workspace);
        let ticket = b.add(1, Fill::Ticket);
        let moved: Vec<usize> = [x, scale, bias, y, mean, var].into_iter().chain(res).collect();
        OpCase::new("batchnorm_fwd", id.clone(), b, &moved, move |p| {
            let tail = Epilogue {
                residual: res.map(|r| p[r]),
                relu: true,
            };
            let batch = stats(p, mean, var);
            batchnorm::forward_train_plan::<f32>(p[x], &shape, p[scale], p[bias], tail, p[y], batch, p[ws], p[ticket])
        })
    };
    let backward = {
        let mut b = Buffers::default();
        let (dy, x, y, scale) = (
            b.add(n, Fill::Signed),
            b.add(n, Fill::Signed),
            b.add(n, Fill::Signed),
            b.add(c, Fill::Signed),
        );
        let (mean, var) = (b.add(c, Fill::Signed), b.add(c, Fill::Positive));
        let (dx, dscale, dbias) = (b.add(n, Fill::Signed), b.add(c, Fill::Signed), b.add(c, Fill::Signed));
        let dres = residual.then(|| b.add(n, Fill::Signed));
        let ws = b.add(batchnorm::backward_workspace_len(&shape), Fill::Workspace);
        let ticket = b.add(1, Fill::Ticket);
        let moved: Vec<usize> = [dy, x, y, scale, mean, var, dx, dscale, dbias]
            .into_iter()
            .chain(dres)
            .collect();
        OpCase::new("batchnorm_bwd", id, b, &moved, move |p| {
            let tail = Epilogue {
                residual: dres.map(|r| p[r]),
                relu: true,
            };
            let grads = batchnorm::GradPtrs {
                dx: p[dx],
                dscale: p[dscale],
                dbias: p[dbias],
            };
            let batch = stats(p, mean, var);
            batchnorm::backward_plan::<f32>(
                p[dy], p[x], p[y], &shape, p[scale], batch, true, tail, grads, p[ws], p[ticket],
            )
        })
    };
    [forward, backward]
}

fn pool_cases(pool: PoolUse) -> [OpCase; 2] {
    let g = pool::PoolGeometry::new(&pool.x_shape, &pool.win);
    let (x_len, y_len) = (g.in_shape().iter().product(), g.out_shape().iter().product());
    let mut b = Buffers::default();
    let (x, y) = (b.add(x_len, Fill::Signed), b.add(y_len, Fill::Signed));
    match pool.kind {
        PoolKind::Max => {
            let argmax = b.add(y_len, Fill::Indices);
            let forward = OpCase::new("pool_fwd", pool.key(), b, &[x, y, argmax], move |p| {
                pool::max_forward_plan::<f32>(p[x], p[y], p[argmax], &g)
            });
            // The backward reads the argmax of a forward over x.
            let mut b = Buffers::default();
            let (x, y, argmax) = (
                b.add(x_len, Fill::Signed),
                b.add(y_len, Fill::Signed),
                b.add(y_len, Fill::Indices),
            );
            let (dy, dx) = (b.add(y_len, Fill::Signed), b.add(x_len, Fill::Signed));
            let backward = OpCase::new("pool_bwd", pool.key(), b, &[dy, argmax, dx], move |p| {
                pool::max_backward_plan::<f32>(p[dy], p[argmax], p[dx], &g)
            })
            .with_setup(move |p| pool::max_forward_plan::<f32>(p[x], p[y], p[argmax], &g));
            [forward, backward]
        }
        PoolKind::Avg => {
            let forward = OpCase::new("pool_fwd", pool.key(), b, &[x, y], move |p| {
                pool::avg_forward_plan::<f32>(p[x], p[y], &g)
            });
            let mut b = Buffers::default();
            let (dy, dx) = (b.add(y_len, Fill::Signed), b.add(x_len, Fill::Signed));
            let backward = OpCase::new("pool_bwd", pool.key(), b, &[dy, dx], move |p| {
                pool::avg_backward_plan::<f32>(p[dy], p[dx], &g)
            });
            [forward, backward]
        }
    }
}

/// The concatenation and its backward (the whole gradient split into
/// pieces) over the same buffers: the parts, then the whole.
fn concat_cases(c: &ConcatUse) -> [OpCase; 2] {
    let rows = c.rows();
    let parts = c.widths.len();
    let buffers = || {
        let mut b = Buffers::default();
        for w in &c.widths {
            b.add(rows * w, Fill::Signed);
        }
        b.add(rows * c.widths.iter().sum::<usize>(), Fill::Signed);
        b
    };
    let all: Vec<usize> = (0..=parts).collect();
    let widths = c.widths.clone();
    let forward = OpCase::new("concat_fwd", c.key(), buffers(), &all, move |p| {
        concat::forward_plan::<f32>(&p[..parts], &widths, p[parts], rows)
    });
    let widths = c.widths.clone();
    let backward = OpCase::new("concat_bwd", c.key(), buffers(), &all, move |p| {
        concat::backward_plan::<f32>(p[parts], &p[..parts], &widths, rows)
    });
    [forward, backward]
}

/// Add, ReLU and ReLU's backward over an activation of `shape`.
fn elementwise_cases(shape: [usize; 4]) -> [OpCase; 3] {
    let n: usize = shape.iter().product();
    let key = activation_key(&shape);
    let operands = |count: usize| {
        let mut b = Buffers::default();
        let ids: Vec<usize> = (0..count).map(|_| b.add(n, Fill::Signed)).collect();
        (b, ids)
    };
    let (b, add) = operands(3);
    let add = OpCase::new("elementwise", format!("add/{key}"), b, &add, move |p| {
        elementwise::add_plan::<f32>(p[0], p[1], p[2], n)
    });
    let (b, relu) = operands(2);
    let relu = OpCase::new("elementwise", format!("relu/{key}"), b, &relu, move |p| {
        elementwise::relu_plan::<f32>(p[0], p[1], n)
    });
    let (b, relu_bwd) = operands(3);
    let relu_bwd = OpCase::new("elementwise", format!("relu_bwd/{key}"), b, &relu_bwd, move |p| {
        elementwise::relu_backward_plan::<f32>(p[0], p[1], p[2], n)
    });
    [add, relu, relu_bwd]
}

/// The mean cross-entropy of `batch` rows of logits, and its gradient.
fn loss_cases(batch: usize) -> [OpCase; 2] {
    let k = NUM_CLASSES;
    let key = format!("n{batch}_k{k}");
    let mut b = Buffers::default();
    let (logits, labels, loss) = (
        b.add(batch * k, Fill::Signed),
        b.add(batch, Fill::Labels),
        b.add(1, Fill::Signed),
    );
    let forward = OpCase::new(
        "loss",
        format!("cross_entropy/{key}"),
        b,
        &[logits, labels, loss],
        move |p| loss::cross_entropy_plan::<f32>(p[logits], p[labels], p[loss], batch, k),
    );
    let mut b = Buffers::default();
    let (logits, labels, dloss, dlogits) = (
        b.add(batch * k, Fill::Signed),
        b.add(batch, Fill::Labels),
        b.add(1, Fill::Signed),
        b.add(batch * k, Fill::Signed),
    );
    let moved = [logits, labels, dloss, dlogits];
    let backward = OpCase::new("loss", format!("cross_entropy_bwd/{key}"), b, &moved, move |p| {
        loss::cross_entropy_backward_plan::<f32>(p[logits], p[labels], p[dloss], p[dlogits], batch, k)
    });
    [forward, backward]
}

/// One update of `kind`'s optimiser over its flat parameter buffer (as
/// training lays it out), and the advance of its update count.
fn optimizer_case(kind: ModelKind) -> OpCase {
    let len = FlatLayout::of(&ModelState::<f32>::init(kind, 0).params).len();
    let config = OptimizerConfig::for_model(kind, STEP_WARMUP + STEP_ITERS);
    let (name, adam) = match config.kind {
        OptimizerKind::Sgd { .. } => ("sgd", false),
        OptimizerKind::Adam => ("adam", true),
        OptimizerKind::AdamW { .. } => ("adamw", true),
    };
    let mut b = Buffers::default();
    let (params, grads, mu) = (
        b.add(len, Fill::Signed),
        b.add(len, Fill::Signed),
        b.add(len, Fill::Signed),
    );
    let nu = adam.then(|| b.add(len, Fill::Positive));
    let count = b.add(1, Fill::Count);
    // Parameters, moments and count are updated in place: read and written.
    let moved: Vec<usize> = [params, params, grads, mu, mu, count, count]
        .into_iter()
        .chain(nu.into_iter().flat_map(|nu| [nu, nu]))
        .collect();
    OpCase::new("optimizer", format!("{kind}/{name}"), b, &moved, move |p| {
        let nu = nu.map_or(0, |i| p[i]);
        gpu_optim::step_plan::<f32>(&config, p[params], p[grads], p[mu], nu, p[count], 0, len)
    })
}

/// Every case of `benches/gpu_ops.rs` at `batch`, by group: batch norm at
/// every activation shape of the networks (residual + ReLU at the ResNet's,
/// where it runs), their pools and concatenations, add and ReLU at the
/// ResNets' activations (PreActResNet adds there), the loss, and each
/// network's optimiser.
pub fn op_cases(batch: usize) -> Vec<OpCase> {
    let resnets = [ModelKind::ResNet, ModelKind::PreActResNet];
    let batchnorm = activation_shapes(&ModelKind::ALL, batch)
        .into_iter()
        .map(|s| (s, false))
        .chain(
            activation_shapes(&[ModelKind::ResNet], batch)
                .into_iter()
                .map(|s| (s, true)),
        )
        .map(|(s, residual)| batchnorm_cases(s, residual));
    let mut cases = forwards_then_backwards(batchnorm);
    cases.extend(forwards_then_backwards(
        pool_shapes(&ModelKind::ALL, batch).into_iter().map(pool_cases),
    ));
    cases.extend(forwards_then_backwards(
        concat_shapes(&ModelKind::ALL, batch).iter().map(concat_cases),
    ));
    cases.extend(
        activation_shapes(&resnets, batch)
            .into_iter()
            .flat_map(elementwise_cases),
    );
    cases.extend(loss_cases(batch));
    cases.extend(ModelKind::ALL.map(optimizer_case));
    cases
}

/// The forward cases of a family, then its backward ones: one criterion
/// group each.
fn forwards_then_backwards(pairs: impl Iterator<Item = [OpCase; 2]>) -> Vec<OpCase> {
    let (forward, backward): (Vec<OpCase>, Vec<OpCase>) = pairs.map(|[f, b]| (f, b)).unzip();
    forward.into_iter().chain(backward).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pools_and_concats_are_the_networks() {
        // Each pool's output is what the next conv reads (found by running
        // the network), so the window and the kind of site are right.
        for kind in ModelKind::ALL {
            let pools = pool_shapes(&[kind], 1);
            let inputs: Vec<[usize; 4]> = conv_calls(kind).iter().map(|c| c.x_shape).collect();
            for p in &pools {
                let out = pool::PoolGeometry::new(&p.x_shape, &p.win).out_shape();
                assert!(inputs.contains(&out), "{kind}: {} gives {out:?}", p.key());
            }
            let expected = match kind {
                ModelKind::GoogleNet => 2,
                ModelKind::DenseNet => 3,
                _ => 0,
            };
            assert_eq!(pools.len(), expected, "{kind}: {pools:?}");
        }
        let keys: Vec<String> = pool_shapes(&ModelKind::ALL, 128).iter().map(PoolUse::key).collect();
        assert_eq!(keys[0], "max3x3s2/n128_h32_w32_c96");
        assert_eq!(keys[2], "avg2x2s2/n128_h32_w32_c64");

        // A concat's width is what the network's next conv reads: the next
        // block's or layer's (all but the last concat of each network).
        for kind in [ModelKind::GoogleNet, ModelKind::DenseNet] {
            let concats = concat_shapes(&[kind], 1);
            let channels: Vec<usize> = conv_calls(kind).iter().map(|c| c.x_shape[3]).collect();
            for c in &concats[..concats.len() - 1] {
                assert!(channels.contains(&c.widths.iter().sum()), "{kind}: {}", c.key());
            }
            // GoogleNet's eight blocks in six shapes; DenseNet's 24 layers all differ.
            assert_eq!(concats.len(), if kind == ModelKind::GoogleNet { 6 } else { 24 });
        }
        let googlenet = concat_shapes(&[ModelKind::GoogleNet], 128);
        assert_eq!(googlenet[0].key(), "n128_h32_w32_c16+32+8+8");
        assert_eq!(
            concat_shapes(&[ModelKind::DenseNet], 128)[0].key(),
            "n128_h32_w32_c32+16"
        );
        assert!(concat_shapes(&[ModelKind::ResNet], 128).is_empty());
    }

    #[test]
    fn every_op_case_launches_kernels_of_the_ptx() {
        let cases = op_cases(128);
        let mut ids = std::collections::HashSet::new();
        for case in &cases {
            assert!(
                ids.insert((case.group, case.id.clone())),
                "twice: {} {}",
                case.group,
                case.id
            );
            assert!(case.bytes > 0.0, "{}", case.id);
            let addresses: Vec<u64> = (1..=case.buffer_count() as u64).map(|i| i << 24).collect();
            let (setup, timed) = case.plans(&addresses);
            assert!(!timed.is_empty(), "{}", case.id);
            crate::cuda::launch::assert_plan_matches_ptx(&setup);
            crate::cuda::launch::assert_plan_matches_ptx(&timed);
        }
        // One run of each group, in order.
        let mut groups: Vec<&str> = cases.iter().map(|c| c.group).collect();
        groups.dedup();
        assert_eq!(
            groups,
            [
                "batchnorm_fwd",
                "batchnorm_bwd",
                "pool_fwd",
                "pool_bwd",
                "concat_fwd",
                "concat_bwd",
                "elementwise",
                "loss",
                "optimizer"
            ]
        );
        let id = |group: &str, id: &str| cases.iter().find(|c| c.group == group && c.id == id);
        // The residual + ReLU batch norm of a ResNet block: x, residual, y
        // and four per-channel vectors of 16.
        let residual = id("batchnorm_fwd", "n128_h32_w32_c16/residual_relu").unwrap();
        assert_eq!(residual.bytes, 4.0 * (3.0 * 131_072.0 * 16.0 + 4.0 * 16.0));
        // SGD reads parameters, gradients and momentum and writes two back,
        // and counts the update.
        let sgd = id("optimizer", "ResNet/sgd").unwrap();
        let len = FlatLayout::of(&ModelState::<f32>::init(ModelKind::ResNet, 0).params).len();
        assert_eq!(sgd.bytes, (5 * 4 * len + 2 * 8) as f64);
        assert!(id("optimizer", "GoogleNet/adamw").is_some());
        assert!(id("elementwise", "add/n128_h8_w8_c64").is_some());
        assert!(id("loss", "cross_entropy_bwd/n128_k10").is_some());
    }
}
