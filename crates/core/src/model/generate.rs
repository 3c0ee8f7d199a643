//! Greedy continuation of a prompt, with each step's probabilities: what a user runs to see what a
//! pruned model still says, and how layerfold's outputs are compared with llama.cpp's.
//!
//! Each step runs the whole sequence again (no KV cache): continuations are short and this keeps
//! one forward path for every use of the decoder.

use candle_core::{DType, IndexOp};

use crate::context::{RunContext, Stage};
use crate::error::{Error, Result};
use crate::model::decoder::{NoObserver, TokenBatch};
use crate::model::Model;

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// New tokens at most; generation also stops after the EOS token.
    pub max_tokens: usize,
    /// How many of each step's most probable tokens to report.
    pub top_k: usize,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self { max_tokens: 32, top_k: 5 }
    }
}

/// One generated token.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub token: u32,
    /// Its probability under the model (softmax of the logits, temperature 1).
    pub prob: f64,
    /// The `top_k` most probable tokens and their probabilities, most probable first.
    pub top: Vec<(u32, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub prompt_tokens: Vec<u32>,
    pub steps: Vec<Step>,
    /// The generated tokens decoded.
    pub text: String,
}

/// The prompt as token ids: `text` with the special tokens its tokenizer adds, as transformers'
/// `encode` and llama.cpp's `--prompt` give.
pub fn encode_prompt(model: &Model, text: &str) -> Result<Vec<u32>> {
    model.tokenizer.encode_special(text)
}

/// Greedy continuation of `prompt` (token ids).
pub fn generate(
    model: &Model,
    prompt: &[u32],
    opts: &GenerateOptions,
    ctx: &RunContext,
) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(Error::config("prompt", "the prompt has no tokens"));
    }
    let vocab = model.config.vocab_size;
    if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::config(
            "prompt",
            format!("token id {bad} is not below the vocabulary size {vocab}"),
        ));
    }
    let room = model.max_seq_len().saturating_sub(prompt.len());
    let max_tokens = opts.max_tokens.min(room);
    let mut ids = prompt.to_vec();
    let mut steps = Vec::with_capacity(max_tokens);
    for k in 0..max_tokens {
        ctx.check_cancelled()?;
        ctx.report(Stage::Eval, k as u64, max_tokens as u64);
        let batch = TokenBatch::new(&[&ids], 0, model.lm.device())?;
        let check = || ctx.check_cancelled();
        let h = model.lm.forward(&model.config, &batch, &mut NoObserver, &check)?;
        let last = h.i((0, ids.len() - 1))?;
        let logits = model.lm.logits(&last)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let probs = softmax(&logits);
        let mut order: Vec<u32> = (0..probs.len() as u32).collect();
        // Greedy: the first of the most probable tokens, as llama.cpp's greedy sampler picks.
        order.sort_by(|&a, &b| probs[b as usize].total_cmp(&probs[a as usize]).then(a.cmp(&b)));
        let token = order[0];
        steps.push(Step {
            token,
            prob: probs[token as usize],
            top: order.iter().take(opts.top_k).map(|&t| (t, probs[t as usize])).collect(),
        });
        ids.push(token);
        if Some(token) == model.tokenizer.eos_token_id {
            break;
        }
    }
    ctx.report(Stage::Eval, max_tokens as u64, max_tokens as u64);
    let generated: Vec<u32> = steps.iter().map(|s| s.token).collect();
    let text = model.tokenizer.inner.decode(&generated, false).map_err(|e| {
        Error::format(&model.tokenizer.path, "tokenizer", format!("it cannot decode: {e}"))
    })?;
    Ok(Generation { prompt_tokens: prompt.to_vec(), steps, text })
}

fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}
