#!/usr/bin/env bash
# Tensor-core GEMM shapes on the lent H200, in one device call: for each tile shape
# (DSVL_COOP_NT: 16x16 tiles per subgroup along N; DSVL_COOP_KU: k steps per iteration) the
# matmul kernel checks, bench-ops' GEMM rows and the end-to-end bench on a random 1.3B model.
# Built here: cargo build --release && cp target/release/dsvl-gpu .bin/; carry [".gl", ".bin"].
set -uo pipefail
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
out=${OUT:-/tmp/out}
mkdir -p "$out"
exec > >(tee "$out/coop-tune.log") 2>&1
D=/tmp/dsvl-1.3b
[ -f "$D/model.safetensors" ] || python3 bench/real_shapes.py make "$D" || exit 1
for nt in 2 4; do
    for ku in 1 2; do
        echo "=== NT=$nt KU=$ku"
        export DSVL_COOP_NT=$nt DSVL_COOP_KU=$ku
        ./.bin/dsvl-gpu selftest-kernels linear 2>&1 | tail -2
        ./.bin/dsvl-gpu bench-ops --only GEMM 2>&1 | grep "x:f16 w:f16"
        ./.bin/dsvl-gpu bench --model "$D" --runs 3 --decode-tokens 64 --json 2>/dev/null
    done
done
