#!/usr/bin/env python3
"""Checks peers.py without PyTorch or a GPU: its report and its reading of our figures.

peers.py imports torch at its top; here a shape-only stand-in for torch (tensors that carry only
their shape, layers that compute only output shapes and parameter counts) is put in its place,
so that peers.py's own network code runs and its conv hook records its conv list. This checks:

- the networks' parameter counts (the SPEC's) through the stand-in, so the stand-in is faithful;
- `--conv-shapes`: prints every network's conv list at a batch (what `conv_shapes()` records),
  the list src/models/conv_shapes.rs's test holds our networks' convs to;
- the report: a small PyTorch result set and an "ours" file in the README's format are printed
  side by side, and the figures (ratios, conv sums) are checked.

    python3 benches/peers/check_report.py                 # the checks; prints "N passed, 0 failed"
    python3 benches/peers/check_report.py --conv-shapes 128
"""

import importlib.util
import io
import sys
import types
from contextlib import redirect_stdout
from pathlib import Path


# ----------------------------------------------------------------------------------------------
# A shape-only torch
# ----------------------------------------------------------------------------------------------

class Shape:
    """A tensor that is only a shape (NCHW or [N, F])."""

    def __init__(self, *shape):
        self.shape = tuple(shape)

    def __add__(self, other):
        assert self.shape == other.shape, (self.shape, other.shape)
        return self

    def numel(self):
        n = 1
        for d in self.shape:
            n *= d
        return n


class Module:
    def __init__(self, *args, **kwargs):
        self._hooks = []

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)

    def children(self):
        for value in vars(self).values():
            if isinstance(value, Module):
                yield value

    def modules(self):
        yield self
        for child in self.children():
            yield from child.modules()

    def parameters(self):
        for m in self.modules():
            yield from getattr(m, "_params", [])

    def register_forward_hook(self, fn):
        self._hooks.append(fn)
        hooks = self._hooks
        return types.SimpleNamespace(remove=lambda: hooks.remove(fn))

    def __call__(self, *args):
        out = self.forward(*args)
        for hook in list(self._hooks):
            hook(self, args, out)
        return out

    def to(self, *args, **kwargs):
        return self

    def train(self, mode=True):
        return self


class Conv2d(Module):
    def __init__(self, c_in, c_out, kernel, stride=1, padding=0, bias=True):
        super().__init__()
        self.in_channels, self.out_channels = c_in, c_out
        self.kernel_size, self.stride, self.padding = (kernel, kernel), (stride, stride), padding
        self.weight = Shape(c_out, c_in, kernel, kernel)
        self.bias = Shape(c_out) if bias else None
        self._params = [self.weight] + ([self.bias] if bias else [])

    def forward(self, x):
        return conv2d(x, self.weight, self.bias, self.stride, self.padding)


def conv2d(x, weight, bias=None, stride=1, padding=0):
    n, _, h, w = x.shape
    k = weight.shape[-1]
    stride = stride[0] if isinstance(stride, tuple) else stride
    out = lambda size: (size + 2 * padding - k) // stride + 1
    return Shape(n, weight.shape[0], out(h), out(w))


def pad(x, pads):
    left, right, top, bottom = pads
    n, c, h, w = x.shape
    return Shape(n, c, h + top + bottom, w + left + right)


class BatchNorm2d(Module):
    def __init__(self, channels, eps=1e-5, momentum=0.1):
        super().__init__()
        self._params = [Shape(channels), Shape(channels)]

    def forward(self, x):
        return x


class Identity(Module):
    def forward(self, x):
        return x


class ReLU(Identity):
    pass


class Pool(Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.k, self.s = kernel, stride

    def forward(self, x):
        n, c, h, w = x.shape
        return Shape(n, c, (h - self.k) // self.s + 1, (w - self.k) // self.s + 1)


class AdaptiveAvgPool2d(Module):
    def forward(self, x):
        return Shape(*x.shape[:2], 1, 1)


class Flatten(Module):
    def forward(self, x):
        return Shape(x.shape[0], x.numel() // x.shape[0])


class Linear(Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self._params = [Shape(c_out, c_in), Shape(c_out)]
        self.c_out = c_out

    def forward(self, x):
        return Shape(x.shape[0], self.c_out)


class Sequential(Module):
    def __init__(self, *layers):
        super().__init__()
        self.layers = list(layers)

    def children(self):
        yield from self.layers

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class ModuleList(Sequential):
    def __init__(self, layers):
        super().__init__(*layers)

    def __iter__(self):
        return iter(self.layers)


class NoGrad:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def cat(parts, dim):
    assert dim == 1
    n, _, h, w = parts[0].shape
    return Shape(n, sum(p.shape[1] for p in parts), h, w)


def install_fake_torch():
    torch = types.ModuleType("torch")
    nn = types.ModuleType("torch.nn")
    functional = types.ModuleType("torch.nn.functional")
    for name, value in dict(Module=Module, Conv2d=Conv2d, BatchNorm2d=BatchNorm2d, ReLU=ReLU,
                            Identity=Identity, MaxPool2d=Pool, AvgPool2d=Pool,
                            AdaptiveAvgPool2d=AdaptiveAvgPool2d, Flatten=Flatten, Linear=Linear,
                            Sequential=Sequential, ModuleList=ModuleList).items():
        setattr(nn, name, value)
    functional.conv2d, functional.pad = conv2d, pad
    nn.functional = functional
    torch.nn = nn
    torch.cat = cat
    torch.no_grad = NoGrad
    torch.randn = lambda *shape, **kwargs: Shape(*shape)
    sys.modules.update({"torch": torch, "torch.nn": nn, "torch.nn.functional": functional})


def load_peers():
    install_fake_torch()
    path = Path(__file__).with_name("peers.py")
    spec = importlib.util.spec_from_file_location("peers", path)
    peers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peers)
    return peers


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------

def conv_lists(peers, batch):
    """{network: [(key, count)]} as peers.py's conv hook records them."""
    lists = {}
    for name, network in peers.NETWORKS.items():
        shapes = peers.conv_shapes(network.build(), Shape(batch, 3, 32, 32))
        lists[name] = [(shape.key(), count) for shape, count in shapes.items()]
    return lists


CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


@check
def parameter_counts_match_the_spec(peers):
    for name, network in peers.NETWORKS.items():
        assert peers.count_params(network.build()) == network.expected_params, name


@check
def resnet_conv_list(peers):
    resnet = dict(conv_lists(peers, 128)["ResNet"])
    assert len(resnet) == 8 and sum(resnet.values()) == 21, resnet
    assert resnet["n128_h8_w8_c64_o64_k3_s1"] == 5


def sample_results():
    """PyTorch's figures for two convs of ResNet, in peers.py's --json layout."""
    conv = lambda tf32, fp32, used: {"fwd_ms": tf32, "bwd_data_ms": tf32, "bwd_weight_ms": tf32,
                                     "fwd_fp32_ms": fp32, "bwd_data_fp32_ms": fp32,
                                     "bwd_weight_fp32_ms": fp32, "used_by": used}
    return {
        "batch": 128, "conv_math": "both",
        "networks": {"ResNet": {"params": 272378, "default_ms": 4.0, "benchmark_ms": 3.0,
                                "cl_bf16_ms": 2.0, "fp32_ms": 6.0}},
        "convs": {"n128_h32_w32_c16_o16_k3_s1": conv(0.1, 0.3, {"ResNet": 6}),
                  "n128_h8_w8_c64_o64_k3_s1": conv(0.02, 0.05, {"ResNet": 5})},
    }


def sample_ours():
    """Our figures as `cifar-kern bench all --json` writes them (README "Our figures"), with the
    step's graph and eager figures, which peers.py does not compare."""
    counts = lambda launches: {"kernel_launches": launches, "device_allocations": 0,
                               "device_copies": 0, "host_copies": 0, "host_syncs": 0}
    return {
        "batch": 128, "step_graphs": True,
        "networks": {"ResNet": {"tf32_ms": 2.0, "fp32_ms": 8.0, "eval_tf32_ms": 1.0,
                                "eval_fp32_ms": 2.0, "conv_sum_tf32_ms": 1.0,
                                "conv_sum_fp32_ms": 4.0, "conv_ratio": 4.0,
                                "per_step_tf32": counts(1), "graph_tf32_ms": 2.0,
                                "eager_tf32_ms": 3.5, "per_step_eager_tf32": counts(212),
                                "kernel_sum_tf32_ms": 1.9, "graph_over_kernels_tf32": 1.053,
                                "graph_target_met_tf32": True}},
        "convs": {"n128_h32_w32_c16_o16_k3_s1": {"fwd_ms": 0.05, "bwd_data_ms": 0.05,
                                                 "bwd_weight_ms": 0.05, "fwd_fp32_ms": 0.2,
                                                 "bwd_data_fp32_ms": 0.2,
                                                 "bwd_weight_fp32_ms": 0.2}},
    }


@check
def conv_sums_add_count_times_three_directions(peers):
    sums = peers.conv_sums(sample_results()["convs"])
    # ResNet: 6 x 3 x 0.1 + 5 x 3 x 0.02 in tf32, 6 x 3 x 0.3 + 5 x 3 x 0.05 in fp32.
    assert abs(sums["ResNet"]["tf32"] - 2.1) < 1e-9, sums
    assert abs(sums["ResNet"]["fp32"] - 6.15) < 1e-9, sums


@check
def report_prints_ours_beside_pytorch(peers):
    out = io.StringIO()
    with redirect_stdout(out):
        peers.report(sample_results(), sample_ours())
    text = out.getvalue()
    lines = text.splitlines()
    # The step table: benchmark 3.0 ms against our tf32 2.0 ms is 1.50x; fp32 6.0 vs 8.0 0.75x.
    step = next(l for l in lines if l.startswith("ResNet") and " benchmark " in l)
    assert "2.000" in step and "1.50x" in step, step
    assert "3.500" not in step, "the step as trained is compared, not the eager one: " + step
    step = next(l for l in lines if l.startswith("ResNet") and " fp32 " in l)
    assert "8.000" in step and "0.75x" in step, step
    # A conv of both: tf32 fwd 0.1 vs 0.05 = 2.00x, fp32 fwd 0.3 vs 0.2 = 1.50x.
    conv = [l for l in lines if l.startswith("n128_h32_w32_c16_o16_k3_s1")]
    assert len(conv) == 2 and "2.00x" in conv[0] and "1.50x" in conv[1], conv
    # A conv of PyTorch's only: dashes where ours is missing.
    other = next(l for l in lines if l.startswith("n128_h8_w8_c64_o64_k3_s1"))
    assert " - " in other, other
    # Conv sums per network: cuDNN's 2.1 ms (tf32) against our 1.0 ms: 2.10x.
    sums = next(l for l in lines if l.startswith("ResNet") and "2.100" in l)
    assert "1.000" in sums and "2.10x" in sums, sums
    assert text.rstrip().splitlines()[-1].startswith("ResNet"), "the network table comes last"


@check
def report_without_ours_prints_pytorch_only(peers):
    out = io.StringIO()
    with redirect_stdout(out):
        peers.report(sample_results(), None)
    assert "ours" not in out.getvalue()


def main():
    peers = load_peers()
    if sys.argv[1:2] == ["--conv-shapes"]:
        batch = int(sys.argv[2]) if len(sys.argv) > 2 else 128
        for name, shapes in conv_lists(peers, batch).items():
            print(f"{name}: {len(shapes)} distinct, {sum(n for _, n in shapes)} convs")
            for key, count in shapes:
                print(f"    {key} {count}")
        return
    passed = failed = 0
    for fn in CHECKS:
        try:
            fn(peers)
            passed += 1
            print(f"ok     {fn.__name__}")
        except Exception as e:  # report every check, then fail
            failed += 1
            print(f"FAILED {fn.__name__}: {type(e).__name__}: {e}")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
