#!/usr/bin/env bash
# Cost of wgpu's injected shader bounds checks / loop bounding on the H200 (same carry as
# h200-ops.sh): GEMM and GEMV with and without DSVL_UNCHECKED_SHADERS=1.
set -uo pipefail
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
for u in 0 1; do
  echo "== DSVL_UNCHECKED_SHADERS=$u"
  DSVL_UNCHECKED_SHADERS=$u ./.bin/dsvl-gpu selftest-kernels 2>&1 | tail -1
  DSVL_UNCHECKED_SHADERS=$u ./.bin/dsvl-gpu bench-ops 2>&1 | grep "^| [GEa]"
done
