#!/usr/bin/env bash
# GEMV tuning sweep on the lent H200 (same carry as h200-ops.sh): columns per 32-lane group x
# k-unroll (x subgroup reduction when SWEEP_SG=1); each variant is checked before it is timed.
# Since 2026-11-30 the unroll only steps the scalar GEMV (odd K); the 16-byte one is pipelined.
set -uo pipefail
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
for sg in ${SWEEP_SG:-0}; do
  for cpg in ${SWEEP_CPG:-1 2 4}; do
    for un in ${SWEEP_UNROLL:-1 2}; do
      export DSVL_GEMV_CPG=$cpg DSVL_GEMV_UNROLL=$un DSVL_NO_SUBGROUPS=$sg
      ok=$(./.bin/dsvl-gpu selftest-kernels check_linear 2>&1 | tail -1)
      echo "== no_subgroups=$sg cpg=$cpg unroll=$un: $ok"
      ./.bin/dsvl-gpu bench-ops --only GEMV 2>&1 | grep GEMV
    done
  done
done
