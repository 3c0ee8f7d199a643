//! `loglik(continuation | context)` as lm-evaluation-harness 0.4 computes it for a causal model
//! (`api/model.py` `_encode_pair`, `models/huggingface.py` `_loglikelihood_tokens`; METHODS.md
//! §4.2): trailing spaces of the context move to the continuation; the context and the whole
//! text are encoded with the tokenizer's own special tokens, and the continuation's tokens are
//! the whole's after the context's; the input is the last `max_length + 1` tokens minus the last
//! one; the log-probabilities of the continuation's tokens are summed, and it is greedy when every
//! one is the argmax.

use std::ops::Range;

use candle_core::{DType, IndexOp, Tensor, D};

use crate::context::{RunContext, Stage};
use crate::error::Result;
use crate::model::decoder::TokenBatch;
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

/// Tokens one forward pass may hold (prefixes and continuations together).
const PASS_TOKENS: usize = 8192;

/// The length of the common prefix of `seqs`.
fn common_prefix(seqs: &[&[u32]]) -> usize {
    let Some((first, rest)) = seqs.split_first() else { return 0 };
    let mut n = first.len();
    for s in rest {
        n = n.min(first.iter().zip(s.iter()).take_while(|(a, b)| a == b).count());
    }
    n
}

/// Scores `requests`; `groups` are runs of requests whose inputs may share a prefix (the choices
/// of one example). The longest prefix a group's inputs share, up to its first scored position,
/// runs once per group ([`CausalLm::prefix_cache`](crate::model::decoder::CausalLm)); the rest of
/// each input runs from its keys and values. Groups of similar prefix length are batched, at most
/// `batch_size` requests and [`PASS_TOKENS`] tokens a pass. Results are in request order;
/// progress is one `eval` unit per request.
pub fn score(
    model: &Model,
    requests: &[Request],
    groups: &[Range<usize>],
    batch_size: usize,
    ctx: &RunContext,
    progress: (u64, u64),
) -> Result<Vec<Scored>> {
    let max_length = model.max_seq_len();
    let inputs: Vec<_> = requests.iter().map(|r| input(r, max_length)).collect();
    // What each group can share: its common prefix, stopping before the first scored position.
    let shared: Vec<usize> = groups
        .iter()
        .map(|g| {
            let seqs: Vec<&[u32]> = g.clone().map(|i| inputs[i].0.as_slice()).collect();
            // Every input keeps at least one token of its own, so no continuation pass is empty.
            let first_scored = g.clone().map(|i| inputs[i].1.start).min().unwrap_or(0);
            let shortest = seqs.iter().map(|s| s.len().saturating_sub(1)).min().unwrap_or(0);
            common_prefix(&seqs).min(first_scored).min(shortest)
        })
        .collect();
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|&g| std::cmp::Reverse((shared[g], groups[g].len())));
    let mut out = vec![Scored { loglik: 0.0, greedy: true }; requests.len()];
    let check = || ctx.check_cancelled();
    let mut done = progress.0;
    let mut next = 0;
    while next < order.len() {
        ctx.check_cancelled()?;
        // Take groups while the pass stays within its budget; the prefix is the shortest shared.
        let mut batch = vec![order[next]];
        let mut p = shared[order[next]];
        next += 1;
        while next < order.len() {
            let g = order[next];
            let p_new = p.min(shared[g]);
            let reqs: usize = batch.iter().chain([&g]).map(|&g| groups[g].len()).sum();
            let tokens: usize = batch
                .iter()
                .chain([&g])
                .flat_map(|&g| groups[g].clone())
                .map(|i| inputs[i].0.len() - p_new)
                .max()
                .unwrap_or(0)
                * reqs
                + p_new * (batch.len() + 1);
            if reqs > batch_size || tokens > PASS_TOKENS {
                break;
            }
            batch.push(g);
            p = p_new;
            next += 1;
        }
        let prefixes: Vec<&[u32]> =
            batch.iter().map(|&g| &inputs[groups[g].start].0[..p]).collect();
        let cache = if p > 0 {
            model.lm.prefix_cache(
                &model.config,
                &TokenBatch::new(&prefixes, 0, model.lm.device())?,
                &check,
            )?
        } else {
            Vec::new()
        };
        let members: Vec<(usize, u32)> = batch
            .iter()
            .enumerate()
            .flat_map(|(row, &g)| groups[g].clone().map(move |i| (i, row as u32)))
            .collect();
        let suffixes: Vec<&[u32]> = members.iter().map(|&(i, _)| &inputs[i].0[p..]).collect();
        let rows: Vec<u32> = members.iter().map(|&(_, row)| row).collect();
        let tokens = TokenBatch::new(&suffixes, 0, model.lm.device())?;
        let h = model.lm.forward_after_prefix(&model.config, &tokens, &cache, &rows, &check)?;
        let s = tokens.seq_len();
        let flat = h.reshape((members.len() * s, ()))?;
        for (row, &(i, _)) in members.iter().enumerate() {
            let positions = &inputs[i].1;
            if positions.is_empty() {
                continue;
            }
            let cont = &requests[i].continuation;
            let targets = &cont[cont.len() - positions.len()..];
            let first = row * s + positions.start - p;
            let rows = flat.i(first..first + positions.len())?;
            let logprobs = candle_nn::ops::log_softmax(&model.lm.logits(&rows)?, D::Minus1)?;
            let target_ids = Tensor::new(targets, logprobs.device())?.unsqueeze(1)?;
            let picked = logprobs.gather(&target_ids, 1)?.squeeze(1)?.to_dtype(DType::F64)?;
            let greedy = logprobs.argmax(D::Minus1)?.to_vec1::<u32>()?;
            out[i] = Scored {
                loglik: picked.to_vec1::<f64>()?.iter().sum(),
                greedy: greedy.as_slice() == targets,
            };
        }
        done += members.len() as u64;
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

    #[test]
    fn common_prefix_of_sequences() {
        assert_eq!(common_prefix(&[&[1, 2, 3], &[1, 2, 4], &[1, 2]]), 2);
        assert_eq!(common_prefix(&[&[1, 2, 3]]), 3);
        assert_eq!(common_prefix(&[&[5], &[1]]), 0);
    }
}
