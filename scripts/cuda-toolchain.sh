#!/usr/bin/env bash
# The CUDA build environment from PyPI wheels (../shared/docs/TOOLCHAIN.md §3), for machines with no
# CUDA toolkit and no GPU. Source it: `source scripts/cuda-toolchain.sh` exports PATH (nvcc),
# CUDA_COMPUTE_CAP and CUDA_ROOT. Idempotent: the first run makes, under $LAYERFOLD_CUDA_HOME
# (default ~/.cache/layerfold/cuda-13.0),
#   - a venv with the CUDA 13.0 compiler, headers (cccl: candle's kernels use cub) and the runtime,
#     cuBLAS, cuRAND and NVRTC wheels (13.0 matches driver 580; 13.5's PTX is too new for it, and
#     cudarc 0.19's build script refuses nvcc 13.5);
#   - root/lib: unversioned links to the wheels' libraries, which the linker wants and the wheels
#     lack, and a stub libcuda.so (soname libcuda.so.1) for linking only; the driver's own
#     libcuda.so.1 is the one loaded at run time.
# The addon it builds needs libcuda.so.1, libcublas.so.13, libcurand.so.10 and libcudart.so.13 at
# load time: on a GPU machine put the toolkit's or the wheels' lib folder on LD_LIBRARY_PATH.

LAYERFOLD_CUDA_HOME="${LAYERFOLD_CUDA_HOME:-$HOME/.cache/layerfold/cuda-13.0}"
_lf_wheels=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-cuda-runtime==13.0.96
  nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
  nvidia-cuda-nvrtc==13.0.88)

if [ ! -x "$LAYERFOLD_CUDA_HOME/bin/python" ]; then
  python3 -m venv "$LAYERFOLD_CUDA_HOME"
fi
_lf_cu="$("$LAYERFOLD_CUDA_HOME/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13"
if [ ! -x "$_lf_cu/bin/nvcc" ] || [ ! -f "$_lf_cu/lib/libcublas.so.13" ]; then
  echo "cuda-toolchain: installing the CUDA 13.0 wheels into $LAYERFOLD_CUDA_HOME" >&2
  "$LAYERFOLD_CUDA_HOME/bin/pip" install --quiet --disable-pip-version-check "${_lf_wheels[@]}"
fi

_lf_root="$LAYERFOLD_CUDA_HOME/root"
if [ ! -f "$_lf_root/lib/stubs/libcuda.so" ]; then
  mkdir -p "$_lf_root/lib/stubs"
  for _lf_lib in cudart.so.13 cublas.so.13 cublasLt.so.13 nvrtc.so.13 curand.so.10; do
    ln -sf "$_lf_cu/lib/lib$_lf_lib" "$_lf_root/lib/lib${_lf_lib%.so.*}.so"
  done
  # The driver API symbols cudarc loads, each a stub returning CUDA_ERROR_NOT_INITIALIZED (3).
  # cargo unpacks only the crates a build needs, and the CPU build never needs cudarc: fetch the
  # whole lockfile first. (A glob that matches nothing must not fail here: under `set -e -o
  # pipefail` ls's exit code 2 ended CI's CUDA step without a word.)
  cargo fetch --manifest-path "$(dirname "${BASH_SOURCE[0]}")/../Cargo.toml" >&2
  _lf_cudarc="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* 2>/dev/null | tail -1 || true)"
  if [ -z "$_lf_cudarc" ]; then
    echo "cuda-toolchain: cudarc's source is not in the cargo registry: run \`cargo fetch\` first" >&2
    return 1 2>/dev/null || exit 1
  fi
  grep -ohP 'load::<_F>\("\K\w+' "$_lf_cudarc/src/driver/sys/mod.rs" | sort -u |
    awk '{print "int " $1 "(void) { return 3; }"}' > "$_lf_root/lib/stubs/libcuda.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$_lf_root/lib/stubs/libcuda.so" "$_lf_root/lib/stubs/libcuda.c"
fi

export PATH="$_lf_cu/bin:$PATH"
export CUDA_ROOT="$_lf_root"
# sm_90: H100/H200. candle-kernels builds its SASS for this capability only.
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export LAYERFOLD_CUDA_LIB="$_lf_cu/lib"
unset _lf_wheels _lf_cu _lf_root _lf_lib _lf_cudarc
