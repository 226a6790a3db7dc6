//! DenseNet: a 3x3 stem conv with bias, four dense blocks of six layers
//! (growth 16, bottleneck 2 x 16) with a transition halving the channels and
//! the resolution after the first three, then BN ReLU, the mean over H,W and
//! a dense head. Convs are kaiming-initialised.

use super::{Ctx, Init};
use crate::autograd::Var;
use crate::float::Float;
use crate::layers::batchnorm::Epilogue;
use crate::ops::Window;

const LAYERS_PER_BLOCK: [usize; 4] = [6, 6, 6, 6];
const GROWTH: usize = 16;
const BOTTLENECK: usize = 2;

fn bn_relu<T: Float>(ctx: &mut Ctx<T>, x: &Var<T>) -> Var<T> {
    ctx.batch_norm(x, Epilogue::RELU)
}

/// BN ReLU 1x1 conv BN ReLU 3x3 conv; the input concatenated with the result.
fn dense_layer<T: Float>(ctx: &mut Ctx<T>, x: &Var<T>) -> Var<T> {
    let z = bn_relu(ctx, x);
    let z = ctx.conv(&z, BOTTLENECK * GROWTH, 1, 1, false, Init::Kaiming);
    let z = bn_relu(ctx, &z);
    let z = ctx.conv(&z, GROWTH, 3, 1, false, Init::Kaiming);
    ctx.tape().concat(&[x, &z])
}

/// BN ReLU 1x1 conv to `c` channels, 2x2/2 average pool.
fn transition<T: Float>(ctx: &mut Ctx<T>, x: &Var<T>, c: usize) -> Var<T> {
    let z = bn_relu(ctx, x);
    let z = ctx.conv(&z, c, 1, 1, false, Init::Kaiming);
    ctx.tape().avg_pool(&z, Window::valid([2, 2], [2, 2]))
}

pub fn forward<T: Float>(ctx: &mut Ctx<T>, x: &Var<T>) -> Var<T> {
    let mut c = GROWTH * BOTTLENECK;
    let mut x = ctx.conv(x, c, 3, 1, true, Init::Kaiming);
    for (i, &layers) in LAYERS_PER_BLOCK.iter().enumerate() {
        x = ctx.scope("DenseBlock", |ctx| {
            (0..layers).fold(x, |x, _| ctx.scope("DenseLayer", |ctx| dense_layer(ctx, &x)))
        });
        c += layers * GROWTH;
        if i + 1 < LAYERS_PER_BLOCK.len() {
            c /= 2;
            x = ctx.scope("TransitionLayer", |ctx| transition(ctx, &x, c));
        }
    }
    let x = bn_relu(ctx, &x);
    ctx.head(&x)
}
