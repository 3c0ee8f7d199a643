#!/usr/bin/env bash
# `npm run build:cuda`: the CUDA addon (cargo feature `cuda`, sm_$CUDA_COMPUTE_CAP, default 90) into
# npm/linux-x64-gnu-cuda/layerfold.linux-x64-gnu-cuda.node, which the loader (ts/native.ts) prefers
# when it loads. Its own target folder (target/cuda) keeps the CPU build's intact; the first build
# takes ~16 min on 2 cores (candle's kernels), later ones seconds to minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cuda-toolchain.sh
export CARGO_TARGET_DIR="$PWD/target/cuda"
node scripts/mkl.mjs -- npx napi build --platform --release --features cuda --manifest-path crates/node/Cargo.toml \
  --package-json-path package.json --output-dir target/cuda/napi --no-js --dts cuda.d.ts
cp target/cuda/napi/layerfold.linux-x64-gnu.node npm/linux-x64-gnu-cuda/layerfold.linux-x64-gnu-cuda.node
echo "build:cuda: npm/linux-x64-gnu-cuda/layerfold.linux-x64-gnu-cuda.node"
