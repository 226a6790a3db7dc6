#!/usr/bin/env bash
# Scores the tutorial's four pretrained checkpoints on the full validation
# split and test set on the CPU, against its published table (what CI checks
# for ResNet and PreActResNet; about 7 minutes on 2 cores with all four).
# usage: scripts/eval-tutorial.sh DATA_DIR [FIXTURES_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: scripts/eval-tutorial.sh DATA_DIR [FIXTURES_DIR]}
fixtures=${2:-../shared/fixtures}
cargo build --release 2>&1 | tail -n 1
for model in GoogleNet ResNet PreActResNet DenseNet; do
    target/release/cifar-kern eval "$model" --checkpoint "$fixtures/flax/$model.ckpt" --data-dir "$data" \
        --device cpu --json | python3 .ci/check_eval.py "$model"
done
