#!/usr/bin/env bash
# Builds, on this (GPU-less) machine, everything a GPU session runs: the test
# binaries with the kernels embedded, the cifar-kern binary, the gpu_conv
# bench binary and the fixtures, into .device/, and the real CIFAR-10 in
# three parts into .device-data/ (both git-ignored), which the device tool
# carries to the GPU host. The GPU host has no cargo; the binaries run
# there as built here. A device call carries at most 64 MiB, so a session is
# four back-to-back calls (the host keeps /tmp while it stays warm, 30 s
# after a call); see scripts/gpu/README.md:
#   bash scripts/gpu/build.sh
#   1. carry [".device"]:            bash .device/run.sh
#   2. carry [".device-data/part1"]: bash scripts/gpu/stage-data.sh 1
#   3. carry [".device-data/part2"]: bash scripts/gpu/stage-data.sh 2
#   4. carry [".device-data/part3"]: bash scripts/gpu/stage-data.sh 3 && bash scripts/gpu/train.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${NVCC:?set NVCC to a CUDA 13.0 nvcc (see README)}"
out=.device
rm -rf "$out" && mkdir -p "$out/bin" "$out/fixtures"

# Every test binary (release, kernels embedded); keep `gpu` (every gpu_ test)
# and `fixtures`, whose [models] tests also run on the GPU once it trains.
cargo test --release --no-run --message-format=json 2>/dev/null \
    | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])
' | while read -r name exe; do
    case "$name" in gpu|fixtures|step_copies) cp "$exe" "$out/bin/$name" ;; esac
done
cargo build --release --bin cifar-kern
cp target/release/cifar-kern "$out/bin/"
# The criterion GPU benches (harness = false; the GPU host runs them with
# --bench, as cargo would).
for bench in gpu_conv gpu_ops; do
    exe=$(cargo bench --no-run --bench "$bench" --message-format=json 2>/dev/null \
        | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])
' "$bench")
    [ -n "$exe" ] || { echo "cargo bench --no-run built no $bench binary"; exit 1; }
    cp "$exe" "$out/bin/$bench"
done
# Debug info makes each binary ~45 MB; a device call carries 64 MiB in all.
strip "$out"/bin/*
mkdir -p "$out/fixtures/flax"
cp "${CIFAR_KERN_FIXTURES:-../shared/fixtures}"/flax/*.safetensors "$out/fixtures/flax/"
cp scripts/gpu/run.sh "$out/run.sh"
size_mb=$(du -sm "$out" | cut -f1)
echo "$out: ${size_mb} MiB (carry limit 64 MiB with the working tree)"
[ "$size_mb" -le 60 ] || { echo "too large to carry"; exit 1; }

data=.device-data
shared="${CIFAR_KERN_SHARED_DATA:-../shared/data}"
rm -rf "$data"
for part in 1 2 3; do
    mkdir -p "$data/part$part"
    cp "$shared/cifar10-part$part.tar.xz" "$data/part$part/"
done
cp "$shared/MD5SUMS" "$data/part3/"
du -sm "$data"/part*
