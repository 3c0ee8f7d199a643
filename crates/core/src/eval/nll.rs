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
    let flat = h.reshape((b * s, d))?;
    let mut sum = 0f64;
    for (chunk_rows, chunk_targets) in rows.chunks(LOGIT_ROWS).zip(targets.chunks(LOGIT_ROWS)) {
        let index = Tensor::new(chunk_rows, h.device())?;
        let targets = Tensor::new(chunk_targets, h.device())?;
        let (nll, _) = layerfold_kernels::head_nll(
            &flat.index_select(&index, 0)?,
            lm.lm_head_weight(),
            &targets,
        )?;
        sum += nll.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
    }
    Ok((sum, rows.len()))
}
