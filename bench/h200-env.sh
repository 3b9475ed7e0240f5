# Sourced by the H200 scripts (h200.sh, h200-7b.sh): the Vulkan loader from .gl (the device tool's
# README says how to fetch the debs), the NVIDIA ICD, and everything printed teed to $OUT/$1.
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp/out}
mkdir -p "$out"
exec > >(tee "$out/$1") 2>&1
step() { echo "=== $* ($(date +%T))"; }
