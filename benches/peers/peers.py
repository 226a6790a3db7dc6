#!/usr/bin/env python3
"""Peer benchmark: how fast does PyTorch + cuDNN train the four cifar-kern networks?

Design
------
This script is self-contained: it needs only PyTorch, no project files and no network access,
so it can be copied to any GPU host and run there.

1. Networks. GoogleNet, ResNet, PreActResNet and DenseNet are rebuilt in PyTorch (NCHW) with the
   architecture of SPEC.md "Networks": same layers, channels, strides and bias flags, hence the
   same parameter counts (asserted). Flax's SAME padding is reproduced by `SameConv2d`: it pads
   symmetrically when it can and otherwise (stride-2 3x3 conv on an even input: 0 before, 1 after)
   pads explicitly with F.pad and runs the conv unpadded. GoogleNet keeps the tutorial's quirk:
   the "max" branch applies its 1x1 conv to the block input (the discarded max-pool is skipped).
   BatchNorm uses eps 1e-5 and momentum 0.01 (running = 0.99 * running + 0.01 * batch).
   Initialisers are PyTorch's defaults, not the SPEC's: they do not change the speed.
   (PyTorch's running variance uses the unbiased batch variance, Flax the biased one: speed only.)

2. Training step. One full step = forward, softmax cross-entropy, backward, element-wise gradient
   clip to [-1, 1], optimiser step (AdamW lr 1e-3 wd 1e-4 for GoogleNet and DenseNet; SGD lr 0.1
   momentum 0.9 wd 1e-4 for the ResNets), on random normal inputs and random labels. It is timed
   in four variants (see VARIANTS), each on a freshly built model and optimiser.

3. Convolutions. One forward pass per network records, through forward hooks on SameConv2d, the
   shape of every convolution; each distinct shape is then timed alone through cuDNN: forward,
   backward-data and backward-weight (torch.nn.grad.conv2d_input / conv2d_weight), in TF32 and in
   fp32 (cudnn.allow_tf32 on and off; `--conv-math` picks one). The input is prepared already
   padded where SAME is asymmetric, so only the convolution itself is timed. Per network and math
   the conv sum is sum over its shapes of count x (fwd + bwd_data + bwd_weight).

4. Timing. After `--warmup` untimed calls, each of `--iters` calls is bracketed by a pair of CUDA
   events and the median is reported in milliseconds. A training step is timed as eager PyTorch
   trains: host launch gaps between its kernels count. A single conv is timed on the GPU alone: a
   spin kernel holds the GPU while the host queues all timed calls, so PyTorch's per-call host
   overhead (tens of microseconds, comparable to a small conv) does not count. On `--device cpu`
   wall-clock time is used instead.

5. Comparison. `--ours PATH` reads our engine's figures (format in README.md / OURS_FORMAT below;
   `cifar-kern bench all --json PATH` writes them) and prints, next to each PyTorch figure, ours
   and the ratio PyTorch/ours (> 1: we are faster): per conv shape and math, per network the conv
   sums, and last the training steps. `--json OUT` writes every PyTorch figure:
   networks.<name>.<variant>_ms and params, convs.<shape key>.{fwd_ms, bwd_data_ms, bwd_weight_ms}
   (TF32) and {fwd_fp32_ms, bwd_data_fp32_ms, bwd_weight_fp32_ms} (fp32) and used_by,
   conv_sums.<name>.{tf32_ms, fp32_ms}, plus versions and settings.

Conv shape key: "n{batch}_h{height}_w{width}_c{in_channels}_o{out_channels}_k{kernel}_s{stride}",
with height and width those of the conv's input BEFORE padding, and padding always Flax SAME,
e.g. "n128_h32_w32_c16_o16_k3_s1".
"""

import argparse
import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_CLASSES = 10
IMAGE_SIZE = 32

OURS_FORMAT = """{"networks": {"ResNet": {"tf32_ms": 3.1, "fp32_ms": 4.2,
                         "conv_sum_tf32_ms": 1.2, "conv_sum_fp32_ms": 5.0}, ...},
 "convs": {"n128_h32_w32_c16_o16_k3_s1": {"fwd_ms": 0.05, "bwd_data_ms": 0.05, "bwd_weight_ms": 0.07,
           "fwd_fp32_ms": 0.2, "bwd_data_fp32_ms": 0.2, "bwd_weight_fp32_ms": 0.3}, ...}}
(fwd_ms etc.: TF32; *_fp32_ms: exact fp32; other keys are ignored)"""

# Conv directions and the key of each one's time in a math mode (TF32's keys carry no mode).
CONV_OPS = ("fwd", "bwd_data", "bwd_weight")
CONV_MATHS = ("tf32", "fp32")


def conv_key(op, math):
    return f"{op}_ms" if math == "tf32" else f"{op}_{math}_ms"


# ----------------------------------------------------------------------------------------------
# Networks (SPEC.md "Networks")
# ----------------------------------------------------------------------------------------------

def same_padding(size, kernel, stride):
    """Flax/XLA SAME padding of one spatial dimension: (before, after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Square conv with Flax SAME padding (square inputs); no bias unless asked for."""

    def __init__(self, c_in, c_out, kernel, stride=1, bias=False):
        super().__init__(c_in, c_out, kernel, stride=stride, padding=0, bias=bias)

    def forward(self, x):
        before, after = same_padding(x.shape[-1], self.kernel_size[0], self.stride[0])
        if before != after:
            x = F.pad(x, (before, after, before, after))
            before = 0
        return F.conv2d(x, self.weight, self.bias, self.stride, before)


def batch_norm(channels):
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.01)


def conv_bn_relu(c_in, c_out, kernel):
    return nn.Sequential(SameConv2d(c_in, c_out, kernel), batch_norm(c_out), nn.ReLU())


def bn_relu_conv(c_in, c_out, kernel, stride=1):
    return nn.Sequential(batch_norm(c_in), nn.ReLU(), SameConv2d(c_in, c_out, kernel, stride))


def classifier_head(channels):
    """Mean over H and W, then Dense(10)."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, NUM_CLASSES))


class InceptionBlock(nn.Module):
    """Branches 1x1, 3x3, 5x5, "max", concatenated on channels in that order."""

    def __init__(self, c_in, c_red, c_out):
        super().__init__()
        red_3x3, red_5x5 = c_red
        out_1x1, out_3x3, out_5x5, out_max = c_out
        self.branches = nn.ModuleList([
            conv_bn_relu(c_in, out_1x1, 1),
            nn.Sequential(conv_bn_relu(c_in, red_3x3, 1), conv_bn_relu(red_3x3, out_3x3, 3)),
            nn.Sequential(conv_bn_relu(c_in, red_5x5, 1), conv_bn_relu(red_5x5, out_5x5, 5)),
            # Tutorial quirk: its max-pool result is discarded, the 1x1 conv sees the block input.
            conv_bn_relu(c_in, out_max, 1),
        ])

    def forward(self, x):
        return torch.cat([branch(x) for branch in self.branches], dim=1)


# Inception blocks as ((c_red 3x3, 5x5), (c_out 1x1, 3x3, 5x5, max)), and the two max-pools.
GOOGLENET_LAYOUT = [
    ((32, 16), (16, 32, 8, 8)), ((32, 16), (24, 48, 12, 12)), "maxpool",
    ((32, 16), (24, 48, 12, 12)), ((32, 16), (16, 48, 16, 16)), ((32, 16), (16, 48, 16, 16)),
    ((32, 16), (32, 48, 24, 24)), "maxpool",
    ((48, 16), (32, 64, 16, 16)), ((48, 16), (32, 64, 16, 16)),
]


def googlenet():
    layers, channels = [conv_bn_relu(3, 64, 3)], 64
    for spec in GOOGLENET_LAYOUT:
        if spec == "maxpool":
            layers.append(nn.MaxPool2d(3, 2))  # VALID: 32 -> 15 -> 7
        else:
            c_red, c_out = spec
            layers.append(InceptionBlock(channels, c_red, c_out))
            channels = sum(c_out)
    return nn.Sequential(*layers, classifier_head(channels))


class ResidualBlock(nn.Module):
    """ResNet block (post-activation) or PreActResNet block; stride 2 when subsampling."""

    def __init__(self, c_in, c_out, subsample, preact):
        super().__init__()
        stride = 2 if subsample else 1
        if preact:
            self.residual = nn.Sequential(bn_relu_conv(c_in, c_out, 3, stride),
                                          bn_relu_conv(c_out, c_out, 3))
            shortcut = bn_relu_conv(c_in, c_out, 1, 2)
        else:
            self.residual = nn.Sequential(SameConv2d(c_in, c_out, 3, stride), batch_norm(c_out),
                                          nn.ReLU(),
                                          SameConv2d(c_out, c_out, 3), batch_norm(c_out))
            shortcut = SameConv2d(c_in, c_out, 1, 2, bias=True)
        self.shortcut = shortcut if subsample else nn.Identity()
        self.out_activation = nn.Identity() if preact else nn.ReLU()

    def forward(self, x):
        return self.out_activation(self.residual(x) + self.shortcut(x))


def resnet(preact):
    stem = [SameConv2d(3, 16, 3)] + ([] if preact else [batch_norm(16), nn.ReLU()])
    blocks, channels = [], 16
    for group, group_channels in enumerate((16, 32, 64)):
        for index in range(3):
            subsample = group > 0 and index == 0
            blocks.append(ResidualBlock(channels, group_channels, subsample, preact))
            channels = group_channels
    return nn.Sequential(*stem, *blocks, classifier_head(channels))


class DenseLayer(nn.Module):
    """BN ReLU conv1x1(bn_size * growth) BN ReLU conv3x3(growth); output = concat(input, new)."""

    def __init__(self, c_in, growth=16, bn_size=2):
        super().__init__()
        self.new_features = nn.Sequential(bn_relu_conv(c_in, bn_size * growth, 1),
                                          bn_relu_conv(bn_size * growth, growth, 3))

    def forward(self, x):
        return torch.cat([x, self.new_features(x)], dim=1)


def densenet(num_blocks=4, layers_per_block=6, growth=16):
    layers, channels = [SameConv2d(3, 32, 3, bias=True)], 32
    for block in range(num_blocks):
        for _ in range(layers_per_block):
            layers.append(DenseLayer(channels, growth))
            channels += growth
        if block < num_blocks - 1:  # transition: halve channels, then 2x2 average pool
            layers += [bn_relu_conv(channels, channels // 2, 1), nn.AvgPool2d(2, 2)]
            channels //= 2
    return nn.Sequential(*layers, batch_norm(channels), nn.ReLU(), classifier_head(channels))


def adamw(params):
    return torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4)


def sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)


@dataclass
class Network:
    build: callable
    optimizer: callable
    expected_params: int


NETWORKS = {
    "GoogleNet": Network(googlenet, adamw, 259_338),
    "ResNet": Network(lambda: resnet(preact=False), sgd, 272_378),
    "PreActResNet": Network(lambda: resnet(preact=True), sgd, 272_250),
    "DenseNet": Network(densenet, adamw, 239_146),
}


def count_params(model):
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------

# torch.cuda._sleep spin per queued call: ~100 us at 2 GHz, far more than a conv call's host cost.
SPIN_CYCLES_PER_CALL = 200_000


def median_ms(fn, device, warmup, iters, gpu_only=False):
    """Median time of one call of fn, in ms, after `warmup` untimed calls.

    gpu_only: first hold the GPU with a spin kernel long enough for the host to queue every timed
    call, so each event pair brackets GPU execution alone and not the host's launch overhead.
    """
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(iters)]
        if gpu_only:
            torch.cuda._sleep(SPIN_CYCLES_PER_CALL * iters)
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        times = [start.elapsed_time(end) for start, end in events]
    else:
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def set_cudnn(benchmark, tf32):
    torch.backends.cudnn.benchmark = benchmark
    torch.backends.cudnn.allow_tf32 = tf32


@dataclass
class Variant:
    name: str
    cudnn_benchmark: bool
    tf32: bool  # torch.backends.cudnn.allow_tf32 (PyTorch's default is True)
    channels_last_bf16: bool  # channels_last memory format + bf16 autocast
    ours_key: str  # which of our figures this variant is compared with


VARIANTS = [
    Variant("default", cudnn_benchmark=False, tf32=True, channels_last_bf16=False, ours_key="tf32_ms"),
    Variant("benchmark", cudnn_benchmark=True, tf32=True, channels_last_bf16=False, ours_key="tf32_ms"),
    Variant("cl_bf16", cudnn_benchmark=True, tf32=True, channels_last_bf16=True, ours_key="tf32_ms"),
    Variant("fp32", cudnn_benchmark=True, tf32=False, channels_last_bf16=False, ours_key="fp32_ms"),
]


def time_training_step(network, variant, batch, device, warmup, iters):
    set_cudnn(variant.cudnn_benchmark, variant.tf32)
    torch.manual_seed(42)
    memory_format = torch.channels_last if variant.channels_last_bf16 else torch.contiguous_format
    model = network.build().to(device, memory_format=memory_format).train()
    optimizer = network.optimizer(model.parameters())
    inputs = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, device=device)
    inputs = inputs.contiguous(memory_format=memory_format)
    labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)

    def train_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=variant.channels_last_bf16):
            loss = F.cross_entropy(model(inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_value_(model.parameters(), 1.0)
        optimizer.step()
        return loss

    ms = median_ms(train_step, device, warmup, iters)
    assert torch.isfinite(train_step()).item(), "training diverged: timings would be meaningless"
    return ms


@dataclass(frozen=True)
class ConvShape:
    batch: int
    size: int  # input height = width, before padding
    c_in: int
    c_out: int
    kernel: int
    stride: int

    def key(self):
        return (f"n{self.batch}_h{self.size}_w{self.size}_c{self.c_in}_o{self.c_out}"
                f"_k{self.kernel}_s{self.stride}")


def conv_shapes(model, inputs):
    """Counter of ConvShape -> number of convs of that shape in one forward pass."""
    shapes = Counter()

    def record(conv, args, _output):
        batch, c_in, height, width = args[0].shape
        assert height == width
        shapes[ConvShape(batch, height, c_in, conv.out_channels, conv.kernel_size[0],
                         conv.stride[0])] += 1

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, SameConv2d)]
    with torch.no_grad():
        model(inputs)
    for hook in hooks:
        hook.remove()
    return shapes


def time_conv(shape, device, warmup, iters, math="tf32"):
    """Forward, backward-data and backward-weight of one conv shape, in ms (no bias), keyed by
    conv_key(op, math); cuDNN must already be set to `math`."""
    before, after = same_padding(shape.size, shape.kernel, shape.stride)
    size, padding = (shape.size, before) if before == after else (shape.size + before + after, 0)
    fan_in = shape.c_in * shape.kernel ** 2
    inputs = torch.randn(shape.batch, shape.c_in, size, size, device=device)
    weight = torch.randn(shape.c_out, shape.c_in, shape.kernel, shape.kernel, device=device)
    weight *= (2 / fan_in) ** 0.5
    grad_out = torch.randn_like(F.conv2d(inputs, weight, stride=shape.stride, padding=padding))
    ops = {
        conv_key("fwd", math): lambda: F.conv2d(inputs, weight, stride=shape.stride, padding=padding),
        conv_key("bwd_data", math): lambda: torch.nn.grad.conv2d_input(
            inputs.shape, weight, grad_out, stride=shape.stride, padding=padding),
        conv_key("bwd_weight", math): lambda: torch.nn.grad.conv2d_weight(
            inputs, weight.shape, grad_out, stride=shape.stride, padding=padding),
    }
    return {name: median_ms(op, device, warmup, iters, gpu_only=True) for name, op in ops.items()}


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------

def print_table(headers, rows):
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    for row in [headers, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).rjust(w) if i else str(cell).ljust(w)
                        for i, (cell, w) in enumerate(zip(row, widths))))


def comparison_cells(theirs, ours, with_ours):
    """PyTorch's figure, then (with --ours) ours and the ratio, or dashes where ours is missing."""
    if not with_ours:
        return [f"{theirs:.3f}"]
    if ours is None:
        return [f"{theirs:.3f}", "-", "-"]
    return [f"{theirs:.3f}", f"{ours:.3f}", f"{theirs / ours:.2f}x"]


def conv_sums(convs):
    """{network: {math: sum over its shapes of count x (fwd + bwd_data + bwd_weight)}} from a
    "convs" table with used_by (PyTorch's); a math some shape lacks is left out."""
    sums = {}
    for conv in convs.values():
        for name, count in conv.get("used_by", {}).items():
            for math in CONV_MATHS:
                times = [conv.get(conv_key(op, math)) for op in CONV_OPS]
                net = sums.setdefault(name, {})
                if None in times:
                    net[math] = None
                elif net.get(math, 0.0) is not None:
                    net[math] = net.get(math, 0.0) + count * sum(times)
    return {name: {m: v for m, v in net.items() if v is not None} for name, net in sums.items()}


def ours_conv_sum(ours, name, math, used_shapes):
    """Our conv sum of network `name` in `math`: as our file gives it, else summed from our conv
    times over `used_shapes` ({shape key: count}), else None."""
    given = ours.get("networks", {}).get(name, {}).get(f"conv_sum_{math}_ms")
    if given is not None:
        return given
    total = 0.0
    for key, count in used_shapes.items():
        times = [ours.get("convs", {}).get(key, {}).get(conv_key(op, math)) for op in CONV_OPS]
        if None in times:
            return None
        total += count * sum(times)
    return total


def report(results, ours):
    """Conv table, conv sums, then the network table (the short summary) last."""
    with_ours = ours is not None
    ours = ours or {}
    sub = ["pytorch", "ours", "ratio"] if with_ours else ["pytorch"]
    maths = [m for m in CONV_MATHS
             if any(conv_key("fwd", m) in conv for conv in results["convs"].values())]

    ratio_note = "; ratio = pytorch / ours" if with_ours else ""
    print(f"\nConvolutions (cudnn.benchmark=True), median ms{ratio_note}; "
          f"used by = network:number of such convs")
    headers = ["conv shape", "math", "used by"] + [f"{op} {s}" for op in CONV_OPS for s in sub]
    rows = []
    for key, conv in results["convs"].items():
        ours_conv = ours.get("convs", {}).get(key, {})
        used_by = " ".join(f"{name}:{count}" for name, count in conv["used_by"].items())
        for math in maths:
            cells = [key, math, used_by]
            for op in CONV_OPS:
                theirs = conv.get(conv_key(op, math))
                if theirs is None:
                    cells += ["-"] * len(sub)
                else:
                    cells += comparison_cells(theirs, ours_conv.get(conv_key(op, math)), with_ours)
            rows.append(cells)
    print_table(headers, rows)

    sums = conv_sums(results["convs"])
    print("\nConv sums per network: sum over its conv shapes of count x (fwd + bwd_data + "
          f"bwd_weight), ms{'; cuDNN against ours' if with_ours else ''}{ratio_note}")
    headers = ["network"] + [f"{math} {s}" for math in maths for s in sub]
    rows = []
    for name in results["networks"]:
        used = {key: conv["used_by"][name] for key, conv in results["convs"].items()
                if name in conv["used_by"]}
        cells = [name]
        for math in maths:
            theirs = sums.get(name, {}).get(math)
            if theirs is None:
                cells += ["-"] * len(sub)
            else:
                cells += comparison_cells(theirs, ours_conv_sum(ours, name, math, used), with_ours)
        rows.append(cells)
    print_table(headers, rows)

    print(f"\nTraining step, batch {results['batch']}, median ms{ratio_note}")
    headers = ["network", "variant", "pytorch"] + (["ours", "ours figure", "ratio"] if with_ours else [])
    rows = []
    for name, net in results["networks"].items():
        ours_net = ours.get("networks", {}).get(name, {})
        for v in VARIANTS:
            cells = comparison_cells(net[f"{v.name}_ms"], ours_net.get(v.ours_key), with_ours)
            if with_ours:
                cells.insert(2, v.ours_key)
            rows.append([name, v.name, *cells])
    print_table(headers, rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="--ours file format:\n" + OURS_FORMAT)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: batch 8, 1 warm-up call, 2 timed calls")
    parser.add_argument("--batch", type=int, help="batch size (default 128, 8 with --quick)")
    parser.add_argument("--warmup", type=int, help="untimed calls before timing (default 20)")
    parser.add_argument("--iters", type=int, help="timed calls; the median is reported (default 100)")
    parser.add_argument("--models", default=",".join(NETWORKS),
                        help="comma-separated subset of " + ",".join(NETWORKS))
    parser.add_argument("--conv-math", choices=["tf32", "fp32", "both"], default="both",
                        help="conv table precision: cudnn.allow_tf32 on (PyTorch default), off, "
                             "or both (default)")
    parser.add_argument("--ours", metavar="PATH", help="our engine's timings (JSON), to compare")
    parser.add_argument("--json", metavar="OUT", help="write PyTorch's figures here (JSON)")
    args = parser.parse_args()

    device = torch.device(args.device)
    batch = args.batch or (8 if args.quick else 128)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 20)
    iters = args.iters or (2 if args.quick else 100)
    names = args.models.split(",")
    unknown = set(names) - set(NETWORKS)
    assert not unknown, f"unknown models {sorted(unknown)}; known: {list(NETWORKS)}"
    ours = json.loads(Path(args.ours).read_text()) if args.ours else None

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {device_name}; torch {torch.__version__}; CUDA {torch.version.cuda}; "
          f"cuDNN {torch.backends.cudnn.version()}")
    print(f"batch {batch}, {warmup} warm-up calls, median of {iters} timed calls; "
          f"cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32} (left at its default)")
    print("variants: " + "; ".join(
        f"{v.name}: cudnn.benchmark={v.cudnn_benchmark} cudnn.allow_tf32={v.tf32}"
        f"{' channels_last + bf16 autocast' if v.channels_last_bf16 else ''}" for v in VARIANTS))
    print("(cudnn.allow_tf32=True is PyTorch's default, so 'default' convolutions run in TF32)")

    results = {"device": device_name, "torch": torch.__version__, "cuda": torch.version.cuda,
               "cudnn": torch.backends.cudnn.version(), "batch": batch, "warmup": warmup,
               "iters": iters, "conv_math": args.conv_math, "networks": {}, "convs": {}}
    all_shapes = {}  # ConvShape -> {network name: count}
    for name in names:
        network = NETWORKS[name]
        model = network.build()
        params = count_params(model)
        print(f"{name}: {params:,} parameters (expected {network.expected_params:,})")
        assert params == network.expected_params, f"{name} has {params} parameters"
        for shape, count in conv_shapes(model, torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE)).items():
            all_shapes.setdefault(shape, {})[name] = count
        timings = {"params": params}
        for variant in VARIANTS:
            ms = time_training_step(network, variant, batch, device, warmup, iters)
            timings[f"{variant.name}_ms"] = ms
            print(f"  {variant.name}: {ms:.3f} ms/step", flush=True)
        results["networks"][name] = timings

    conv_maths = list(CONV_MATHS) if args.conv_math == "both" else [args.conv_math]
    print(f"timing {len(all_shapes)} distinct conv shapes in {', '.join(conv_maths)}", flush=True)
    def largest_input_first(shape):
        return -shape.size, shape.kernel, shape.stride, shape.c_in, shape.c_out

    for shape in sorted(all_shapes, key=largest_input_first):
        conv = {}
        for math in conv_maths:
            set_cudnn(benchmark=True, tf32=math == "tf32")
            conv.update(time_conv(shape, device, warmup, iters, math))
        results["convs"][shape.key()] = {**conv, "used_by": all_shapes[shape]}
    results["conv_sums"] = {name: {f"{m}_ms": v for m, v in net.items()}
                            for name, net in conv_sums(results["convs"]).items()}

    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    report(results, ours)


if __name__ == "__main__":
    main()
