#!/usr/bin/env bash
# The GPU check of issue 12 in one command per side, for wherever a GPU is lent.
#
#   bash benches/device-run.sh pack     here (Rust, no GPU): builds the kernels' test binary with the
#                                       `cuda` feature into out/device/ (about 50 MB, stripped)
#   bash benches/device-run.sh run      on the GPU machine (no Rust, no Node), from the repo root with
#                                       out/device carried: runs every CUDA test against the CPU
#                                       implementation and writes the log to $OUT (or out/device)
#
# With the device tool: run(command="bash benches/device-run.sh run", carry=["out/device"]).
# The binary links libcuda.so.1 (the driver), libcudart.so.13, libcublas.so.13 and libcurand.so.10:
# `run` puts the CUDA 13 wheels' lib folders of the machine's python3 (PyTorch's) on the library path.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=out/device

case "${1:-}" in
pack)
  source scripts/cuda-toolchain.sh
  export CARGO_TARGET_DIR="${LAYERFOLD_CUDA_TARGET:-$PWD/target/cuda}"
  bin="$(cargo test --release --target x86_64-unknown-linux-gnu -p layerfold-kernels --features cuda --no-run \
    --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "layerfold_kernels" and m["profile"]["test"]:
        print(m["executable"])')"
  mkdir -p "$dir"
  strip -o "$dir/kernels-tests" "$bin"
  ls -la "$dir"
  ;;
run)
  out="${OUT:-$dir}"
  site="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  libs="$(find "$site/nvidia" -maxdepth 3 -type d -name lib 2>/dev/null | tr '\n' ':')"
  export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:-}"
  {
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    "$dir/kernels-tests" --test-threads 1 --nocapture cuda
  } 2>&1 | tee "$out/kernels.txt"
  ;;
*)
  echo "usage: bash benches/device-run.sh pack|run" >&2
  exit 2
  ;;
esac
