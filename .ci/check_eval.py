"""Checks `cifar-kern eval --json` output against the tutorial's published
accuracies, within one image per split (SPEC: summation order may flip an
image whose top-2 logits nearly tie).

usage: check_eval.py MODEL < eval-output.json (test accuracy checked when present)
"""
import json
import sys

TUTORIAL = {  # (validation %, test %)
    "GoogleNet": (90.22, 89.11),
    "ResNet": (91.84, 91.00),
    "PreActResNet": (91.76, 90.65),
    "DenseNet": (90.62, 90.43),
}
model = sys.argv[1]
lines = sys.stdin.read().splitlines()
assert len(lines) == 1, f"--json must print exactly one line, got {lines}"
got = json.loads(lines[0])
val, test = TUTORIAL[model]
assert abs(got["val_accuracy"] * 5000 - val * 50) <= 1, (model, got)
report = f"{model}: val {100 * got['val_accuracy']:.2f}% (tutorial {val}%)"
if "test_accuracy" in got:  # absent with --split val
    assert abs(got["test_accuracy"] * 10000 - test * 100) <= 1, (model, got)
    report += f", test {100 * got['test_accuracy']:.2f}% (tutorial {test}%)"
print(report)
