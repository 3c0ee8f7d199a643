// Activation intensity (METHODS.md §2.5): per-channel Σ_t w_t·|x[t, c]| over the tokens of a batch
// `x: [n, c]`, with token weights `w: [n]` (1 real, 0 padding; null for all real), in f32
// whatever x's dtype. The same op with no weights gives a weight matrix's column L1 norms
// ‖W[:, c]‖₁ (W is [out, in]: its rows are the "tokens").
//
// Two launches, so that the sum is deterministic (no float atomics): `act_intensity_partial`
// has each block sum `rows_per_block` rows for `blockDim.x · VEC` columns into one row of
// `partial: [row_blocks, c]`; `act_intensity_reduce` sums those rows. Threads run along the
// channels, so every load is coalesced; each thread loads VEC channels at once.
#include "common.cuh"

template <typename T, int VEC>
__device__ void partial(const T *__restrict__ x, // [n, c]
                        const float *__restrict__ w, // [n] or null
                        float *__restrict__ out, // [ceil(n / rows_per_block), c]
                        int n, int c, int rows_per_block) {
  const int col = (blockIdx.x * blockDim.x + threadIdx.x) * VEC;
  if (col >= c) return;
  const int r0 = blockIdx.y * rows_per_block;
  const int r1 = min(n, r0 + rows_per_block);
  float acc[VEC];
#pragma unroll
  for (int k = 0; k < VEC; ++k) acc[k] = 0.f;
  for (int r = r0; r < r1; ++r) {
    const float wr = w ? w[r] : 1.f;
    if (wr == 0.f) continue; // padding: skip the load
    const Pack<T, VEC> p = *reinterpret_cast<const Pack<T, VEC> *>(x + (size_t)r * c + col);
#pragma unroll
    for (int k = 0; k < VEC; ++k) acc[k] += wr * fabsf(to_f32(p.v[k]));
  }
#pragma unroll
  for (int k = 0; k < VEC; ++k) out[(size_t)blockIdx.y * c + col + k] = acc[k];
}

// Sums `partial: [row_blocks, c]` over its rows into `out: [c]`, in row order.
extern "C" __global__ void act_intensity_reduce(const float *__restrict__ partial, float *__restrict__ out,
                                                int row_blocks, int c) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= c) return;
  float acc = 0.f;
  for (int b = 0; b < row_blocks; ++b) acc += partial[(size_t)b * c + col];
  out[col] = acc;
}

#define ACT_INTENSITY(NAME, T, VEC)                                                                    \
  extern "C" __global__ void act_intensity_##NAME##_v##VEC(const T *x, const float *w, float *out, int n, \
                                                           int c, int rows_per_block) {                \
    partial<T, VEC>(x, w, out, n, c, rows_per_block);                                                  \
  }

ACT_INTENSITY(f32, float, 1)
ACT_INTENSITY(f32, float, 2)
ACT_INTENSITY(f32, float, 4)
ACT_INTENSITY(f16, __half, 1)
ACT_INTENSITY(f16, __half, 2)
ACT_INTENSITY(f16, __half, 4)
ACT_INTENSITY(f16, __half, 8)
ACT_INTENSITY(bf16, __nv_bfloat16, 1)
ACT_INTENSITY(bf16, __nv_bfloat16, 2)
ACT_INTENSITY(bf16, __nv_bfloat16, 4)
ACT_INTENSITY(bf16, __nv_bfloat16, 8)
