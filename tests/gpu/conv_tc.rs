//! The tensor-core convolution (kernels/conv_tc.cu) on the GPU:
//! - against the CPU op in f64 on the unrounded operands, element by
//!   element within the TF32 bound of `tests/emu/tf32.rs`
//!   (((1 + 2^-11)^2 - 1 + (n + 1) 2^-24) x sum of |products|, n the
//!   reduction length), at every conv shape of the four networks at batch
//!   128 and the odd windows of `conv.rs`, with the variant the table or
//!   heuristic picks, twice with the same bits;
//! - every tile forced, in both copy widths, with the weight gradient in
//!   one chunk and in several;
//! - against its CPU emulation on small integers (exact in fp32 whatever
//!   the order): the same bits, so a misread fragment, ldmatrix row or
//!   cp.async zero-fill on the hardware shows.

use crate::conv::{inputs, specs, twice, Inputs, Spec};
use crate::harness::needing;
use crate::memory::Emu;
use crate::tf32::reference;
use cifar_kern::backend::Backend;
use cifar_kern::cuda::conv::{
    self, kernel_for, tc_backward_data_plan, tc_backward_weight_plan, tc_forward_plan, tc_weight_workspace_len,
    ConvKernel, ConvShape,
};
use cifar_kern::cuda::conv_tiles::{Direction, Variant, TILES};
use cifar_kern::cuda::Gpu;
use cifar_kern::layers::{Math, Window};
use cifar_kern::models::{ModelKind, ModelState};
use cifar_kern::ops;
use cifar_kern::optim::OptimizerConfig;
use cifar_kern::train::TrainOptimizer;
use cifar_kern::Tensor;
use libtest_mimic::Trial;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Runs direction `dir` of `spec` on the GPU by `kernel` (twice, same bits)
/// and checks it against the CPU in f64.
fn check_direction(gpu: &Gpu, spec: &Spec, i: &Inputs<f32>, dir: Direction, kernel: ConvKernel) {
    let s = ConvShape::new(&spec.x_shape, &spec.w_shape, &spec.win);
    let what = format!("{}, {}, {kernel:?}", dir.name(), spec.name);
    let win = spec.win;
    let (_, _, n) = dir.gemm(&s);
    let result = match dir {
        Direction::Forward => {
            let got = twice(gpu, &what, || {
                let b = i.b.as_ref().map(|b| gpu.upload(b));
                conv::forward_with(gpu, &gpu.upload(&i.x), &gpu.upload(&i.w), b.as_ref(), &win, kernel)
            });
            let r = reference(|x, w| ops::conv::forward(x, w, None, &win), &i.x, &i.w, n, false);
            let r = match &i.b {
                Some(b) => r.plus_bias(b),
                None => r,
            };
            r.check(&got, &what)
        }
        Direction::BackwardData => {
            let got = twice(gpu, &what, || {
                conv::backward_data_with(gpu, &gpu.upload(&i.dy), &spec.x_shape, &gpu.upload(&i.w), &win, kernel)
            });
            reference(
                |dy, w| ops::conv::backward_data(dy, &spec.x_shape, w, &win),
                &i.dy,
                &i.w,
                n,
                false,
            )
            .check(&got, &what)
        }
        Direction::BackwardWeight => {
            let got = twice(gpu, &what, || {
                let dw = gpu.alloc::<f32>(&spec.w_shape);
                conv::backward_weight_with(gpu, &gpu.upload(&i.dy), &gpu.upload(&i.x), &dw, &win, kernel);
                dw
            });
            // Plus one addition per chunk of partials.
            let chunks = match kernel {
                ConvKernel::TensorCore(v) => v.splits,
                ConvKernel::Simt => 1,
            };
            reference(
                |dy, x| ops::conv::backward_weight(dy, x, &spec.w_shape, &win),
                &i.dy,
                &i.x,
                n + chunks,
                false,
            )
            .check(&got, &what)
        }
    };
    result.unwrap_or_else(|e| panic!("{e}"));
}

/// Every network shape and odd window, every direction, the variant the
/// trainer would use.
fn gpu_conv_tc_matches_cpu() {
    let gpu = crate::gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for spec in specs() {
        let i = inputs::<f32>(&spec, &mut rng);
        let s = ConvShape::new(&spec.x_shape, &spec.w_shape, &spec.win);
        for dir in Direction::ALL {
            let kernel = kernel_for::<f32>(gpu, Math::Tf32, dir, &s);
            assert!(
                matches!(kernel, ConvKernel::TensorCore(_)),
                "tf32 in f32 runs the tensor cores"
            );
            check_direction(gpu, &spec, &i, dir, kernel);
        }
    }
}

/// Every tile forced on a strided 16 -> 32 channel conv (16-byte copies)
/// and on the 3-channel stem and an odd window with 3 output channels
/// (4-byte copies); the weight gradient in 1 and 24 chunks.
fn gpu_conv_tc_every_variant() {
    let gpu = crate::gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    let chosen: Vec<Spec> = specs()
        .into_iter()
        .filter(|s| {
            s.name.starts_with("resnet group 2 down")
                || s.name.starts_with("resnet stem")
                || s.name.starts_with("3x3/2 VALID")
        })
        .collect();
    assert_eq!(chosen.len(), 3, "the specs this test picks exist");
    for spec in &chosen {
        let i = inputs::<f32>(spec, &mut rng);
        for tile in TILES {
            for dir in Direction::ALL {
                let splits: &[usize] = if dir == Direction::BackwardWeight {
                    &[1, 24]
                } else {
                    &[1]
                };
                for &splits in splits {
                    check_direction(gpu, spec, &i, dir, ConvKernel::TensorCore(Variant { tile, splits }));
                }
            }
        }
    }
}

/// The plans of every tile and copy width on the GPU and in the emulator,
/// on small integers: bit for bit.
fn gpu_conv_tc_matches_the_emulation() {
    let gpu = crate::gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let same = |k: usize, s: usize, hw: usize| Window::same([k, k], [s, s], [hw, hw]);
    // 16-byte copies (channels multiples of 4), then 4-byte copies.
    let cases = [
        ([2, 10, 10, 8], [3, 3, 8, 12], same(3, 2, 10)),
        ([2, 9, 9, 3], [3, 3, 3, 7], same(3, 1, 9)),
    ];
    for (x_shape, w_shape, win) in cases {
        let s = ConvShape::new(&x_shape, &w_shape, &win);
        let mut ints = |shape: &[usize]| {
            let n = shape.iter().product();
            Tensor::new(shape, (0..n).map(|_| rng.random_range(-4..=4) as f32).collect())
        };
        let (x, w, b, dy) = (ints(&x_shape), ints(&w_shape), ints(&[w_shape[3]]), ints(&s.y_shape()));
        for tile in TILES {
            let (one, split) = (Variant { tile, splits: 1 }, Variant { tile, splits: 2 });
            let ws = tc_weight_workspace_len(&s, &split);
            // The three plans over addresses of x, w, b, dy, y, dx, dw and the workspace.
            let plans = |p: [u64; 8]| {
                [
                    tc_forward_plan(p[0], p[1], p[2], p[4], &s, &one),
                    tc_backward_data_plan(p[3], p[1], p[5], &s, &one),
                    tc_backward_weight_plan(p[3], p[0], p[7], p[6], &s, &split),
                ]
            };
            let shapes = [s.y_shape().to_vec(), x_shape.to_vec(), w_shape.to_vec()];

            let (gx, gw, gb, gdy) = (gpu.upload(&x), gpu.upload(&w), gpu.upload(&b), gpu.upload(&dy));
            let outs: Vec<Tensor<f32>> = shapes.iter().map(|sh| gpu.alloc::<f32>(sh)).collect();
            let work = gpu.alloc::<f32>(&[ws]);
            let gp = [&gx, &gw, &gb, &gdy, &outs[0], &outs[1], &outs[2], &work].map(|t| gpu.ptr(t));
            for plan in plans(gp) {
                // SAFETY: every buffer has the size the plans assume for s.
                unsafe { gpu.run(&plan) };
            }

            let mut emu = Emu::default();
            let ins = [
                emu.upload(&x, "x"),
                emu.upload(&w, "w"),
                emu.upload(&b, "b"),
                emu.upload(&dy, "dy"),
            ];
            let eo: Vec<u64> = shapes
                .iter()
                .map(|sh| emu.alloc::<f32>(sh.iter().product(), "out"))
                .collect();
            let ew = emu.alloc::<f32>(ws, "partials");
            for plan in plans([ins[0], ins[1], ins[2], ins[3], eo[0], eo[1], eo[2], ew]) {
                emu.run(&plan, 1).expect("the emulated conv runs");
            }
            for (k, dir) in Direction::ALL.into_iter().enumerate() {
                let on_gpu = gpu.download(&outs[k]);
                let emulated = emu.download::<f32>(eo[k], &shapes[k]);
                let first = (0..on_gpu.numel()).find(|&e| on_gpu.data()[e].to_bits() != emulated.data()[e].to_bits());
                if let Some(e) = first {
                    panic!(
                        "{} of {x_shape:?} * {w_shape:?} in {tile}: element {e} is {} on the GPU, {} emulated",
                        dir.name(),
                        on_gpu.data()[e],
                        emulated.data()[e]
                    );
                }
            }
        }
    }
}

/// The trainer's conv weights, views of the flat parameter buffer, are
/// 16-byte aligned, so its convs (all but the 3-channel stems) run the
/// 16-byte-copy kernels.
fn gpu_trainer_conv_weights_are_16_byte_aligned() {
    let gpu = crate::gpu();
    let backend = Backend::Gpu(gpu);
    for kind in ModelKind::ALL {
        let mut state = ModelState::<f32>::init(kind, 0).map(|t| backend.place(t.clone()));
        let _optimizer = TrainOptimizer::new(backend, OptimizerConfig::for_model(kind, 10), &mut state.params);
        for (name, w) in state.params.iter().filter(|(_, t)| t.shape().len() == 4) {
            assert_eq!(gpu.ptr(w) % 16, 0, "{kind} {name} sits at {:#x}", gpu.ptr(w));
        }
    }
}

/// The `gpu_` tests of this family, ignored without a usable GPU.
pub fn trials() -> Vec<Trial> {
    needing(
        "conv_tc",
        &[&crate::GPU],
        tests![
            gpu_conv_tc_matches_cpu,
            gpu_conv_tc_every_variant,
            gpu_conv_tc_matches_the_emulation,
            gpu_trainer_conv_weights_are_16_byte_aligned
        ],
    )
}
