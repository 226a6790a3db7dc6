#!/usr/bin/env bash
# Runs on the GPU host (from the repository root, after scripts/gpu/build.sh
# here): every gpu_ parity test, the f32 fixture tests, then memcheck and
# racecheck over the GPU tests, and prints a short table last.
set -uo pipefail
dir=.device
export CIFAR_KERN_FIXTURES="$PWD/$dir/fixtures" CIFAR_KERN_REQUIRE_FIXTURES=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
table=()
run() { # name, command...
    local name=$1; shift
    local start=$SECONDS
    if ! "$@" > "$dir/$name.log" 2>&1; then status=FAILED
    elif grep -q "skipped: no GPU" "$dir/$name.log"; then status=SKIPPED  # the GPU was not usable
    else status=ok; fi
    table+=("$(printf '%-34s %-7s %4ss' "$name" "$status" $((SECONDS - start)))")
    tail -n 3 "$dir/$name.log"
}
for t in "$dir"/bin/gpu_*; do
    run "$(basename "$t")" "$t" --test-threads 1 --nocapture
done
run fixtures_models "$dir/bin/fixtures_models" --test-threads 1 --nocapture
if command -v compute-sanitizer > /dev/null; then
    for tool in memcheck racecheck; do
        for t in "$dir"/bin/gpu_*; do
            run "$tool:$(basename "$t")" compute-sanitizer --tool "$tool" --error-exitcode 1 "$t" --test-threads 1 --nocapture
        done
    done
else
    table+=("compute-sanitizer: not installed on this host")
fi
echo
printf '%s\n' "---- summary ----" "${table[@]}"
