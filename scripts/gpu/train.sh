#!/usr/bin/env bash
# Runs on the GPU host, after run.sh (which keeps the binaries in
# /tmp/cifar-kern-device) and stage-data.sh 1..3 (the data in
# /tmp/cifar-data): the training check of issues 10 and 11. ResNet for 10
# epochs on the GPU with the tutorial's recipe, convolutions in TF32 (train's
# default), must reach 81% validation accuracy; prints the test accuracy,
# seconds per epoch and what the runtime counted per step (parameter copies
# and host waits must be 0). Then the sanitizers over the gpu_ families, last
# because they are slow. Prints a table last.
set -uo pipefail
dir=/tmp/cifar-kern-device
bin=$dir/bin
runs=/tmp/cifar-kern-runs
rm -rf "$runs"
table=()
start=$SECONDS
"$bin/cifar-kern" train resnet --device cuda --math tf32 --epochs 10 --data-dir /tmp/cifar-data --no-download \
    --out-dir "$runs" 2>&1 | tail -n 25
status=${PIPESTATUS[0]}
metrics=$(find "$runs" -name metrics.jsonl | head -1)
check=$(python3 - "$metrics" <<'PY'
import json, os, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
results_path = os.path.join(os.path.dirname(sys.argv[1]), "results.json")
results = json.load(open(results_path)) if os.path.exists(results_path) else {}
for l in lines:
    s = l["per_step"]
    print(f'epoch {l["epoch"]}: {l["train_seconds"]:.2f} s, val {l["val_acc"]}, per step: '
          f'{s["device_copies"]:.2f} device copies, {s["host_copies"]:.2f} host copies, '
          f'{s["host_syncs"]:.2f} host syncs, {s["device_allocations"]:.1f} allocations, '
          f'{s["kernel_launches"]:.1f} launches', file=sys.stderr)
last = lines[-1]
seconds = sorted(l["train_seconds"] for l in lines)[len(lines) // 2]
copies = max(l["per_step"]["device_copies"] + l["per_step"]["host_copies"] for l in lines)
syncs = max(l["per_step"]["host_syncs"] for l in lines)
ok = len(lines) == 10 and last["val_acc"] >= 0.81 and copies == 0 and syncs == 0
test = results.get("test_accuracy")
test = f'{100 * test:.2f}%' if test is not None else 'missing'
print(f'{"ok" if ok else "FAILED"} {results.get("math", "?")}: val {100 * last["val_acc"]:.2f}%, test {test}, '
      f'median {seconds:.2f} s/epoch, copies/step {copies}, host syncs/step {syncs}')
PY
)
[ "$status" = 0 ] || check="FAILED (exit $status) $check"
table+=("$(printf '%-34s %s %4ss' "train_resnet_10_epochs" "$check" $((SECONDS - start)))")

if command -v compute-sanitizer > /dev/null; then
    families=$("$bin/gpu" --list | sed -n 's/^\[\([a-z_]*\)\] .*: test$/\1/p' | sort -u)
    for tool in memcheck racecheck; do
        for family in $families; do
            start=$SECONDS
            if compute-sanitizer --tool "$tool" --error-exitcode 1 "$bin/gpu" "[$family]" --test-threads 1 \
                > "$dir/$tool-$family.log" 2>&1; then s=ok; else s=FAILED; tail -n 5 "$dir/$tool-$family.log"; fi
            table+=("$(printf '%-34s %-7s %4ss' "$tool:gpu_$family" "$s" $((SECONDS - start)))")
        done
    done
else
    table+=("compute-sanitizer: not installed on this host")
fi
echo
printf '%s\n' "---- summary ----" "${table[@]}"
