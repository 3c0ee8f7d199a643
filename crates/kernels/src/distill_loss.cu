// The distillation loss terms (METHODS.md §3.5), one block per row, f32 accumulation whatever the
// logits' dtype. Neither kernel writes a [n, V] probability tensor:
// - kl_div_fwd: τ²·KL(softmax(t/τ) ‖ softmax(s/τ)) per row in ONE read of both rows, with online
//   log-sum-exps for s and t and an online Σ exp(t/τ − m_t)·(t − s), rescaled as m_t grows; then
//   KL = W/(τ·S_t) + lse_s − lse_t (since Σ p_t = 1).
// - kl_div_bwd: ∂/∂s = τ·g·(softmax(s/τ) − softmax(t/τ)), two reads (log-sum-exps, then the write).
// - hidden_mse_fwd: ‖s − t‖² / max(‖t‖², min_norm) per row.
#include "common.cuh"

// Online Σ exp(t/τ − m)·(t − s) with m the running max of t/τ, paired with t's log-sum-exp.
struct Weighted {
  Lse t;
  float w;
};

__device__ __forceinline__ Weighted weighted_merge(Weighted a, Weighted b) {
  if (a.t.m == -INFINITY) return b;
  if (b.t.m == -INFINITY) return a;
  const float m = fmaxf(a.t.m, b.t.m);
  const float ea = expf(a.t.m - m), eb = expf(b.t.m - m);
  return {{m, a.t.s * ea + b.t.s * eb}, a.w * ea + b.w * eb};
}

template <typename T>
__device__ void kl_fwd(const T *__restrict__ s, // [n, V] student logits
                       const T *__restrict__ t, // [n, V] teacher logits
                       float *__restrict__ out, // [n]
                       int vocab, float inv_tau, float tau) {
  __shared__ float scratch[3 * 32];
  const size_t row = (size_t)blockIdx.x * vocab;
  Lse ls = lse_empty();
  Weighted wt = {lse_empty(), 0.f};
  for (int v = threadIdx.x; v < vocab; v += blockDim.x) {
    const float a = to_f32(s[row + v]), b = to_f32(t[row + v]);
    ls = lse_push(ls, a * inv_tau);
    const float x = b * inv_tau;
    if (x <= wt.t.m) {
      const float e = expf(x - wt.t.m);
      wt = {{wt.t.m, wt.t.s + e}, wt.w + e * (b - a)};
    } else {
      const float e = expf(wt.t.m - x);
      wt = {{x, wt.t.s * e + 1.f}, wt.w * e + (b - a)};
    }
  }
  // Warp, then block reductions of (ls) and (wt).
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    ls = lse_merge(ls, {__shfl_xor_sync(0xffffffff, ls.m, offset), __shfl_xor_sync(0xffffffff, ls.s, offset)});
    Weighted o = {{__shfl_xor_sync(0xffffffff, wt.t.m, offset), __shfl_xor_sync(0xffffffff, wt.t.s, offset)},
                  __shfl_xor_sync(0xffffffff, wt.w, offset)};
    wt = weighted_merge(wt, o);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  __shared__ float scratch_s[2 * 32];
  if (lane == 0) {
    scratch_s[2 * warp] = ls.m;
    scratch_s[2 * warp + 1] = ls.s;
    scratch[3 * warp] = wt.t.m;
    scratch[3 * warp + 1] = wt.t.s;
    scratch[3 * warp + 2] = wt.w;
  }
  __syncthreads();
  if (warp != 0) return;
  ls = lane < warps ? Lse{scratch_s[2 * lane], scratch_s[2 * lane + 1]} : lse_empty();
  wt = lane < warps ? Weighted{{scratch[3 * lane], scratch[3 * lane + 1]}, scratch[3 * lane + 2]}
                    : Weighted{lse_empty(), 0.f};
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    ls = lse_merge(ls, {__shfl_xor_sync(0xffffffff, ls.m, offset), __shfl_xor_sync(0xffffffff, ls.s, offset)});
    Weighted o = {{__shfl_xor_sync(0xffffffff, wt.t.m, offset), __shfl_xor_sync(0xffffffff, wt.t.s, offset)},
                  __shfl_xor_sync(0xffffffff, wt.w, offset)};
    wt = weighted_merge(wt, o);
  }
  if (lane == 0) {
    const float lse_s = ls.m + logf(ls.s), lse_t = wt.t.m + logf(wt.t.s);
    const float kl = wt.w / wt.t.s * inv_tau + lse_s - lse_t;
    // Rounding can leave a tiny negative value where the distributions are equal.
    out[blockIdx.x] = tau * tau * fmaxf(kl, 0.f);
  }
}

template <typename T>
__device__ void kl_bwd(const T *__restrict__ s, // [n, V]
                       const T *__restrict__ t, // [n, V]
                       const float *__restrict__ g, // [n] gradient of each row's loss
                       T *__restrict__ out, // [n, V] ∂/∂s
                       int vocab, float inv_tau, float tau) {
  __shared__ float scratch[2 * 32];
  const size_t row = (size_t)blockIdx.x * vocab;
  Lse ls = lse_empty(), lt = lse_empty();
  for (int v = threadIdx.x; v < vocab; v += blockDim.x) {
    ls = lse_push(ls, to_f32(s[row + v]) * inv_tau);
    lt = lse_push(lt, to_f32(t[row + v]) * inv_tau);
  }
  const float lse_s = block_lse(ls, scratch);
  const float lse_t = block_lse(lt, scratch);
  const float scale = tau * g[blockIdx.x];
  for (int v = threadIdx.x; v < vocab; v += blockDim.x) {
    const float ps = expf(to_f32(s[row + v]) * inv_tau - lse_s);
    const float pt = expf(to_f32(t[row + v]) * inv_tau - lse_t);
    out[row + v] = from_f32<T>(scale * (ps - pt));
  }
}

template <typename T>
__device__ void mse_fwd(const T *__restrict__ s, // [n, d]
                        const T *__restrict__ t, // [n, d]
                        float *__restrict__ out, // [n]
                        int d, float min_norm) {
  __shared__ float scratch[32];
  const size_t row = (size_t)blockIdx.x * d;
  float diff = 0.f, norm = 0.f;
  for (int k = threadIdx.x; k < d; k += blockDim.x) {
    const float a = to_f32(s[row + k]), b = to_f32(t[row + k]);
    diff += (a - b) * (a - b);
    norm += b * b;
  }
  diff = block_sum(diff, scratch);
  norm = block_sum(norm, scratch);
  if (threadIdx.x == 0) out[blockIdx.x] = diff / fmaxf(norm, min_norm);
}

#define DISTILL(NAME, T)                                                                               \
  extern "C" __global__ void kl_div_fwd_##NAME(const T *s, const T *t, float *out, int vocab, float inv_tau, \
                                               float tau) {                                           \
    kl_fwd<T>(s, t, out, vocab, inv_tau, tau);                                                         \
  }                                                                                                    \
  extern "C" __global__ void kl_div_bwd_##NAME(const T *s, const T *t, const float *g, T *out, int vocab,   \
                                               float inv_tau, float tau) {                            \
    kl_bwd<T>(s, t, g, out, vocab, inv_tau, tau);                                                      \
  }                                                                                                    \
  extern "C" __global__ void hidden_mse_fwd_##NAME(const T *s, const T *t, float *out, int d, float min_norm) { \
    mse_fwd<T>(s, t, out, d, min_norm);                                                                \
  }

DISTILL(f32, float)
DISTILL(f16, __half)
DISTILL(bf16, __nv_bfloat16)
