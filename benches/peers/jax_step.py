#!/usr/bin/env python3
"""Times the tutorial's JAX ResNet training step, the peer our CUDA-graph step answers to.

Design
------
Tutorial 5 trains its networks in JAX/Flax: `train_step` is one `jax.jit` program (forward,
cross-entropy, backward, optimiser) that XLA compiles and fuses, so the host issues one call per
step, as our replayed CUDA graph does. peers.py compares us with eager PyTorch; this compares the
replayed step with what the tutorial itself runs. It is self-contained (jax, flax and optax; no
project files, no network access) and optional: where they do not import it says so in one line
and exits 0, so a run script may call it unconditionally.

The network and step are the tutorial's, re-created minimally (../shared/seed/tutorial5-jax.txt):
ResNet with blocks (3, 3, 3) and channels (16, 32, 64), post-activation blocks, bias-free 3x3
convs with the fan-out variance-scaling init, a 1x1 stride-2 shortcut with bias when subsampling,
Flax BatchNorm (its defaults: momentum 0.99, eps 1e-5) with its running statistics updated
by the step; optax's chain of clip(1.0), decayed weights 1e-4 and SGD lr 0.1 momentum 0.9 under
the tutorial's piecewise-constant schedule; mean softmax cross-entropy with integer labels. The
parameter count is asserted (272,378, as SPEC.md and peers.py).

Timing: batch 128 of random normal images and random labels already on the device, `--warmup`
untimed steps (the first compiles), then `--iters` steps, each timed on the host from the call
to `jax.block_until_ready` of the new state and loss; the median in ms. Host dispatch counts, as
in our `tf32_ms` (CUDA events around a step the host issues). `--precision` sets JAX's default
matmul/conv precision: `default` lets XLA use TF32 on the GPU (as our tf32), `highest` is exact
fp32 (as our fp32).
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

NUM_CLASSES = 10
EXPECTED_PARAMS = 272_378


def build(jnp, nn):
    """The tutorial's ResNet (post-activation blocks), as Flax modules."""
    resnet_kernel_init = nn.initializers.variance_scaling(2.0, mode="fan_out", distribution="normal")

    class ResNetBlock(nn.Module):
        c_out: int
        subsample: bool = False

        @nn.compact
        def __call__(self, x, train=True):
            stride = (2, 2) if self.subsample else (1, 1)
            z = nn.Conv(self.c_out, kernel_size=(3, 3), strides=stride, kernel_init=resnet_kernel_init,
                        use_bias=False)(x)
            z = nn.BatchNorm()(z, use_running_average=not train)
            z = nn.relu(z)
            z = nn.Conv(self.c_out, kernel_size=(3, 3), kernel_init=resnet_kernel_init, use_bias=False)(z)
            z = nn.BatchNorm()(z, use_running_average=not train)
            if self.subsample:
                x = nn.Conv(self.c_out, kernel_size=(1, 1), strides=(2, 2), kernel_init=resnet_kernel_init)(x)
            return nn.relu(z + x)

    class ResNet(nn.Module):
        num_blocks: tuple = (3, 3, 3)
        c_hidden: tuple = (16, 32, 64)

        @nn.compact
        def __call__(self, x, train=True):
            x = nn.Conv(self.c_hidden[0], kernel_size=(3, 3), kernel_init=resnet_kernel_init, use_bias=False)(x)
            x = nn.BatchNorm()(x, use_running_average=not train)
            x = nn.relu(x)
            for group, count in enumerate(self.num_blocks):
                for index in range(count):
                    x = ResNetBlock(self.c_hidden[group], subsample=index == 0 and group > 0)(x, train=train)
            x = jnp.mean(x, axis=(1, 2))
            return nn.Dense(NUM_CLASSES)(x)

    return ResNet()


def optimizer(optax, steps):
    """The tutorial's SGD for the ResNets: clip, weight decay, momentum, lr x0.1 at 60% and 85%."""
    schedule = optax.piecewise_constant_schedule(
        init_value=0.1, boundaries_and_scales={int(steps * 0.6): 0.1, int(steps * 0.85): 0.1})
    return optax.chain(optax.clip(1.0), optax.add_decayed_weights(1e-4),
                       optax.sgd(schedule, momentum=0.9))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps, the first compiles")
    parser.add_argument("--iters", type=int, default=50, help="timed steps; the median is reported")
    parser.add_argument("--precision", choices=["default", "highest"], default="default",
                        help="JAX's default matmul/conv precision (default: TF32 on the GPU)")
    parser.add_argument("--json", metavar="OUT", help="write the figures here (JSON)")
    args = parser.parse_args()

    try:
        import jax
        import jax.numpy as jnp
        import flax
        import flax.linen as nn
        import optax
        from flax.training import train_state
    except Exception as e:  # ImportError, or a jax whose GPU plugin fails to load
        print(f"jax: not installed ({type(e).__name__}: {e})")
        return 0
    jax.config.update("jax_default_matmul_precision", args.precision)

    class TrainState(train_state.TrainState):
        batch_stats: flax.core.FrozenDict

    model = build(jnp, nn)
    key_init, key_images, key_labels = jax.random.split(jax.random.PRNGKey(42), 3)
    images = jax.random.normal(key_images, (args.batch, 32, 32, 3), jnp.float32)
    labels = jax.random.randint(key_labels, (args.batch,), 0, NUM_CLASSES)
    variables = model.init(key_init, images, train=True)
    params = sum(leaf.size for leaf in jax.tree_util.tree_leaves(variables["params"]))
    assert params == EXPECTED_PARAMS, f"ResNet has {params} parameters, the tutorial's {EXPECTED_PARAMS}"
    state = TrainState.create(apply_fn=model.apply, params=variables["params"],
                              batch_stats=variables["batch_stats"],
                              tx=optimizer(optax, args.warmup + args.iters))

    @jax.jit
    def train_step(state, images, labels):
        def loss_fn(params):
            logits, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats},
                                             images, train=True, mutable=["batch_stats"])
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, updates
        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        state = state.apply_gradients(grads=grads, batch_stats=updates["batch_stats"])
        return state, loss

    for _ in range(args.warmup):
        state, loss = jax.block_until_ready(train_step(state, images, labels))
    times = []
    for _ in range(args.iters):
        start = time.perf_counter()
        state, loss = jax.block_until_ready(train_step(state, images, labels))
        times.append((time.perf_counter() - start) * 1e3)
    assert bool(jnp.isfinite(loss)), "training diverged: the timing would be meaningless"
    ms = statistics.median(times)

    device = jax.devices()[0]
    print(f"jax {jax.__version__} (flax {flax.__version__}, optax {optax.__version__}) on {device}: "
          f"ResNet train_step {ms:.3f} ms (median of {args.iters} after {args.warmup}, batch {args.batch}, "
          f"precision {args.precision})")
    if args.json:
        results = {"engine": "jax", "jax": jax.__version__, "flax": flax.__version__,
                   "optax": optax.__version__, "device": str(device), "platform": device.platform,
                   "batch": args.batch, "warmup": args.warmup, "iters": args.iters,
                   "precision": args.precision,
                   "networks": {"ResNet": {"train_step_ms": ms, "params": params}}}
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
