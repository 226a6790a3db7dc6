#!/usr/bin/env bash
# Runs on the GPU host (from the repository root, after scripts/gpu/build.sh
# here): every gpu_ parity test, family by family, the f32 fixture tests,
# then memcheck and racecheck over the GPU tests, and prints a short table
# last. CIFAR_KERN_REQUIRE_GPU=1: a gpu_ test that finds no usable GPU fails
# rather than being ignored; a family that still reports ignored tests
# shows as SKIPPED.
set -uo pipefail
dir=.device
export CIFAR_KERN_FIXTURES="$PWD/$dir/fixtures" CIFAR_KERN_REQUIRE_FIXTURES=1 CIFAR_KERN_REQUIRE_GPU=1
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
if command -v compute-sanitizer > /dev/null; then
    for tool in memcheck racecheck; do
        for family in $families; do
            run "$tool:gpu_$family" compute-sanitizer --tool "$tool" --error-exitcode 1 \
                "$dir/bin/gpu" "[$family]" --test-threads 1 --nocapture
        done
    done
else
    table+=("compute-sanitizer: not installed on this host")
fi
echo
printf '%s\n' "---- summary ----" "${table[@]}"
