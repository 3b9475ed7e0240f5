#!/usr/bin/env bash
# A against B in one device call: `.bin/old` (a build of the base commit) and `.bin/dsvl-gpu`
# (the change), alternating, on the real 1.3B shapes: kernel checks of B, `bench-ops` rows for
# each filter in $OPS, then `dsvl-gpu bench` for each quant in $QUANTS, $ROUNDS times each way.
# Build both here (strip, gzip -9 into .bin), carry [".gl", ".bin"], command: bash bench/h200-ab.sh
set -uo pipefail
source bench/h200-env.sh h200-ab.log
D=/tmp/dsvl-1.3b
QUANTS=${QUANTS:-"f16 q4"}
OPS=${OPS:-"decode"}
ROUNDS=${ROUNDS:-2}
for f in .bin/*.gz; do [ -f "$f" ] && gunzip -f "$f"; done
chmod +x .bin/*
step "kernel checks (B)"
./.bin/dsvl-gpu selftest-kernels 2>&1 | grep -v "^ok "
for f in $OPS; do
    for b in old dsvl-gpu; do
        step "bench-ops --only $f ($b)"
        ./.bin/$b bench-ops --only "$f" 2>&1 | grep "^|"
    done
done
step make checkpoint
[ -f "$D/model.safetensors" ] || python3 bench/real_shapes.py make "$D" || exit 1
for q in $QUANTS; do
    for r in $(seq "$ROUNDS"); do
        for b in old dsvl-gpu; do
            step "bench --quant $q ($b, round $r)"
            ./.bin/$b bench --model "$D" --quant "$q" 2>&1 | grep -E "vision|prefill|first token|decode|peak"
        done
    done
done
if [ -n "${PROFILE:-}" ]; then
    for q in $PROFILE; do
        step "bench --quant $q --profile (B)"
        ./.bin/dsvl-gpu bench --model "$D" --quant "$q" --profile 2>&1 | grep -v "loading weights"
    done
fi
step done
