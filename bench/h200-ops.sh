#!/usr/bin/env bash
# Kernel checks and bench-ops on the lent H200 (Vulkan), in one device call:
#   cargo build --release && mkdir -p .bin && cp target/release/dsvl-gpu .bin/
#   device run with carry [".gl", ".bin"]: bash bench/h200-ops.sh
# .gl holds the Vulkan loader debs (see the device tool's README); .bin the binary built here.
set -uo pipefail
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
out=${OUT:-/tmp/out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$out/nvidia-smi.txt"
./.bin/dsvl-gpu info 2>&1 | tee "$out/info.txt"
./.bin/dsvl-gpu selftest-kernels 2>&1 | tee "$out/selftest.txt"
DSVL_NO_F16=1 ./.bin/dsvl-gpu selftest-kernels 2>&1 | tail -3 | tee "$out/selftest-nof16.txt"
./.bin/dsvl-gpu bench-ops 2>&1 | tee "$out/bench-ops.md"
