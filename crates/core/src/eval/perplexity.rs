//! Perplexity (METHODS.md §4.1): join the corpus's documents with `"\n\n"`, tokenize once with one
//! BOS, cut into non-overlapping windows of `seq_len` tokens (dropping the tail), and take
//! `exp(mean NLL)` over every predicted token (each window predicts its tokens 1..seq_len).

use std::time::Instant;

use crate::calib::text::{join_documents, TextSource};
use crate::context::{RunContext, Stage};
use crate::error::{Error, Result};
use crate::eval::nll::nll_sum;
use crate::model::decoder::{NoObserver, Progress, TokenBatch};
use crate::model::Model;

/// Options of a perplexity run. Defaults: `seq_len = min(2048, max_position_embeddings)`, every
/// window, batches of 1.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PerplexityOptions {
    pub seq_len: Option<usize>,
    pub max_windows: Option<usize>,
    pub batch_size: Option<usize>,
}

/// The result of a perplexity run.
#[derive(Debug, Clone, PartialEq)]
pub struct PerplexityResult {
    pub ppl: f64,
    /// Mean negative log-likelihood per predicted token (nats).
    pub nll: f64,
    /// Predicted tokens: `windows · (seq_len − 1)`.
    pub tokens: usize,
    pub windows: usize,
    pub seq_len: usize,
    /// Tokens in the whole tokenized corpus, BOS included.
    pub corpus_tokens: usize,
    pub seconds: f64,
    pub warnings: Vec<String>,
}

/// The window length to use, checked against the model.
pub fn resolve_seq_len(model: &Model, seq_len: Option<usize>) -> Result<usize> {
    let max = model.max_seq_len();
    match seq_len {
        None => Ok(max.min(2048)),
        Some(n @ (0 | 1)) => Err(Error::config(
            "seqLen",
            format!("{n} is too short: a window predicts each token from the ones before it, so it needs at least 2"),
        )),
        Some(n) if n > max => Err(Error::config(
            "seqLen",
            format!("{n} exceeds the model's context of {max} tokens (max_position_embeddings)"),
        )),
        Some(n) => Ok(n),
    }
}

/// Perplexity of `model` on the documents of `source` (METHODS.md §1, §4.1).
pub fn perplexity(
    model: &Model,
    source: &TextSource,
    opts: &PerplexityOptions,
    ctx: &RunContext,
) -> Result<PerplexityResult> {
    let start = Instant::now();
    let mut seq_len = resolve_seq_len(model, opts.seq_len)?;
    let batch_size = match opts.batch_size {
        Some(0) => return Err(Error::config("batchSize", "must be at least 1")),
        b => b.unwrap_or(1),
    };
    if opts.max_windows == Some(0) {
        return Err(Error::config("maxWindows", "must be at least 1"));
    }
    let documents = source.documents()?;
    ctx.report(Stage::Tokenize, 0, 1);
    let ids = model.tokenizer.encode_with_bos(&join_documents(&documents))?;
    ctx.report(Stage::Tokenize, 1, 1);
    let mut warnings = Vec::new();
    if ids.len() < 2 {
        return Err(Error::Data {
            message: "the text is a single token: nothing to predict".into(),
        });
    }
    if ids.len() < seq_len {
        warnings.push(format!(
            "the corpus has {} tokens, fewer than seqLen {seq_len}: evaluated as one window",
            ids.len()
        ));
        seq_len = ids.len();
    }
    let mut windows: Vec<&[u32]> = ids.chunks_exact(seq_len).collect();
    if let Some(max) = opts.max_windows {
        windows.truncate(max);
    }
    let total = windows.len() as u64;
    let (mut nll_total, mut count, mut non_finite) = (0f64, 0usize, 0usize);
    let check = || ctx.check_cancelled();
    ctx.report(Stage::Eval, 0, total);
    let batches = windows
        .chunks(batch_size)
        .enumerate()
        .map(|(k, w)| Ok(TokenBatch::new(w, 0, model.lm.device())?.with_index(k)))
        .collect::<Result<Vec<_>>>()?;
    let ctxs =
        batches.iter().map(|b| model.lm.context(&model.config, b)).collect::<Result<Vec<_>>>()?;
    let runs = ctxs.iter().zip(&batches).map(|(c, b)| Ok((c, model.lm.embed(b)?)));
    let mut add = |k: usize, h: candle_core::Tensor| -> Result<()> {
        let (sum, n) = nll_sum(&model.lm, &h, &batches[k])?;
        if sum.is_finite() {
            nll_total += sum;
        } else {
            non_finite += batches[k].lengths.len();
        }
        count += n;
        Ok(())
    };
    // Batches in memory report windows; a streamed model reports layers.
    let progress = |p: Progress| match p {
        Progress::Batches(done, _) => {
            ctx.report(Stage::Eval, (done as usize * batch_size).min(windows.len()) as u64, total)
        }
        Progress::Layers(done, of) => ctx.report(Stage::Eval, done, of),
    };
    model.lm.forward_runs(0, runs, &mut NoObserver, &mut add, &check, &progress)?;
    if non_finite > 0 {
        return Err(Error::format(
            &model.path,
            "model",
            format!(
                "its loss is not finite (NaN or ±inf) in batches covering {non_finite} of {} \
                 windows in {:?}: its activations overflow; load it in f32, or check the pruning \
                 that made it",
                windows.len(),
                model.lm.dtype()
            ),
        ));
    }
    let nll = nll_total / count as f64;
    if !nll.exp().is_finite() {
        // JSON has no infinity: say why `ppl` is missing rather than leave a bare null.
        warnings.push(format!(
            "the perplexity exp({nll:.1}) is too large for a number (the model predicts this text \
             far worse than chance): compare nll instead"
        ));
    }
    Ok(PerplexityResult {
        ppl: nll.exp(),
        nll,
        tokens: count,
        windows: windows.len(),
        seq_len,
        corpus_tokens: ids.len(),
        seconds: start.elapsed().as_secs_f64(),
        warnings,
    })
}
