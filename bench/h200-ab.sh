#!/usr/bin/env bash
# Arms compared in one device call: `.bin/old` (a build of the base commit), `.bin/dsvl-gpu`
# (the change), and the change with each setting in $ENVS (space-separated arms, settings of
# one arm joined by commas, e.g. ENVS="DSVL_GEMM_BK64=1 DSVL_GEMM_BK64=1,DSVL_GEMM_PIPE2=1"), on
# the real 1.3B shapes: kernel checks of every new arm (for the env arms only those matching
# $ARM_CHECKS, default all), `bench-ops` rows for each filter in $OPS (all arms) and
# $BASE_OPS (old and new only),
# then `dsvl-gpu bench` for each quant in $QUANTS, the arms alternating, $ROUNDS rounds, and with
# STATS=1 the driver's statistics of every kernel variant (`dsvl-gpu pipeline-stats`), and
# with TORCH=1 the PyTorch reference (bf16, SDPA) last, for a ratio on whichever card came.
# Build both here (strip, gzip -9 into .bin; docs/PERFORMANCE.md says how), carry
# [".gl", ".bin"], command: bash bench/h200-ab.sh   (log: $OUT/h200-ab.log)
set -uo pipefail
source bench/h200-env.sh h200-ab.log
D=/tmp/dsvl-1.3b
QUANTS=${QUANTS:-"f16 q4"}
OPS=${OPS:-"decode"}
ROUNDS=${ROUNDS:-2}
for f in .bin/*.gz; do [ -f "$f" ] && gunzip -f "$f"; done
chmod +x .bin/*
step environment
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv
# An arm is "binary|settings".
arms=("old|" "dsvl-gpu|")
for e in ${ENVS:-}; do arms+=("dsvl-gpu|$e"); done
arm() { local a=$1 s; shift; s=${a#*|}; env ${s//,/ } "./.bin/${a%%|*}" "$@"; }
step "kernel checks (${arms[1]})"
arm "${arms[1]}" selftest-kernels 2>&1 | grep -v "^ok "
for a in "${arms[@]:2}"; do
    step "kernel checks ($a) ${ARM_CHECKS:-}"
    arm "$a" selftest-kernels ${ARM_CHECKS:-} 2>&1 | grep -v "^ok "
done
for f in ${BASE_OPS:-}; do
    for a in "${arms[@]:0:2}"; do
        step "bench-ops --only $f ($a)"
        arm "$a" bench-ops --only "$f" 2>&1 | grep "^|"
    done
done
for f in $OPS; do
    for a in "${arms[@]}"; do
        step "bench-ops --only $f ($a)"
        arm "$a" bench-ops --only "$f" 2>&1 | grep "^|"
    done
done
step make checkpoint
[ -f "$D/model.safetensors" ] || python3 bench/real_shapes.py make "$D" || exit 1
for q in $QUANTS; do
    for r in $(seq "$ROUNDS"); do
        for a in "${arms[@]}"; do
            step "bench --quant $q ($a, round $r)"
            arm "$a" bench --model "$D" --quant "$q" 2>&1 | grep -E "vision|prefill|first token|decode|peak"
        done
    done
done
for q in ${PROFILE:-}; do
    step "bench --quant $q --profile (dsvl-gpu)"
    ./.bin/dsvl-gpu bench --model "$D" --quant "$q" --profile 2>&1 | grep -v "loading weights"
done
if [ "${STATS:-0}" = 1 ]; then
    step "pipeline-stats (the driver's registers, shared memory and spills per kernel)"
    ./.bin/dsvl-gpu pipeline-stats ${STATS_FILTER:-} 2>&1
fi
if [ "${TORCH:-0}" = 1 ]; then
    step "PyTorch reference (bf16, SDPA)"
    python3 bench/real_shapes.py torch-bench "$D"
fi
step done
