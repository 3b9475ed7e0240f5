#!/usr/bin/env bash
# DeepSeek-VL-7B (hybrid SAM-B + SigLIP tower) at its real shapes, random weights, on the lent
# H200, in one device call:
#   1. make the checkpoint (bench/real_shapes.py make --hybrid7b: original sharded layout, bf16),
#   2. `dsvl-gpu bench --quant q4` under a 128 MiB binding limit (the browser's), then with
#      --profile without it,
#   (the kernel checks are h200.sh's: run it first),
#   3. the PyTorch reference (bf16, SDPA) on the same weights and prompt,
#   4. with PARITY=1: HF's f32 logits against `dsvl-gpu run --dump-logits` in f32 and f16.
# Built here:  cargo build --release && mkdir -p .bin && cp target/release/dsvl-gpu .bin/
# Device call: carry [".gl", ".bin"], command: bash bench/h200-7b.sh
# Everything goes to $OUT/h200-7b.log; the numbers go into docs/PERFORMANCE.md.
set -uo pipefail
source bench/h200-env.sh h200-7b.log
D=/tmp/dsvl-7b
QUANTS=${QUANTS:-"q4"}
TORCH=${TORCH:-1}
PARITY=${PARITY:-0}
W=/tmp/dsvl-7b-work
mkdir -p "$W"

step environment
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
./.bin/dsvl-gpu info 2>&1 | head -5

step make checkpoint
[ -f "$D/model.safetensors.index.json" ] || python3 bench/real_shapes.py make --hybrid7b "$D" || exit 1
du -sh "$D"

for q in $QUANTS; do
    step "dsvl-gpu bench --quant $q, bindings limited to 128 MiB"
    ./.bin/dsvl-gpu bench --model "$D" --quant "$q" --max-binding 134217728 --runs 3 --json
    step "dsvl-gpu bench --quant $q --profile"
    ./.bin/dsvl-gpu bench --model "$D" --quant "$q" --profile
done

if [ "$TORCH" = 1 ]; then
    step "PyTorch reference (bf16, SDPA)"
    python3 bench/real_shapes.py torch-bench --hybrid7b "$D"
fi
if [ "$PARITY" = 1 ]; then
    step parity
    python3 bench/real_shapes.py reference "$D" "$W/ref.npy" || exit 1
    for q in f32 f16; do
        ./.bin/dsvl-gpu run --model "$D" --image "$D/real.png" --prompt "Describe this image." --quant $q \
            --dump-logits "$W/ours_$q.npy" --max-new-tokens 8 --json
    done
    python3 bench/real_shapes.py compare "$W/ref.npy" "$W/ours_f32.npy" "$W/ours_f16.npy"
fi
step done
