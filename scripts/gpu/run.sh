#!/usr/bin/env bash
# Runs on the GPU host (from the repository root, after scripts/gpu/build.sh
# here; call 1 of scripts/gpu/README.md): every gpu_ test, family by family
# (parity, the training step through train::train_step, out of memory), the
# step's copy and wait counts, and the f32 fixture tests; prints a short
# table last. The binaries are kept in /tmp/cifar-kern-device for train.sh
# (call 4). CIFAR_KERN_REQUIRE_GPU=1: a gpu_ test that finds no usable GPU
# fails rather than being ignored; a family that still reports ignored
# tests shows as SKIPPED.
set -uo pipefail
rm -rf /tmp/cifar-kern-device && cp -r .device /tmp/cifar-kern-device
dir=/tmp/cifar-kern-device
export CIFAR_KERN_FIXTURES="$dir/fixtures" CIFAR_KERN_REQUIRE_FIXTURES=1 CIFAR_KERN_REQUIRE_GPU=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
table=()
run() { # name, command...
    local name=$1; shift
    local start=$SECONDS
    # libtest's summary: "test result: ok. 5 passed; 0 failed; 0 ignored; ..."
    local summary
    if ! "$@" > "$dir/$name.log" 2>&1; then status=FAILED
    elif ! summary=$(grep "^test result:" "$dir/$name.log"); then status=FAILED  # it never got to run its tests
    elif ! grep -q " 0 ignored;" <<< "$summary"; then status=SKIPPED   # some tests were ignored
    elif grep -q " 0 passed;" <<< "$summary"; then status=EMPTY       # the filter matched no test
    else status=ok; fi
    table+=("$(printf '%-34s %-7s %4ss' "$name" "$status" $((SECONDS - start)))")
    tail -n 3 "$dir/$name.log"
}
# The families of the gpu binary: its tests' kinds ("[conv] gpu_conv_...: test").
families=$("$dir/bin/gpu" --list | sed -n 's/^\[\([a-z_]*\)\] .*: test$/\1/p' | sort -u)
for family in $families; do
    run "gpu_$family" "$dir/bin/gpu" "[$family]" --test-threads 1 --nocapture
done
# Only the networks' fixture tests: the others need the tutorial's .ckpt
# files and the cifar-kern binary at its build path.
run fixtures_models "$dir/bin/fixtures" "[models]" --test-threads 1 --nocapture
run step_copies "$dir/bin/step_copies" --nocapture
echo
printf '%s\n' "---- summary ----" "${table[@]}"
