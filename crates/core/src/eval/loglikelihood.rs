//! `loglik(continuation | context)` as lm-evaluation-harness 0.4 computes it for a causal model
//! (`api/model.py` `_encode_pair`, `models/huggingface.py` `_loglikelihood_tokens`; METHODS.md
//! §4.2): trailing spaces of the context move to the continuation; the context and the whole
//! text are encoded with the tokenizer's own special tokens, and the continuation's tokens are
//! the whole's after the context's; the input is the last `max_length + 1` tokens minus the last
//! one; the log-probabilities of the continuation's tokens are summed, and it is greedy when every
//! one is the argmax.

use std::ops::Range;

use crate::context::{RunContext, Stage};
use crate::error::Result;
use crate::eval::nll::head_nll_at;
use crate::model::packed::Packing;
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

/// Tokens one packed pass may hold (shared contexts and the rest of each input together).
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
/// runs once, as its own sequence of a packed pass ([`Packing`]); the rest of each input runs as
/// a sequence that continues it. Groups are packed longest first, at most `batch_size` requests
/// and [`PASS_TOKENS`] tokens a pass, without padding. Results are in request order; progress is
/// one `eval` unit per request.
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
    // The tokens a group puts in a pass: its shared prefix once, then each member's rest.
    let cost = |g: usize| {
        shared[g] + groups[g].clone().map(|i| inputs[i].0.len() - shared[g]).sum::<usize>()
    };
    // Longest first (as lm-eval orders), so a pass too large for memory fails at once.
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|&g| std::cmp::Reverse(cost(g)));
    // The passes: runs of groups in that order, each within PASS_TOKENS and `batch_size`.
    let mut passes: Vec<Range<usize>> = Vec::new();
    let mut next = 0;
    while next < order.len() {
        let first = next;
        let (mut tokens, mut members) = (0, 0);
        while next < order.len() {
            let g = order[next];
            let full = tokens + cost(g) > PASS_TOKENS || members + groups[g].len() > batch_size;
            if next > first && full {
                break;
            }
            tokens += cost(g);
            members += groups[g].len();
            next += 1;
        }
        passes.push(first..next);
    }
    // Passes run one at a time when the layers are in memory; a streamed model takes as many
    // passes per trip through its layers as the state budget holds (each trip reads every layer).
    let pass_tokens = |p: &Range<usize>| order[p.clone()].iter().map(|&g| cost(g)).sum::<usize>();
    let trip_tokens = if model.lm.is_streamed() {
        let per_token = model.config.hidden_size * model.lm.dtype().size_in_bytes() * 4;
        ctx.state_cache_budget() / per_token.max(1)
    } else {
        0
    };
    let mut out = vec![Scored { loglik: 0.0, greedy: true }; requests.len()];
    let check = || ctx.check_cancelled();
    let mut done = progress.0;
    let mut k = 0;
    while k < passes.len() {
        ctx.check_cancelled()?;
        let (trip_start, mut tokens) = (k, 0);
        while k < passes.len()
            && (k == trip_start || tokens + pass_tokens(&passes[k]) <= trip_tokens)
        {
            tokens += pass_tokens(&passes[k]);
            k += 1;
        }
        // Each group's shared prefix (when it has one), then its members' rests, which continue
        // it; an empty input has nothing to run and nothing to score.
        let mut packings = Vec::new();
        let mut members = Vec::new(); // per packing: (request, sequence, its offset)
        for pass in &passes[trip_start..k] {
            let mut sequences: Vec<(&[u32], Option<usize>)> = Vec::new();
            let mut packed: Vec<(usize, usize, usize)> = Vec::new();
            for &g in &order[pass.clone()] {
                let p = shared[g];
                let prefix = (p > 0).then(|| {
                    sequences.push((&inputs[groups[g].start].0[..p], None));
                    sequences.len() - 1
                });
                for i in groups[g].clone().filter(|&i| !inputs[i].0.is_empty()) {
                    packed.push((i, sequences.len(), p));
                    sequences.push((&inputs[i].0[p..], prefix));
                }
            }
            if !sequences.is_empty() {
                packings.push(Packing::new(&model.lm, &model.config, &sequences)?);
                members.push(packed);
            }
        }
        let outputs = model.lm.forward_packed_runs(&packings, &check)?;
        for ((h, packing), packed) in outputs.iter().zip(&packings).zip(&members) {
            // Every scored row of the pass, in request order.
            let mut rows = Vec::new();
            let mut targets = Vec::new();
            for &(i, seq, p) in packed {
                let positions = inputs[i].1.clone();
                let start = packing.span(seq).start;
                rows.extend(positions.clone().map(|pos| (start + pos - p) as u32));
                let cont = &requests[i].continuation;
                targets.extend_from_slice(&cont[cont.len() - positions.len()..]);
            }
            let (nll, argmax) = head_nll_at(&model.lm, h, &rows, &targets)?;
            let mut j = 0;
            for &(i, _, _) in packed {
                let n = inputs[i].1.len();
                out[i] = Scored {
                    loglik: -nll[j..j + n].iter().map(|&l| f64::from(l)).sum::<f64>(),
                    greedy: argmax[j..j + n] == targets[j..j + n],
                };
                j += n;
            }
        }
        for pass in &passes[trip_start..k] {
            done += order[pass.clone()].iter().map(|&g| groups[g].len() as u64).sum::<u64>();
        }
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
