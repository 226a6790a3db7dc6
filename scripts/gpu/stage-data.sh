#!/usr/bin/env bash
# Runs on the GPU host: unpacks part N of CIFAR-10 (carried in
# .device-data/partN by scripts/gpu/build.sh) into /tmp/cifar-data, which
# outlives the call while the host stays warm. After part 3 it checks every
# file against MD5SUMS.
set -euo pipefail
part=${1:?usage: stage-data.sh 1|2|3}
dest=/tmp/cifar-data
mkdir -p "$dest"
tar -xJf ".device-data/part$part/cifar10-part$part.tar.xz" -C "$dest"
if [ "$part" = 3 ]; then
    # MD5SUMS also lists the three archives, which are not unpacked here.
    grep ' cifar-10-batches-bin/' .device-data/part3/MD5SUMS | (cd "$dest" && md5sum -c)
fi
ls -R "$dest" | head -20
