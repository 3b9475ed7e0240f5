#!/usr/bin/env bash
# DeepSeek-VL-1.3B at its real shapes (random weights) on the lent H200, in one device call:
#   1. make the checkpoint (bench/real_shapes.py make: original layout, bf16, real vocabulary),
#   2. parity: HF transformers' DeepseekVLForConditionalGeneration in f32 against `dsvl-gpu run
#      --dump-logits` with --quant f32 and f16 (relative L2, cosine, top-1),
#   3. `dsvl-gpu quant-report` (QREPORT=0 skips it), then `dsvl-gpu bench` for each quant in
#      $QUANTS (default "f16 q8 q4 mixed"), with --profile for the first (PROFILE=all: each),
#      after any `bench-ops --only F` for F in $OPS,
#   4. the PyTorch reference (bf16, SDPA) on the same weights and the same prompt.
# The 7B hybrid: bench/h200-7b.sh.
# Built here:  cargo build --release && mkdir -p .bin && cp target/release/dsvl-gpu .bin/
# Device call: carry [".gl", ".bin"], command: bash bench/h200.sh
# .gl holds the Vulkan loader debs (the device tool's README says how to fetch them).
# Everything goes to $OUT/h200.log; paste the numbers into docs/PERFORMANCE.md.
set -uo pipefail
source bench/h200-env.sh h200.log
D=/tmp/dsvl-1.3b
W=/tmp/dsvl-work
mkdir -p "$W"
QUANTS=${QUANTS:-"f16 q8 q4 mixed"}
OPS=${OPS:-}          # bench-ops filters to run after the kernel checks, e.g. "GEMM dispatch"
PROFILE=${PROFILE:-first}  # all: --profile for every quant
PARITY=${PARITY:-1}  # 0: skip step 2
TORCH=${TORCH:-1}    # 0: skip step 4

step environment
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv
./.bin/dsvl-gpu info 2>&1 | head -20
step "kernel checks"
# If a path the adapter offers (tensor cores) fails its checks, say so and measure without it.
if ! ./.bin/dsvl-gpu selftest-kernels 2>&1 | grep -v "^ok "; then
    echo "kernel checks FAILED: retrying with DSVL_NO_COOP=1"
    export DSVL_NO_COOP=1
    ./.bin/dsvl-gpu selftest-kernels 2>&1 | tail -4 || exit 1
fi
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'

for f in $OPS; do
    step "bench-ops --only $f"
    ./.bin/dsvl-gpu bench-ops --only "$f"
done

step make checkpoint
[ -f "$D/model.safetensors" ] || python3 bench/real_shapes.py make "$D" || exit 1
du -sh "$D"

if [ "$PARITY" = 1 ]; then
step parity
python3 bench/real_shapes.py reference "$D" "$W/ref.npy" || exit 1
for q in f32 f16; do
    ./.bin/dsvl-gpu run --model "$D" --image "$D/real.png" --prompt "Describe this image." --quant $q \
        --dump-logits "$W/ours_$q.npy" --max-new-tokens 8 --json
done
python3 bench/real_shapes.py compare "$W/ref.npy" "$W/ours_f32.npy" "$W/ours_f16.npy"
fi

if [ "${QREPORT:-1}" = 1 ]; then
    step "quant-report (logits cosine of each recipe against f32)"
    ./.bin/dsvl-gpu quant-report --model "$D" 2>&1 | grep -v "loading weights"
fi

first=1
for q in $QUANTS; do
    step "dsvl-gpu bench --quant $q"
    if [ $first = 1 ] || [ "$PROFILE" = all ]; then
        ./.bin/dsvl-gpu bench --model "$D" --quant $q --profile
        first=0
    else
        ./.bin/dsvl-gpu bench --model "$D" --quant $q
    fi
done

if [ "$TORCH" = 1 ]; then
    step "PyTorch reference (bf16, SDPA)"
    python3 bench/real_shapes.py torch-bench "$D"
fi
step done
