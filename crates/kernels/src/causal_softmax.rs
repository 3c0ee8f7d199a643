//! `causal-softmax`: softmax over attention scores with the causal (and sliding-window) mask
//! applied implicitly, in place.
//!
//! Scores `[.., q_len, end]` hold queries at positions `q_start..q_start + q_len` against keys
//! `0..end`. Key `j` is visible from query `i` when `j ≤ i` and `i − j < window`; invisible keys get
//! probability 0. Replaces "add a −∞ mask, then softmax": no mask tensor, no extra pass over the
//! scores, and a vectorised exp (`vec_exp.rs`). [`causal_softmax_slow`] is the composed definition
//! it is tested against.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Tensor, D};
use rayon::prelude::*;

use crate::vec_exp::{self, dispatch};

/// Rows per rayon task: enough work to amortise scheduling on wide rows.
const ROWS_PER_TASK: usize = 16;

struct CausalSoftmax {
    q_start: usize,
    window: Option<usize>,
}

dispatch! {
    fn softmax_rows(rows: &mut [f32], first_row: usize, q_len: usize, end: usize, q_start: usize, window: usize) {
        for (k, row) in rows.chunks_exact_mut(end).enumerate() {
            let i = q_start + (first_row + k) % q_len;
            let hi = (i + 1).min(end);
            let lo = (i + 1).saturating_sub(window).min(hi);
            let (before, rest) = row.split_at_mut(lo);
            let (visible, after) = rest.split_at_mut(hi - lo);
            before.fill(0.0);
            after.fill(0.0);
            if visible.is_empty() {
                continue;
            }
            let m = vec_exp::max(visible);
            let inv = 1.0 / vec_exp::exp_shift_in_place(visible, m);
            for v in visible.iter_mut() {
                *v *= inv;
            }
        }
    }
}

impl candle_core::InplaceOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!(
                "causal-softmax: only f32 scores are supported, got {:?}",
                storage.dtype()
            )
        };
        let Some((start, stop)) = layout.contiguous_offsets() else {
            candle_core::bail!("causal-softmax: scores must be contiguous")
        };
        let dims = layout.dims();
        let (q_len, end) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        let window = self.window.unwrap_or(usize::MAX);
        let q_start = self.q_start;
        data[start..stop].par_chunks_mut(end * ROWS_PER_TASK).enumerate().for_each(|(t, rows)| {
            softmax_rows(rows, t * ROWS_PER_TASK, q_len, end, q_start, window)
        });
        Ok(())
    }
}

fn check(scores: &Tensor) -> Result<()> {
    if scores.rank() < 2 {
        candle_core::bail!(
            "causal-softmax: scores need [.., q_len, keys], got {:?}",
            scores.shape()
        )
    }
    if scores.dtype() != DType::F32 {
        candle_core::bail!(
            "causal-softmax: only f32 scores are supported, got {:?}",
            scores.dtype()
        )
    }
    Ok(())
}

/// In place: `scores` (`[.., q_len, end]`, f32, contiguous, CPU) becomes the masked softmax of
/// itself for queries starting at position `q_start`.
pub fn causal_softmax_(scores: &Tensor, q_start: usize, window: Option<usize>) -> Result<()> {
    check(scores)?;
    if !scores.is_contiguous() {
        candle_core::bail!("causal-softmax: scores must be contiguous")
    }
    scores.inplace_op1(&CausalSoftmax { q_start, window })
}

/// The masked softmax of `scores` (`[.., q_len, end]`, f32) for queries starting at position
/// `q_start`: in place on the CPU, the composed definition elsewhere. No backward pass: training
/// uses [`causal_softmax_slow`].
pub fn causal_softmax(scores: Tensor, q_start: usize, window: Option<usize>) -> Result<Tensor> {
    if scores.device().is_cpu() && scores.is_contiguous() {
        causal_softmax_(&scores, q_start, window)?;
        Ok(scores)
    } else {
        causal_softmax_slow(&scores, q_start, window)
    }
}

/// The composed definition (differentiable): add a −∞ mask, subtract the row maximum, exponentiate, normalise.
pub fn causal_softmax_slow(
    scores: &Tensor,
    q_start: usize,
    window: Option<usize>,
) -> Result<Tensor> {
    check(scores)?;
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
    use candle_core::Device;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    #[test]
    fn matches_composed_definition() {
        // Sizes that are not multiples of the lane count or of the rows per task.
        for (q_start, q_len, end, window) in
            [(0, 7, 7, None), (5, 13, 18, None), (40, 33, 73, Some(9)), (0, 1, 1, None)]
        {
            let x = (Tensor::randn(0f32, 3.0, (2, 3, q_len, end), &Device::Cpu).unwrap())
                .contiguous()
                .unwrap();
            let want = causal_softmax_slow(&x, q_start, window).unwrap();
            causal_softmax_(&x, q_start, window).unwrap();
            let d = max_abs_diff(&x, &want);
            assert!(
                d < 1e-6,
                "max |Δ| {d:e} at q_start {q_start}, q_len {q_len}, end {end}, window {window:?}"
            );
        }
    }

    #[test]
    fn rejects_what_it_cannot_do() {
        let x = Tensor::zeros((4, 4), DType::F16, &Device::Cpu).unwrap();
        assert!(causal_softmax_(&x, 0, None).unwrap_err().to_string().contains("f32"));
        let t = Tensor::zeros((4, 6), DType::F32, &Device::Cpu).unwrap().t().unwrap();
        assert!(causal_softmax_(&t, 0, None).unwrap_err().to_string().contains("contiguous"));
    }
}
