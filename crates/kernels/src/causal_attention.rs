//! `causal-attention`: `softmax(q kᵀ / √d_h + causal mask) v` with grouped KV heads, in one op.
//!
//! Queries `q` `[b, n_q, s, d_h]` sit at positions `offset..offset + s`; keys and values `k`, `v`
//! `[b, n_kv, offset + s, d_h]` at positions from 0; query head `h` reads KV head `h / G` (HF's
//! layout, `G = n_q / n_kv`). Key `j` is visible from query `i` when `j ≤ i` and `i − j < window`.
//!
//! On the CPU (f32) each task takes a block of [`QUERY_BLOCK`] queries of one sequence and, one KV
//! head at a time, multiplies its `G` query heads by the keys up to the block's last visible one
//! into a scratch tile, exponentiates it there (the scale folded into the exponent, the mask
//! applied), multiplies by the values straight into the output rows, and divides those `d_h`
//! outputs by each row's sum rather than the tile's weights. The task owns its rows whole: the
//! output is laid out `[b, s, n_q, d_h]` and returned as a `[b, n_q, s, d_h]` view, so joining the
//! heads for `o_proj` copies nothing. The tile stays in cache, no `s × s` or per-block score tensor
//! is allocated, and the two products are sequential `sgemm`s ([`crate::blas`]) spread over rayon's
//! threads by task, where candle's batched matmul ran one small product after another.
//! [`causal_attention_slow`] is the composed definition (candle ops, differentiable): other devices
//! and dtypes, training, and the tests.

use candle_core::{CpuStorage, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use crate::blas;
use crate::cpu::{f32s, output_buffer};
use crate::vec_exp::{self, dispatch};

/// Queries per task: a `G · 64 × keys` f32 tile is 1.5 MB at 2048 keys and `G = 3`, within a
/// core's L2 on current server CPUs.
const QUERY_BLOCK: usize = 64;

/// Query positions per block of the composed definition: about half the full `s × s` product
/// (the causal part), and no `s × s` score matrix per head.
const SLOW_BLOCK: usize = 128;

struct CausalAttention {
    offset: usize,
    group: usize,
    window: Option<usize>,
}

/// Which keys a tile's rows see: row `r` is query position `first + r % q_len`; the tile's columns
/// are keys `key0..`; keys further back than `window` are invisible.
#[derive(Clone, Copy)]
struct Visible {
    q_len: usize,
    first: usize,
    key0: usize,
    window: usize,
}

dispatch! {
    // Each row of `tile` (`width` keys) becomes e^(scale · (score − max)) over its visible keys,
    // 0 elsewhere, and `inv_sums[r]` the inverse of row r's sum: the softmax's division is left
    // to the `d_h` outputs of the row (`scale_rows`) instead of its `width` weights.
    fn softmax_tile(
        tile: &mut [f32], inv_sums: &mut [f32], width: usize, vis: Visible, scale: f32
    ) {
        let Visible { q_len, first, key0, window } = vis;
        for (r, (row, inv)) in tile.chunks_exact_mut(width).zip(inv_sums.iter_mut()).enumerate() {
            let i = first + r % q_len;
            let hi = (i + 1).min(key0 + width) - key0;
            let lo = (i + 1).saturating_sub(window).max(key0).min(key0 + hi) - key0;
            let (before, rest) = row.split_at_mut(lo);
            let (visible, after) = rest.split_at_mut(hi - lo);
            before.fill(0.0);
            after.fill(0.0);
            *inv = 0.0;
            if visible.is_empty() {
                continue;
            }
            let m = vec_exp::max(visible);
            // scale > 0, so the largest scaled score is scale · m.
            *inv = 1.0 / vec_exp::exp_scaled_in_place(visible, scale, scale * m);
        }
    }
}

dispatch! {
    // Row r of `rows` (`len` rows of `d_h` at stride `stride`) times `inv_sums[r]`.
    fn scale_rows(rows: &mut [f32], stride: usize, d_h: usize, inv_sums: &[f32]) {
        for (r, &inv) in inv_sums.iter().enumerate() {
            for v in &mut rows[r * stride..r * stride + d_h] {
                *v *= inv;
            }
        }
    }
}

impl CausalAttention {
    /// The output in `[b, s, n_q, d_h]` order (what `o_proj` reads once the heads are joined), so
    /// that each task owns whole output rows.
    fn cpu(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        (b, nq, s, dh): (usize, usize, usize, usize),
        keys: usize,
    ) -> Vec<f32> {
        let (g, nkv) = (self.group, nq / self.group);
        let window = self.window.unwrap_or(usize::MAX);
        let scale = 1.0 / (dh as f32).sqrt();
        let row = nq * dh;
        // Every element written: each (sequence, query block) task writes all heads of its rows.
        let mut out = output_buffer(b * s * row);
        if out.is_empty() {
            return out;
        }
        let tasks: Vec<(usize, usize, &mut [f32])> = out
            .chunks_mut(s * row)
            .enumerate()
            .flat_map(|(bi, seq)| {
                seq.chunks_mut(QUERY_BLOCK * row)
                    .enumerate()
                    .map(move |(blk, rows)| (bi, blk, rows))
            })
            .collect();
        let scratch = || (Vec::new(), Vec::new());
        tasks.into_par_iter().for_each_init(scratch, |(tile, inv_sums), (bi, blk, dst)| {
            let (q0, len) = (blk * QUERY_BLOCK, dst.len() / row);
            // Keys visible from some query of the block: from the first one's window start to the
            // last one's position.
            let first = self.offset + q0;
            let key0 = (first + 1).saturating_sub(window);
            let end = self.offset + q0 + len;
            let width = end - key0;
            let vis = Visible { q_len: len, first, key0, window };
            tile.resize(g * len * width, 0.0);
            inv_sums.resize(g * len, 0.0);
            for kvh in 0..nkv {
                let kv_base = (bi * nkv + kvh) * keys * dh + key0 * dh;
                let (kb, vb) =
                    (&k[kv_base..kv_base + width * dh], &v[kv_base..kv_base + width * dh]);
                for j in 0..g {
                    let qo = ((bi * nq + kvh * g + j) * s + q0) * dh;
                    let rows = &mut tile[j * len * width..(j + 1) * len * width];
                    blas::sgemm(
                        (len, width, dh),
                        &q[qo..qo + len * dh],
                        dh,
                        kb,
                        dh,
                        true,
                        rows,
                        width,
                        0.0,
                    );
                }
                softmax_tile(tile, inv_sums, width, vis, scale);
                for j in 0..g {
                    // Head kvh·G + j's columns of the task's rows, at the output's row stride.
                    let dst = &mut dst[(kvh * g + j) * dh..];
                    let p = &tile[j * len * width..(j + 1) * len * width];
                    blas::sgemm((len, dh, width), p, width, vb, dh, false, dst, row, 0.0);
                    scale_rows(dst, row, dh, &inv_sums[j * len..(j + 1) * len]);
                }
            }
        });
        out
    }
}

impl candle_core::CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "causal-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (q, k, v) = (f32s(op, "q", s1, l1)?, f32s(op, "k", s2, l2)?, f32s(op, "v", s3, l3)?);
        let dims = l1.shape().dims4()?;
        let keys = l2.shape().dims4()?.2;
        let (b, nq, s, dh) = dims;
        let out = self.cpu(q, k, v, dims, keys);
        Ok((CpuStorage::F32(out), Shape::from((b, s, nq, dh))))
    }
}

/// Checks the shapes; returns `(b, n_q, s, d_h)`.
fn check(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    offset: usize,
    group: usize,
) -> Result<(usize, usize, usize, usize)> {
    let (b, nq, s, dh) = q.dims4()?;
    if group == 0 || !nq.is_multiple_of(group) {
        candle_core::bail!("causal-attention: {nq} query heads do not form groups of {group}")
    }
    let want = [b, nq / group, offset + s, dh];
    if k.dims() != want || v.dims() != want {
        candle_core::bail!(
            "causal-attention: q {:?} (offset {offset}, group {group}) needs k and v {want:?}, got {:?} and {:?}",
            q.shape(),
            k.shape(),
            v.shape()
        )
    }
    Ok((b, nq, s, dh))
}

/// Causal attention of `q` (`[b, n_q, s, d_h]`, positions `offset..offset + s`) over `k`, `v`
/// (`[b, n_kv, offset + s, d_h]`), `group` query heads per KV head, keys further back than
/// `window` invisible: `[b, n_q, s, d_h]`. The fused op on f32 CPU tensors, the composed definition
/// elsewhere. No backward pass: training uses [`causal_attention_slow`].
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    offset: usize,
    group: usize,
    window: Option<usize>,
) -> Result<Tensor> {
    check(q, k, v, offset, group)?;
    let f32s = [q, k, v].iter().all(|t| t.dtype() == DType::F32);
    if q.device().is_cpu() && f32s {
        let op = CausalAttention { offset, group, window };
        // The op writes `[b, s, n_q, d_h]`; the view puts the heads first, and joining them again
        // (`transpose(1, 2)` then reshape, as the decoder does) copies nothing.
        q.contiguous()?.apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)?.transpose(1, 2)
    } else {
        causal_attention_slow(q, k, v, offset, group, window)
    }
}

/// The composed definition, in blocks of [`SLOW_BLOCK`] queries: scaled `q kᵀ` in f32, the masked
/// softmax of [`causal_softmax_slow`], then `· v`. Differentiable.
pub fn causal_attention_slow(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    offset: usize,
    group: usize,
    window: Option<usize>,
) -> Result<Tensor> {
    let (b, nq, s, dh) = check(q, k, v, offset, group)?;
    let nkv = nq / group;
    // Query head h reads KV head h / G, so the G query heads of one KV head are adjacent: viewing
    // queries as [b, n_kv, G·s, d_h] shares K and V without copying them.
    let q = (q * (1.0 / (dh as f64).sqrt()))?;
    let mut blocks = Vec::with_capacity(s.div_ceil(SLOW_BLOCK));
    for start in (0..s).step_by(SLOW_BLOCK) {
        let len = SLOW_BLOCK.min(s - start);
        let keys = offset + start + len;
        let q_blk = q.narrow(2, start, len)?.contiguous()?.reshape((b, nkv, group * len, dh))?;
        let (k_blk, v_blk) = (k.narrow(2, 0, keys)?, v.narrow(2, 0, keys)?);
        let scores = q_blk.contiguous()?.matmul(&k_blk.t()?)?; // [b, n_kv, G·len, keys]
        let scores = scores.to_dtype(DType::F32)?.reshape((b, nkv, group, len, keys))?;
        let probs = causal_softmax_slow(&scores, offset + start, window)?;
        let probs = probs.to_dtype(v.dtype())?.reshape((b, nkv, group * len, keys))?;
        blocks.push(probs.matmul(&v_blk.contiguous()?)?.reshape((b, nq, len, dh))?);
    }
    Tensor::cat(&blocks, 2)
}

/// The masked softmax of scores `[.., q_len, end]` (f32) for queries from position `q_start`:
/// add a −∞ mask, subtract the row maximum, exponentiate, normalise. Differentiable.
fn causal_softmax_slow(scores: &Tensor, q_start: usize, window: Option<usize>) -> Result<Tensor> {
    let (q_len, end) = (scores.dim(D::Minus2)?, scores.dim(D::Minus1)?);
    let window = window.unwrap_or(usize::MAX);
    let mask: Vec<f32> = (0..q_len)
        .flat_map(|r| {
            let i = q_start + r;
            (0..end).map(move |j| if j <= i && i - j < window { 0.0 } else { f32::NEG_INFINITY })
        })
        .collect();
    let mask = Tensor::from_vec(mask, (q_len, end), scores.device())?;
    let x = scores.broadcast_add(&mask)?;
    // The shift only guards exp's range: no gradient flows through it.
    let x = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?.exp()?;
    x.broadcast_div(&x.sum_keepdim(D::Minus1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{assert_close, uniform};
    use candle_core::Device;

    #[test]
    fn matches_composed_definition() {
        // Query counts that are not multiples of the block, an offset (a cached prefix), a sliding
        // window narrower than a block, one query, GQA groups of 1, 3 and 4.
        for (b, nkv, g, s, offset, dh, window) in [
            (1, 3, 3, 130, 0, 64, None),
            (2, 2, 4, 70, 0, 16, None),
            (1, 1, 1, 1, 0, 8, None),
            (1, 2, 2, 37, 29, 12, None),
            (2, 1, 3, 150, 11, 8, Some(20)),
            (1, 2, 1, 5, 200, 4, Some(3)),
        ] {
            let d = &Device::Cpu;
            let q = uniform(&[b, nkv * g, s, dh], 2.0, 1, d);
            let k = uniform(&[b, nkv, offset + s, dh], 2.0, 2, d);
            let v = uniform(&[b, nkv, offset + s, dh], 1.0, 3, d);
            let got = causal_attention(&q, &k, &v, offset, g, window).unwrap();
            let want = causal_attention_slow(&q, &k, &v, offset, g, window).unwrap();
            let what = format!(
                "b {b}, n_kv {nkv}, G {g}, s {s}, offset {offset}, d_h {dh}, window {window:?}"
            );
            assert_close(&got, &want, 1e-5, 1e-6, &what);
        }
    }

    #[test]
    fn strided_keys_and_values_are_read_as_their_values() {
        // k and v narrowed out of a longer cache: not contiguous.
        let d = &Device::Cpu;
        let q = uniform(&[1, 4, 9, 8], 1.0, 4, d);
        let kv = uniform(&[1, 2, 20, 8], 1.0, 5, d);
        let (k, v) = (kv.narrow(2, 3, 9).unwrap(), kv.narrow(2, 5, 9).unwrap());
        assert!(!k.is_contiguous());
        let got = causal_attention(&q, &k, &v, 0, 2, None).unwrap();
        let want = causal_attention_slow(&q, &k, &v, 0, 2, None).unwrap();
        assert_close(&got, &want, 1e-5, 1e-6, "strided k, v");
    }

    #[test]
    fn rejects_shapes_that_do_not_fit() {
        let d = &Device::Cpu;
        let q = uniform(&[1, 4, 9, 8], 1.0, 1, d);
        let k = uniform(&[1, 2, 9, 8], 1.0, 2, d);
        let err = causal_attention(&q, &k, &k, 0, 3, None).unwrap_err().to_string();
        assert!(err.contains("groups of 3"), "{err}");
        let err = causal_attention(&q, &k, &k, 1, 2, None).unwrap_err().to_string();
        assert!(err.contains("needs k and v"), "{err}");
    }
}
