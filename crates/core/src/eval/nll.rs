//! Next-token negative log-likelihood of a batch from its final states: the shared core of
//! perplexity (METHODS.md §4.1), SLEB's calibration loss (§3.1) and CoMe-P's (§3.4).

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::model::decoder::{CausalLm, TokenBatch};

/// Rows scored at once: where the logits are materialised (other devices than the CPU, the
/// distillation loss), `[LOGIT_ROWS, vocab]` f32.
pub(crate) const LOGIT_ROWS: usize = 512;

/// `(Σ NLL, count)` over every real position that has a next token, from `ĥ` (`[b, s, d]`).
pub fn nll_sum(lm: &CausalLm, h: &Tensor, batch: &TokenBatch) -> Result<(f64, usize)> {
    let (b, s, d) = h.dims3()?;
    let ids = batch.ids.to_vec2::<u32>()?;
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (r, &len) in batch.lengths.iter().enumerate() {
        for p in 0..len.saturating_sub(1) {
            rows.push((r * s + p) as u32);
            targets.push(ids[r][p + 1]);
        }
    }
    let (nll, _) = head_nll_at(lm, &h.reshape((b * s, d))?, &rows, &targets)?;
    Ok((nll.iter().map(|&l| l as f64).sum(), rows.len()))
}

/// At each row `rows[k]` of `h` (`[N, d]` final states): the NLL of `targets[k]` and the argmax
/// token, [`LOGIT_ROWS`] rows at a time.
pub(crate) fn head_nll_at(
    lm: &CausalLm,
    h: &Tensor,
    rows: &[u32],
    targets: &[u32],
) -> Result<(Vec<f32>, Vec<u32>)> {
    let device = h.device();
    let (mut nll, mut argmax) = (Vec::with_capacity(rows.len()), Vec::with_capacity(rows.len()));
    for (r, t) in rows.chunks(LOGIT_ROWS).zip(targets.chunks(LOGIT_ROWS)) {
        let states = h.index_select(&Tensor::new(r, device)?, 0)?;
        let (l, best) =
            layerfold_kernels::head_nll(&states, lm.lm_head_weight(), &Tensor::new(t, device)?)?;
        nll.extend(l.to_dtype(DType::F32)?.to_vec1::<f32>()?);
        argmax.extend(best.to_vec1::<u32>()?);
    }
    Ok((nll, argmax))
}
