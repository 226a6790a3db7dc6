//! ResNet and Pre-Activation ResNet: a 3x3 stem, three groups of three
//! blocks (16, 32, 64 channels; the first block of groups 2 and 3 halves
//! the resolution), the mean over H,W and a dense head. Convs use
//! variance_scaling(2, fan_out, normal).
//!
//! ResNet block: conv BN ReLU conv BN, plus the input (or a 1x1/2 conv with
//! bias of it), then ReLU. Every BN takes what follows it (ReLU, add) as
//! its epilogue, computed in the same pass. Pre-activation block: BN ReLU conv BN ReLU conv,
//! plus the input (or BN ReLU 1x1/2 conv without bias of it), no activation.

use super::{Ctx, Init};
use crate::autograd::Var;
use crate::float::Float;
use crate::layers::batchnorm::Epilogue;

const GROUPS: [usize; 3] = [16, 32, 64];
const BLOCKS_PER_GROUP: usize = 3;

fn block<T: Float>(ctx: &mut Ctx<T>, x: &Var<T>, c: usize, stride: usize) -> Var<T> {
    let z = ctx.conv(x, c, 3, stride, false, Init::ResNetFanOut);
    let z = ctx.batch_norm(&z, Epilogue::RELU);
    let z = ctx.conv(&z, c, 3, 1, false, Init::ResNetFanOut);
    // The shortcut first: the second batch norm adds it before its ReLU, in
    // one pass. (Parameter names and initial values do not depend on this
    // order: names count per layer type, and batch norms draw no randoms.)
    let shortcut = if stride == 1 {
        x.clone()
    } else {
        ctx.conv(x, c, 1, stride, true, Init::ResNetFanOut)
    };
    ctx.batch_norm(
        &z,
        Epilogue {
            residual: Some(&shortcut),
            relu: true,
        },
    )
}

fn preact_block<T: Float>(ctx: &mut Ctx<T>, x: &Var<T>, c: usize, stride: usize) -> Var<T> {
    let z = ctx.batch_norm(x, Epilogue::RELU);
    let z = ctx.conv(&z, c, 3, stride, false, Init::ResNetFanOut);
    let z = ctx.batch_norm(&z, Epilogue::RELU);
    let z = ctx.conv(&z, c, 3, 1, false, Init::ResNetFanOut);
    let shortcut = if stride == 1 {
        x.clone()
    } else {
        let s = ctx.batch_norm(x, Epilogue::RELU);
        ctx.conv(&s, c, 1, stride, false, Init::ResNetFanOut)
    };
    ctx.tape().add(&z, &shortcut)
}

pub fn forward<T: Float>(ctx: &mut Ctx<T>, x: &Var<T>, pre_activation: bool) -> Var<T> {
    let mut x = ctx.conv(x, GROUPS[0], 3, 1, false, Init::ResNetFanOut);
    if !pre_activation {
        x = ctx.batch_norm(&x, Epilogue::RELU);
    }
    for (group, &c) in GROUPS.iter().enumerate() {
        for i in 0..BLOCKS_PER_GROUP {
            let stride = if i == 0 && group > 0 { 2 } else { 1 };
            x = if pre_activation {
                ctx.scope("PreActResNetBlock", |ctx| preact_block(ctx, &x, c, stride))
            } else {
                ctx.scope("ResNetBlock", |ctx| block(ctx, &x, c, stride))
            };
        }
    }
    ctx.head(&x)
}
