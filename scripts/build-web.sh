#!/usr/bin/env bash
# Builds the browser package (web/, npm `dsvl-gpu`): the wasm32 library into web/pkg (profile
# wasm-release: release optimised for size, feature `web`), wasm-bindgen's ES-module glue
# (--target web), then npm binaryen's wasm-opt -Os. web/src holds the package's JS.
# Needs: rustup target wasm32-unknown-unknown, wasm-bindgen-cli matching Cargo.lock (installed
# here if missing or different), and `npm ci` done in web/ (for binaryen@132; Debian's
# binaryen produces wasm that breaks in the browser, so it is never used).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
WASM="$TARGET_DIR/wasm32-unknown-unknown/wasm-release/dsvl_gpu.wasm"
OUT=web/pkg

# wasm-bindgen's CLI must be the exact version of the wasm-bindgen crate in Cargo.lock.
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [ "$have" != "$want" ]; then
    echo "installing wasm-bindgen-cli $want (found: ${have:-none})"
    cargo install wasm-bindgen-cli --version "$want"
fi

if [ ! -x web/node_modules/.bin/wasm-opt ]; then
    echo "web/node_modules/.bin/wasm-opt missing: run 'npm ci' in web/ first" >&2
    exit 1
fi

cargo build --lib --profile wasm-release --target wasm32-unknown-unknown --no-default-features --features web

rm -rf "$OUT"
wasm-bindgen --target web --out-dir "$OUT" "$WASM"
# --enable-bulk-memory etc.: rustc's wasm32 target emits these proposals by default now.
(cd web && npx --no-install wasm-opt -Os --enable-bulk-memory --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
    pkg/dsvl_gpu_bg.wasm -o pkg/dsvl_gpu_bg.wasm)

raw=$(stat -c %s "$OUT/dsvl_gpu_bg.wasm")
gz=$(gzip -9 -c "$OUT/dsvl_gpu_bg.wasm" | wc -c)
echo "web/pkg/dsvl_gpu_bg.wasm: $raw bytes raw, $gz bytes gzipped (wasm-bindgen $want, wasm-opt $(cd web && npx --no-install wasm-opt --version))"
