"""Checks a finished `cifar-kern train` run folder the way a user would look
at it: metrics.jsonl, results.json, and the TensorBoard event file read back by
the `tensorboard` package itself.

usage: check_run.py RUN_DIR MIN_LAST_TRAIN_ACC
"""
import json
import pathlib
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

run = pathlib.Path(sys.argv[1])
min_train_acc = float(sys.argv[2])

epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
last = epochs[-1]
assert last["train_acc"] >= min_train_acc, f"last-epoch training accuracy {last['train_acc']} < {min_train_acc}"
results = json.loads((run / "results.json").read_text())
assert 0.0 <= results["val_accuracy"] <= 1.0 and 0.0 <= results["test_accuracy"] <= 1.0, results
assert (run / "best.safetensors").is_file() and (run / "last.safetensors").is_file()

events = EventAccumulator(str(run))
events.Reload()
tags = set(events.Tags()["scalars"])
assert {"train/loss", "train/acc", "val/acc", "learning_rate"} <= tags, tags
train_acc = [e.value for e in events.Scalars("train/acc")]
assert len(train_acc) == len(epochs), (train_acc, len(epochs))
assert abs(train_acc[-1] - last["train_acc"]) < 1e-6, (train_acc, last)
print(f"run ok: {len(epochs)} epochs, last train acc {last['train_acc']:.4f}, "
      f"val {results['val_accuracy']:.4f}, test {results['test_accuracy']:.4f}; tensorboard reads {sorted(tags)}")
