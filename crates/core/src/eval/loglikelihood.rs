//! `loglik(continuation | context)` as lm-evaluation-harness 0.4 computes it for a causal model
//! (`api/model.py` `_encode_pair`, `models/huggingface.py` `_loglikelihood_tokens`; METHODS.md
//! §4.2): trailing spaces of the context move to the continuation; the context and the whole
//! text are encoded with the tokenizer's own special tokens, and the continuation's tokens are
//! the whole's after the context's; the input is the last `max_length + 1` tokens minus the last
//! one; the log-probabilities of the continuation's tokens are summed, and it is greedy when every
//! one is the argmax.

use candle_core::{DType, IndexOp, Tensor, D};

use crate::context::{RunContext, Stage};
use crate::error::Result;
use crate::model::decoder::{NoObserver, TokenBatch};
use crate::model::tokenizer::TextTokenizer;
use crate::model::Model;

/// One encoded request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub context: Vec<u32>,
    pub continuation: Vec<u32>,
}

/// The score of one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// Σ log p(continuation token | everything before it), in nats.
    pub loglik: f64,
    /// Every continuation token is the argmax of its position.
    pub greedy: bool,
}

/// lm-eval's `_encode_pair` (and its empty-context case in `loglikelihood`, which conditions on
/// the BOS, else the EOS token).
pub fn encode_pair(tok: &TextTokenizer, context: &str, continuation: &str) -> Result<Request> {
    if context.is_empty() {
        let prefix = tok.bos_token_id.or(tok.eos_token_id).into_iter().collect();
        return Ok(Request { context: prefix, continuation: tok.encode_special(continuation)? });
    }
    // Python's `rstrip()`: Unicode whitespace.
    let trimmed = context.trim_end();
    let (context, continuation) = if trimmed.len() < context.len() {
        (trimmed.to_string(), format!("{}{continuation}", &context[trimmed.len()..]))
    } else {
        (context.to_string(), continuation.to_string())
    };
    let whole = tok.encode_special(&format!("{context}{continuation}"))?;
    let context_ids = tok.encode_special(&context)?;
    let continuation = whole.get(context_ids.len()..).unwrap_or_default().to_vec();
    Ok(Request { context: context_ids, continuation })
}

/// The model input of `r` and the positions whose next-token predictions score the continuation.
fn input(r: &Request, max_length: usize) -> (Vec<u32>, std::ops::Range<usize>) {
    let mut all: Vec<u32> = r.context.iter().chain(&r.continuation).copied().collect();
    let keep = all.len().min(max_length + 1);
    all.drain(..all.len() - keep);
    all.pop();
    let n = all.len();
    let scored = r.continuation.len().min(n);
    (all, n - scored..n)
}

/// Scores `requests` in batches of at most `batch_size`, longest first (lm-eval's order; results
/// come back in request order). Progress: one `eval` unit per request.
pub fn score(
    model: &Model,
    requests: &[Request],
    batch_size: usize,
    ctx: &RunContext,
    progress: (u64, u64),
) -> Result<Vec<Scored>> {
    let max_length = model.max_seq_len();
    let inputs: Vec<_> = requests.iter().map(|r| input(r, max_length)).collect();
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(inputs[i].0.len() + requests[i].continuation.len()));
    let mut out = vec![Scored { loglik: 0.0, greedy: true }; requests.len()];
    let check = || ctx.check_cancelled();
    let mut done = progress.0;
    for batch in order.chunks(batch_size.max(1)) {
        ctx.check_cancelled()?;
        let seqs: Vec<&[u32]> = batch.iter().map(|&i| inputs[i].0.as_slice()).collect();
        let tokens = TokenBatch::new(&seqs, 0, model.lm.device())?;
        let h = model.lm.forward(&model.config, &tokens, &mut NoObserver, &check)?;
        let s = tokens.seq_len();
        let flat = h.reshape((batch.len() * s, ()))?;
        for (row, &i) in batch.iter().enumerate() {
            let (_, positions) = &inputs[i];
            if positions.is_empty() {
                continue;
            }
            let targets =
                &requests[i].continuation[requests[i].continuation.len() - positions.len()..];
            let rows = flat.i(row * s + positions.start..row * s + positions.end)?;
            let logprobs = candle_nn::ops::log_softmax(&model.lm.logits(&rows)?, D::Minus1)?;
            let target_ids = Tensor::new(targets, logprobs.device())?.unsqueeze(1)?;
            let picked = logprobs.gather(&target_ids, 1)?.squeeze(1)?.to_dtype(DType::F64)?;
            let greedy = logprobs.argmax(D::Minus1)?.to_vec1::<u32>()?;
            out[i] = Scored {
                loglik: picked.to_vec1::<f64>()?.iter().sum(),
                greedy: greedy.as_slice() == targets,
            };
        }
        done += batch.len() as u64;
        ctx.report(Stage::Eval, done, progress.1);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_keeps_the_last_max_length_tokens() {
        let r = Request { context: vec![1, 2, 3, 4], continuation: vec![5, 6] };
        assert_eq!(input(&r, 100), (vec![1, 2, 3, 4, 5], 3..5));
        // lm-eval: (context + continuation)[-(max_length + 1):][:-1]
        assert_eq!(input(&r, 3), (vec![3, 4, 5], 1..3));
        assert_eq!(input(&r, 1), (vec![5], 0..1));
    }
}
