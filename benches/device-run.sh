#!/usr/bin/env bash
# The GPU check of issue 12 in one command per side, for wherever a GPU is lent.
#
#   bash benches/device-run.sh pack     here (Rust, no GPU): builds with the `cuda` feature
#                                       - the kernels' test binary (every CUDA op against its CPU
#                                         definition, the loss's backward against finite differences),
#                                       - core's tests/cuda.rs (CoMe on stories260K, GPU against CPU),
#                                       - the tuning harness benches/kernels,
#                                       strips them into one xz tarball under out/device/ with the
#                                       stories260K model and calibration text they read
#   bash benches/device-run.sh run      on the GPU machine (no Rust, no Node), from the repo root with
#                                       out/device carried: unpacks (python's tarfile), runs the tests
#                                       then the harness, and writes to $OUT (or out/device/results):
#                                       tests.txt, kernels.txt, kernels.json, tuning.json
#
# With the device tool: run(command="bash benches/device-run.sh run", carry=["out/device"]).
# The binaries link libcuda.so.1 (the driver), libcudart.so.13, libcublas.so.13 and libcurand.so.10:
# `run` puts the CUDA wheels' lib folders of the machine's python3 (PyTorch's) on the library path.
# How long `run` takes on a GPU has not been measured yet (no GPU was lent when it was written).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=out/device
shared="${LAYERFOLD_SHARED:-$PWD/../shared}"

case "${1:-}" in
pack)
  source scripts/cuda-toolchain.sh
  export CARGO_TARGET_DIR="${LAYERFOLD_CUDA_TARGET:-$HOME/.cache/layerfold/cuda-target}"
  build=(--release --target x86_64-unknown-linux-gnu)
  # The executables cargo reports for: the kernels' unit tests, core's tests/cuda.rs, the harness.
  stage="$(mktemp -d)"
  cargo test "${build[@]}" -p layerfold-kernels -p layerfold-core --lib --test cuda --no-run \
    --features layerfold-kernels/cuda,layerfold-core/cuda \
    --message-format=json >"$stage/artifacts.json"
  cargo build "${build[@]}" -p layerfold-bench-kernels --features cuda --message-format=json >>"$stage/artifacts.json"
  python3 - "$stage" <<'EOF'
import json, shutil, subprocess, sys
names = {("layerfold_kernels", True): "kernels-tests", ("cuda", True): "core-cuda-tests",
         ("kernels", False): "kernels"}
found = {}
for line in open(f"{sys.argv[1]}/artifacts.json"):
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    key = (m["target"]["name"], m["profile"]["test"])
    if key in names:
        found[names[key]] = m["executable"]
for name in names.values():
    if name not in found:
        sys.exit(f"device-run: cargo built no {name}")
    subprocess.run(["strip", "-o", f"{sys.argv[1]}/{name}", found[name]], check=True)
EOF
  rm "$stage/artifacts.json"
  mkdir -p "$stage/shared/models" "$stage/shared/data/text"
  cp -r "$shared/models/stories260K" "$stage/shared/models/"
  cp "$shared/data/text/wikitext2_valid_tokenized.txt" "$stage/shared/data/text/"
  mkdir -p "$dir"
  rm -f "$dir"/*
  tar -C "$stage" -cJf "$dir/device.tar.xz" .
  rm -rf "$stage"
  ls -la "$dir"
  ;;
run)
  out="${OUT:-$dir/results}"
  mkdir -p "$out"
  work="$(mktemp -d)"
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$dir/device.tar.xz" "$work"
  site="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  # PyTorch's CUDA 13 wheels: site-packages/nvidia/cu13/lib (none here: then the path stays as is).
  libs="$( (find "$site/nvidia" -maxdepth 3 -type d -name lib 2>/dev/null || true) | tr '\n' ':')"
  export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:-}"
  export LAYERFOLD_SHARED="$work/shared"
  status=0
  # Each step's output to the console and to `log`; a failure is remembered, and the rest still run.
  logged() { local log="$1"; shift; "$@" 2>&1 | tee -a "$log"; return "${PIPESTATUS[0]}"; }
  logged "$out/tests.txt" nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
  logged "$out/tests.txt" "$work/kernels-tests" --test-threads 1 --nocapture cuda || status=1
  logged "$out/tests.txt" "$work/core-cuda-tests" --test-threads 1 --nocapture || status=1
  logged "$out/kernels.txt" "$work/kernels" --out "$out" || status=1
  rm -rf "$work"
  exit $status
  ;;
*)
  echo "usage: bash benches/device-run.sh pack|run" >&2
  exit 2
  ;;
esac
