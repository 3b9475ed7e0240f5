#!/usr/bin/env bash
# The project's test command: native tests (lavapipe or any Vulkan/Metal/DX12 adapter), then the
# wasm build, the same kernel checks in headless Chromium (WebGPU through SwiftShader), the npm
# package on the fixture model (against HF's logits and the CLI's greedy ids) and the demo page.
# Stops at the first failure. Needs what .ci/run installs (Vulkan driver, chromium, the wasm32
# target, wasm-bindgen-cli, `npm ci` in web/).
set -euo pipefail
cd "$(dirname "$0")/.."
export NODEVICE_SELECT=1

phase() {
    local name=$1 start=$SECONDS
    shift
    echo "==> $name"
    "$@"
    echo "==> $name: $((SECONDS - start)) s"
}

phase "cargo test (native)" cargo test
phase "build web (wasm32)" bash scripts/build-web.sh
phase "kernel checks in Chromium" node web/tests/kernels.mjs
phase "npm package in Chromium (fixture model)" node web/tests/model.mjs
phase "demo page in Chromium" node web/tests/demo.mjs
