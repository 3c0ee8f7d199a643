// Helpers shared by layerfold's kernels: dtype conversion to the f32 accumulator, aligned vector
// loads, and warp/block reductions.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);
}

// VEC consecutive elements, aligned so that one load instruction moves them (ld.global.v2/v4).
// Callers guarantee alignment: the host takes VEC = 1 when a row's length or offset is not a
// multiple of VEC.
template <typename T, int VEC> struct __align__(sizeof(T) * VEC) Pack {
  T v[VEC];
};

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffff, x, offset);
  return x;
}

// Sum over the block; every thread gets the result. `scratch` holds one float per warp.
__device__ __forceinline__ float block_sum(float x, float *scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  x = warp_sum(x);
  __syncthreads(); // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  x = lane < warps ? scratch[lane] : 0.f;
  return warp_sum(x);
}

// A running log-sum-exp: max m and sum s of exp(x - m). Merging two is exact up to rounding.
struct Lse {
  float m, s;
};

__device__ __forceinline__ Lse lse_empty() { return {-INFINITY, 0.f}; }

__device__ __forceinline__ Lse lse_push(Lse a, float x) {
  if (x <= a.m) return {a.m, a.s + expf(x - a.m)};
  return {x, a.s * expf(a.m - x) + 1.f};
}

__device__ __forceinline__ Lse lse_merge(Lse a, Lse b) {
  if (a.m == -INFINITY) return b;
  if (b.m == -INFINITY) return a;
  const float m = fmaxf(a.m, b.m);
  return {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}

__device__ __forceinline__ Lse warp_lse(Lse a) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    Lse b = {__shfl_xor_sync(0xffffffff, a.m, offset), __shfl_xor_sync(0xffffffff, a.s, offset)};
    a = lse_merge(a, b);
  }
  return a;
}

// Log-sum-exp over the block; every thread gets log(Σ exp). `scratch` holds two floats per warp.
__device__ __forceinline__ float block_lse(Lse a, float *scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  a = warp_lse(a);
  __syncthreads();
  if (lane == 0) {
    scratch[2 * warp] = a.m;
    scratch[2 * warp + 1] = a.s;
  }
  __syncthreads();
  a = lane < warps ? Lse{scratch[2 * lane], scratch[2 * lane + 1]} : lse_empty();
  a = warp_lse(a);
  return a.m + logf(a.s);
}
