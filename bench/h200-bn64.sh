#!/usr/bin/env bash
# The staged tensor-core GEMM with 64-wide tiles (DSVL_GEMM_BN64=1) against the 128-wide default,
# in one device call: kernel checks with it forced on, bench-ops GEMM rows both ways, then
# `dsvl-gpu bench --quant f16` both ways at the real 1.3B shapes. Same carry as bench/h200.sh.
set -uo pipefail
source bench/h200-env.sh h200-bn64.log
D=/tmp/dsvl-1.3b
step "kernel checks, BN64 forced on"
DSVL_GEMM_BN64=1 ./.bin/dsvl-gpu selftest-kernels 2>&1 | grep -v "^ok "
for v in 0 1; do
    step "bench-ops GEMM, DSVL_GEMM_BN64=$v"
    DSVL_GEMM_BN64=$v ./.bin/dsvl-gpu bench-ops --only GEMM 2>&1 | grep "x:f16 w:f16"
done
step make checkpoint
[ -f "$D/model.safetensors" ] || python3 bench/real_shapes.py make "$D" || exit 1
for v in 0 1 0 1; do
    step "bench f16, DSVL_GEMM_BN64=$v"
    DSVL_GEMM_BN64=$v ./.bin/dsvl-gpu bench --model "$D" --quant f16 2>&1 | grep -E "vision|prefill|first token"
done
step done
