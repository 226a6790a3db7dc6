//! GoogleNet: a 3x3 stem, nine inception blocks with two 3x3/2 max-pools,
//! the mean over H,W and a dense head. Every conv is kaiming-initialised and
//! has no bias.
//!
//! The tutorial's "max" branch computes a 3x3/2 max-pool, throws it away and
//! applies its 1x1 conv to the block input. Its checkpoints were trained
//! that way, so that is what we compute (without the discarded pool).

use super::{Ctx, Init};
use crate::autograd::Var;
use crate::float::Float;
use crate::layers::batchnorm::Epilogue;
use crate::ops::Window;

/// (c_red 3x3, c_red 5x5, c_out 1x1, c_out 3x3, c_out 5x5, c_out max)
type Inception = (usize, usize, usize, usize, usize, usize);

/// The network body: an inception block, or a 3x3/2 VALID max-pool.
enum Stage {
    Block(Inception),
    MaxPool,
}

const STAGES: [Stage; 10] = [
    Stage::Block((32, 16, 16, 32, 8, 8)),
    Stage::Block((32, 16, 24, 48, 12, 12)),
    Stage::MaxPool, // 32x32 -> 15x15
    Stage::Block((32, 16, 24, 48, 12, 12)),
    Stage::Block((32, 16, 16, 48, 16, 16)),
    Stage::Block((32, 16, 16, 48, 16, 16)),
    Stage::Block((32, 16, 32, 48, 24, 24)),
    Stage::MaxPool, // 15x15 -> 7x7
    Stage::Block((48, 16, 32, 64, 16, 16)),
    Stage::Block((48, 16, 32, 64, 16, 16)),
];

fn conv_bn_relu<T: Float>(ctx: &mut Ctx<T>, x: &Var<T>, features: usize, k: usize) -> Var<T> {
    let z = ctx.conv(x, features, k, 1, false, Init::Kaiming);
    ctx.batch_norm(&z, Epilogue::RELU)
}

fn inception<T: Float>(ctx: &mut Ctx<T>, x: &Var<T>, (red3, red5, out1, out3, out5, out_max): Inception) -> Var<T> {
    let b1 = conv_bn_relu(ctx, x, out1, 1);
    let b3 = conv_bn_relu(ctx, x, red3, 1);
    let b3 = conv_bn_relu(ctx, &b3, out3, 3);
    let b5 = conv_bn_relu(ctx, x, red5, 1);
    let b5 = conv_bn_relu(ctx, &b5, out5, 5);
    let b_max = conv_bn_relu(ctx, x, out_max, 1);
    ctx.tape().concat(&[&b1, &b3, &b5, &b_max])
}

pub fn forward<T: Float>(ctx: &mut Ctx<T>, x: &Var<T>) -> Var<T> {
    let mut x = conv_bn_relu(ctx, x, 64, 3);
    for stage in &STAGES {
        x = match *stage {
            Stage::Block(spec) => ctx.scope("InceptionBlock", |ctx| inception(ctx, &x, spec)),
            Stage::MaxPool => ctx.tape().max_pool(&x, Window::valid([3, 3], [2, 2])),
        };
    }
    ctx.head(&x)
}
