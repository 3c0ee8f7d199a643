// Concatenated-layer construction (METHODS.md §3.4): the rows or columns of two layers' weight
// matrices picked by one index list, in one launch per matrix. Index i < rows_a (cols_a) picks
// from `a`, otherwise row (column) i - rows_a (i - cols_a) of `b`, so the kept channels of layer a
// and then of layer b come out side by side. A pure copy: the kernels move bits, and the dtype
// only sets the element width.
#include "common.cuh"

// out[i, :] = (idx[i] < rows_a ? a[idx[i], :] : b[idx[i] - rows_a, :]). Grid: (column tiles, m).
template <typename T, int VEC>
__device__ void rows(const T *__restrict__ a, // [rows_a, k]
                     const T *__restrict__ b, // [rows_b, k]
                     const uint32_t *__restrict__ idx, // [m]
                     T *__restrict__ out, // [m, k]
                     int rows_a, int k) {
  const int col = (blockIdx.x * blockDim.x + threadIdx.x) * VEC;
  if (col >= k) return;
  const uint32_t i = idx[blockIdx.y];
  const T *src = i < (uint32_t)rows_a ? a + (size_t)i * k : b + (size_t)(i - rows_a) * k;
  *reinterpret_cast<Pack<T, VEC> *>(out + (size_t)blockIdx.y * k + col) =
      *reinterpret_cast<const Pack<T, VEC> *>(src + col);
}

// out[r, j] = (idx[j] < cols_a ? a[r, idx[j]] : b[r, idx[j] - cols_a]). Grid: (column tiles,
// row tiles); each thread writes `rows_per_thread` rows of one output column, so the index is read
// once per thread and the writes are coalesced.
template <typename T>
__device__ void cols(const T *__restrict__ a, // [r, cols_a]
                     const T *__restrict__ b, // [r, cols_b]
                     const uint32_t *__restrict__ idx, // [m]
                     T *__restrict__ out, // [r, m]
                     int r, int cols_a, int cols_b, int m, int rows_per_thread) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= m) return;
  const uint32_t i = idx[j];
  const bool from_a = i < (uint32_t)cols_a;
  const T *src = from_a ? a + i : b + (i - cols_a);
  const size_t stride = from_a ? cols_a : cols_b;
  const int r0 = blockIdx.y * rows_per_thread, r1 = min(r, r0 + rows_per_thread);
  for (int row = r0; row < r1; ++row) out[(size_t)row * m + j] = src[row * stride];
}

#define CONCAT(NAME, T)                                                                               \
  extern "C" __global__ void concat_rows_##NAME##_v1(const T *a, const T *b, const uint32_t *idx, T *out, \
                                                     int rows_a, int k) {                            \
    rows<T, 1>(a, b, idx, out, rows_a, k);                                                           \
  }                                                                                                   \
  extern "C" __global__ void concat_rows_##NAME##_v2(const T *a, const T *b, const uint32_t *idx, T *out, \
                                                     int rows_a, int k) {                            \
    rows<T, 2>(a, b, idx, out, rows_a, k);                                                           \
  }                                                                                                   \
  extern "C" __global__ void concat_rows_##NAME##_v4(const T *a, const T *b, const uint32_t *idx, T *out, \
                                                     int rows_a, int k) {                            \
    rows<T, 4>(a, b, idx, out, rows_a, k);                                                           \
  }                                                                                                   \
  extern "C" __global__ void concat_cols_##NAME(const T *a, const T *b, const uint32_t *idx, T *out, int r, \
                                                int cols_a, int cols_b, int m, int rows_per_thread) { \
    cols<T>(a, b, idx, out, r, cols_a, cols_b, m, rows_per_thread);                                   \
  }

CONCAT(f32, float)
CONCAT(f16, __half)
CONCAT(bf16, __nv_bfloat16)
