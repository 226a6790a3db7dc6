#!/usr/bin/env bash
# Runs on the GPU host (from the repository root, after scripts/gpu/build.sh
# here; call 1 of scripts/gpu/README.md): every gpu_ test, family by family
# (parity, the training step through train::train_step, out of memory), the
# step's copy and wait counts, and the f32 fixture tests; then (issue 12)
# the capture-safety mode over 20 eager steps of each network; then the
# speed checks (issues 11, 12): `cifar-kern tune` (its table into $OUT),
# `cifar-kern bench all` with that table (graph-replayed and eager steps,
# the kernel-time sum, launches and allocations per step), the PyTorch peers
# (if torch imports), the JAX step (if jax imports), the gpu_ops and
# gpu_conv benches, each with a timeout that keeps the call within 8 minutes;
# prints their main tables and a short summary table last. The binaries are
# kept in /tmp/cifar-kern-device for train.sh (call 4).
# CIFAR_KERN_REQUIRE_GPU=1: a gpu_ test that finds no usable GPU
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

# Speed. Results and logs go to $OUT (the device tool brings it back).
res=${OUT:-$dir/results}
mkdir -p "$res"
end=465  # seconds after this script started: the call stays within 8 minutes with start-up
timed() { # name, cap in seconds, command...: runs it for at most the cap or what is left
    local name=$1 cap=$2; shift 2
    local left=$((end - SECONDS)) start=$SECONDS rc status
    [ "$left" -lt "$cap" ] && cap=$left
    if [ "$cap" -lt 10 ]; then
        table+=("$(printf '%-34s %-7s %4ss' "$name" "NO TIME" 0)"); return
    fi
    timeout "$cap" "$@" > "$res/$name.log" 2>&1; rc=$?
    case $rc in 0) status=ok ;; 124) status=TIMEOUT ;; *) status=FAILED ;; esac
    table+=("$(printf '%-34s %-7s %4ss' "$name" "$status" $((SECONDS - start)))")
    tail -n 3 "$res/$name.log"
}
timed capture_safe 45 "$dir/bin/cifar-kern" bench all --capture-safe
timed tune 90 "$dir/bin/cifar-kern" tune --out "$res/conv_tiles.txt"
tiles=()
[ -s "$res/conv_tiles.txt" ] && tiles=(--tiles "$res/conv_tiles.txt")
timed bench 150 "$dir/bin/cifar-kern" bench all "${tiles[@]}" --json "$res/ours.json"
# train.sh (call 4) compares a steady epoch with the benchmarked step.
[ -s "$res/ours.json" ] && cp "$res/ours.json" "$dir/ours.json"
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    ours=()
    [ -s "$res/ours.json" ] && ours=(--ours "$res/ours.json")
    timed peers 180 python3 benches/peers/peers.py "${ours[@]}" --json "$res/pytorch.json"
else
    table+=("$(printf '%-34s %-7s %4ss' peers NOTORCH 0)")
fi
if python3 -c 'import jax' 2>/dev/null; then
    timed jax_step 60 python3 benches/peers/jax_step.py --json "$res/jax.json"
else
    table+=("$(printf '%-34s %-7s %4ss' jax_step NOJAX 0)")
fi
export CRITERION_HOME=/tmp/cifar-kern-criterion
timed bench_gpu_ops 60 "$dir/bin/gpu_ops" --bench
[ -s "$res/conv_tiles.txt" ] && export CIFAR_KERN_CONV_TILES="$res/conv_tiles.txt"
timed bench_gpu_conv 150 "$dir/bin/gpu_conv" --bench

echo
echo "---- speed ----"
[ -f "$res/capture_safe.log" ] && grep "capture-safe" "$res/capture_safe.log"
[ -f "$res/tune.log" ] && grep -E "^(all [0-9]+ \(sum\)|wrote )" "$res/tune.log"
[ -f "$res/bench.log" ] && sed -n '/^Training steps:/,$p' "$res/bench.log"
[ -f "$res/peers.log" ] && sed -n '/^Conv sums per network/,$p' "$res/peers.log"
[ -f "$res/jax_step.log" ] && tail -n 3 "$res/jax_step.log"
[ -f "$res/bench_gpu_ops.log" ] && sed -n '/^gpu_ops on /,$p' "$res/bench_gpu_ops.log"
[ -f "$res/bench_gpu_conv.log" ] && grep "^gpu_conv on " "$res/bench_gpu_conv.log"
echo
printf '%s\n' "---- summary ----" "${table[@]}"
