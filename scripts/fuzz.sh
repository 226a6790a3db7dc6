#!/usr/bin/env bash
# A longer fuzzing run: the fuzz_ tests of tests/fuzz/ with SCALE times the
# executions `cargo test` gives each target, from another seed.
#
#   scripts/fuzz.sh [SCALE [SEED [FILTER]]]    defaults: 10, 1, fuzz_
#   scripts/fuzz.sh 10 1                       about 3 minutes on 2 cores
#   scripts/fuzz.sh 50 7 fuzz_flax             one target, longer
#
# CIFAR_KERN_FUZZ_EXECS=N in the environment sets N executions for every
# target instead. A failure names the target, seed and iteration, and saves
# the input under target/tmp/fuzz-failures/; CIFAR_KERN_FUZZ_TRACE=1 prints
# each iteration first, to find one that aborts the process.
set -euo pipefail
cd "$(dirname "$0")/.."
export CIFAR_KERN_FUZZ_SCALE="${1:-10}" CIFAR_KERN_FUZZ_SEED="${2:-1}"
exec cargo test --test fuzz -- --nocapture "${3:-fuzz_}"
