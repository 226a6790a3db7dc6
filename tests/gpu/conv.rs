//! CUDA convolution against the CPU reference (`ops::conv`), in f64, on
//! fresh random inputs at every distinct conv shape of the four networks at
//! batch 128, plus windows no network uses. Every GPU op runs twice and must
//! give the same bits. Outputs are poisoned (NaN) before each kernel writes
//! them.

use crate::harness::needing;
use cifar_kern::cuda::{conv, DeviceFloat, Gpu, GpuTensor};
use cifar_kern::float::Float;
use cifar_kern::layers::Math;
use cifar_kern::ops::{self, Window};
use cifar_kern::Tensor;
use libtest_mimic::Trial;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Norm-wise relative error allowed between a CUDA op and the CPU op in f64:
/// `util::PARITY`, 1e-10 (its comment says why). The conv sums are the
/// longest in the gpu_ tests: the weight and bias gradients add
/// 128 x 32 x 32 = 131,072 products (in chunks, then the chunks in double),
/// n x 2^-52 = 2.9e-11 apart at most in another order.
use crate::util::PARITY;
/// The same in f32, where both sides round differently over long sums.
const PARITY_F32: f64 = 1e-4;
const BATCH: usize = 128;

/// A conv of the networks: `hw` x `hw` x `c` input, `k` x `k` kernel to `o`
/// channels, SAME padding (Flax's default).
struct Case {
    net: &'static str,
    hw: usize,
    c: usize,
    o: usize,
    k: usize,
    stride: usize,
    bias: bool,
}

const fn case(net: &'static str, hw: usize, c: usize, o: usize, k: usize, stride: usize, bias: bool) -> Case {
    Case {
        net,
        hw,
        c,
        o,
        k,
        stride,
        bias,
    }
}

/// The distinct conv shapes of src/models/ (repeats left out).
const CASES: &[Case] = &[
    // ResNet and PreActResNet: stem, three groups (16, 32, 64 channels); the
    // first block of groups 2 and 3 has stride 2 (SAME: pad 0 before, 1
    // after) and a 1x1/2 shortcut, with bias in ResNet only.
    case("resnet stem", 32, 3, 16, 3, 1, false),
    case("resnet group 1", 32, 16, 16, 3, 1, false),
    case("resnet group 2 down", 32, 16, 32, 3, 2, false),
    case("resnet group 2", 16, 32, 32, 3, 1, false),
    case("resnet shortcut 2", 32, 16, 32, 1, 2, true),
    case("preact shortcut 2", 32, 16, 32, 1, 2, false),
    case("resnet group 3 down", 16, 32, 64, 3, 2, false),
    case("resnet group 3", 8, 64, 64, 3, 1, false),
    case("resnet shortcut 3", 16, 32, 64, 1, 2, true),
    // GoogleNet: stem, inception 1x1 branches and reduces, 3x3 and 5x5 at
    // 32x32 (64 or 96 channels in), 15x15 (96, 128 in) and 7x7 (128 in).
    case("googlenet stem", 32, 3, 64, 3, 1, false),
    case("googlenet 1x1 32", 32, 64, 16, 1, 1, false),
    case("googlenet 3x3 32", 32, 32, 48, 3, 1, false),
    case("googlenet 5x5 32", 32, 16, 12, 5, 1, false),
    case("googlenet 1x1 15", 15, 96, 32, 1, 1, false),
    case("googlenet 3x3 15", 15, 32, 48, 3, 1, false),
    case("googlenet 5x5 15", 15, 16, 24, 5, 1, false),
    case("googlenet 1x1 7", 7, 128, 48, 1, 1, false),
    case("googlenet 3x3 7", 7, 48, 64, 3, 1, false),
    case("googlenet 5x5 7", 7, 16, 16, 5, 1, false),
    // DenseNet: stem with bias; per block, 1x1 bottlenecks to 32 (widest
    // input shown) and 3x3 growth convs to 16; transitions halve channels.
    case("densenet stem", 32, 3, 32, 3, 1, true),
    case("densenet bottleneck 32", 32, 112, 32, 1, 1, false),
    case("densenet growth 32", 32, 32, 16, 3, 1, false),
    case("densenet transition 1", 32, 128, 64, 1, 1, false),
    case("densenet bottleneck 16", 16, 144, 32, 1, 1, false),
    case("densenet transition 2", 16, 160, 80, 1, 1, false),
    case("densenet growth 8", 8, 32, 16, 3, 1, false),
    case("densenet transition 3", 8, 176, 88, 1, 1, false),
    case("densenet bottleneck 4", 4, 168, 32, 1, 1, false),
    case("densenet growth 4", 4, 32, 16, 3, 1, false),
];

/// Windows no network uses: asymmetric padding, unequal strides, a
/// non-square kernel, VALID with a remainder, and more than 64 channels on
/// both sides (several GEMM tiles).
fn odd_windows() -> Vec<(&'static str, [usize; 4], [usize; 4], Window)> {
    let win = |size, stride, pad_lo, pad_hi| Window {
        size,
        stride,
        pad_lo,
        pad_hi,
    };
    vec![
        (
            "3x2 window, stride 2x1, padding 0/1 1/0",
            [3, 10, 12, 4],
            [3, 2, 4, 66],
            win([3, 2], [2, 1], [0, 1], [1, 0]),
        ),
        (
            "3x3/2 VALID on 11x11",
            [5, 11, 11, 2],
            [3, 3, 2, 3],
            Window::valid([3, 3], [2, 2]),
        ),
        (
            "5x5, pad 2, 70 -> 130 channels",
            [4, 9, 9, 70],
            [5, 5, 70, 130],
            win([5, 5], [1, 1], [2, 2], [2, 2]),
        ),
    ]
}

/// One convolution to check: its shapes, window and whether it has a bias.
pub struct Spec {
    pub name: String,
    pub x_shape: [usize; 4],
    pub w_shape: [usize; 4],
    pub win: Window,
    pub bias: bool,
}

/// Every case at batch 128, then every odd window (with a bias).
pub fn specs() -> Vec<Spec> {
    let cases = CASES.iter().map(|c| Spec {
        name: format!(
            "{} ({}x{}x{} -> {}, {}x{}/{})",
            c.net, c.hw, c.hw, c.c, c.o, c.k, c.k, c.stride
        ),
        x_shape: [BATCH, c.hw, c.hw, c.c],
        w_shape: [c.k, c.k, c.c, c.o],
        win: Window::same([c.k, c.k], [c.stride, c.stride], [c.hw, c.hw]),
        bias: c.bias,
    });
    let odd = odd_windows().into_iter().map(|(name, x_shape, w_shape, win)| Spec {
        name: name.to_string(),
        x_shape,
        w_shape,
        win,
        bias: true,
    });
    cases.chain(odd).collect()
}

pub struct Inputs<T> {
    pub x: Tensor<T>,
    pub w: Tensor<T>,
    pub b: Option<Tensor<T>>,
    pub dy: Tensor<T>,
    pub win: Window,
}

fn randn<T: Float>(shape: &[usize], rng: &mut ChaCha8Rng) -> Tensor<T> {
    Tensor::<f64>::randn(shape, 1.0, rng).cast()
}

/// Fresh random x, w, b and dy for `spec`.
pub fn inputs<T: Float>(spec: &Spec, rng: &mut ChaCha8Rng) -> Inputs<T> {
    let [n, h, w, _] = spec.x_shape;
    let [oh, ow] = spec.win.out_hw([h, w]);
    let o = spec.w_shape[3];
    Inputs {
        x: randn(&spec.x_shape, rng),
        w: randn(&spec.w_shape, rng),
        b: spec.bias.then(|| randn(&[o], rng)),
        dy: randn(&[n, oh, ow, o], rng),
        win: spec.win,
    }
}

/// Runs a GPU op twice, asserts both results have the same bits, and
/// returns one of them on the host.
pub fn twice<T: DeviceFloat>(gpu: &Gpu, what: &str, op: impl Fn() -> GpuTensor<T>) -> Tensor<T> {
    let (first, second) = (gpu.download(&op()), gpu.download(&op()));
    let bits = |t: &Tensor<T>| t.data().iter().map(|v| v.f64().to_bits()).collect::<Vec<_>>();
    assert!(bits(&first) == bits(&second), "{what}: two runs differ");
    first
}

fn assert_close<T: Float>(gpu: &Tensor<T>, cpu: &Tensor<T>, tolerance: f64, what: &str) {
    let err = gpu.rel_error(cpu, 1e-30);
    assert!(err <= tolerance, "{what}: relative error {err:e}, bound {tolerance:e}");
}

/// Checks `op`'s GPU output against the CPU's for every spec (in f64) or
/// for the strided, biased and odd windows (in f32: a check of the f32
/// instantiations, not of the indexing again).
fn check<T: DeviceFloat>(
    seed: u64,
    tolerance: f64,
    op: &str,
    gpu_op: impl Fn(&Gpu, &Inputs<T>) -> GpuTensor<T>,
    cpu_op: impl Fn(&Inputs<T>) -> Tensor<T>,
) {
    let gpu = crate::gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let all = T::NAME == "f64";
    for spec in specs().iter().filter(|s| all || s.bias || s.win.stride != [1, 1]) {
        let inputs = inputs::<T>(spec, &mut rng);
        let what = format!("{op}, {}, {}", T::NAME, spec.name);
        let on_gpu = twice(gpu, &what, || gpu_op(gpu, &inputs));
        assert_close(&on_gpu, &cpu_op(&inputs), tolerance, &what);
    }
}

fn forward<T: DeviceFloat>(seed: u64, tolerance: f64) {
    check::<T>(
        seed,
        tolerance,
        "forward",
        |gpu, i| {
            let b = i.b.as_ref().map(|b| gpu.upload(b));
            conv::forward(
                gpu,
                &gpu.upload(&i.x),
                &gpu.upload(&i.w),
                b.as_ref(),
                &i.win,
                Math::Fp32,
            )
        },
        |i| ops::conv::forward(&i.x, &i.w, i.b.as_ref(), &i.win),
    );
}

fn backward_data<T: DeviceFloat>(seed: u64, tolerance: f64) {
    check::<T>(
        seed,
        tolerance,
        "backward_data",
        |gpu, i| {
            conv::backward_data(
                gpu,
                &gpu.upload(&i.dy),
                i.x.shape(),
                &gpu.upload(&i.w),
                &i.win,
                Math::Fp32,
            )
        },
        |i| ops::conv::backward_data(&i.dy, i.x.shape(), &i.w, &i.win),
    );
}

fn backward_weight<T: DeviceFloat>(seed: u64, tolerance: f64) {
    check::<T>(
        seed,
        tolerance,
        "backward_weight",
        |gpu, i| {
            conv::backward_weight(
                gpu,
                &gpu.upload(&i.dy),
                &gpu.upload(&i.x),
                i.w.shape(),
                &i.win,
                Math::Fp32,
            )
        },
        |i| ops::conv::backward_weight(&i.dy, &i.x, i.w.shape(), &i.win),
    );
}

fn backward_bias<T: DeviceFloat>(seed: u64, tolerance: f64) {
    check::<T>(
        seed,
        tolerance,
        "backward_bias",
        |gpu, i| conv::backward_bias(gpu, &gpu.upload(&i.dy)),
        |i| ops::conv::backward_bias(&i.dy),
    );
}

fn gpu_conv_forward_matches_cpu() {
    forward::<f64>(1, PARITY);
}

fn gpu_conv_backward_data_matches_cpu() {
    backward_data::<f64>(2, PARITY);
}

fn gpu_conv_backward_weight_matches_cpu() {
    backward_weight::<f64>(3, PARITY);
}

fn gpu_conv_backward_bias_matches_cpu() {
    backward_bias::<f64>(4, PARITY);
}

/// The f32 kernels (the trainer's) against the CPU op in f32.
fn gpu_conv_f32_matches_cpu() {
    forward::<f32>(5, PARITY_F32);
    backward_data::<f32>(6, PARITY_F32);
    backward_weight::<f32>(7, PARITY_F32);
    backward_bias::<f32>(8, PARITY_F32);
}

/// The `gpu_` tests of this family, ignored without a usable GPU.
pub fn trials() -> Vec<Trial> {
    needing(
        "conv",
        &[&crate::GPU],
        tests![
            gpu_conv_forward_matches_cpu,
            gpu_conv_backward_data_matches_cpu,
            gpu_conv_backward_weight_matches_cpu,
            gpu_conv_backward_bias_matches_cpu,
            gpu_conv_f32_matches_cpu
        ],
    )
}
