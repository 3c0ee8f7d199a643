//! Every object that crosses the boundary. Options are plain data validated by the TypeScript
//! config layer first; defaults live in core and are documented here (STYLE.md, oxc `types.rs`).

use napi_derive::napi;

use layerfold_core::CancelToken;

/// Progress of a long call: `done` of `total` units of `stage`.
#[napi(object)]
pub struct BindingProgress {
    /// `load`, `tokenize`, `calibrate`, `score`, `merge`, `distill`, `eval` or `save`.
    pub stage: String,
    pub done: f64,
    pub total: f64,
    /// A distillation step's loss and its two terms, and the training tokens seen so far.
    pub training: Option<BindingTraining>,
}

#[napi(object)]
pub struct BindingTraining {
    pub loss: f64,
    pub kl: f64,
    pub mse: f64,
    pub tokens: f64,
}

/// A flag the facade sets when the caller's `AbortSignal` fires; core checks it at least once per
/// layer and per batch. (napi's own `AbortSignal` support only cancels work not yet started, and
/// overwrites `signal.onabort`.)
#[napi]
pub struct BindingCancelToken {
    pub(crate) token: CancelToken,
}

#[napi]
impl BindingCancelToken {
    #[napi(constructor)]
    #[allow(clippy::new_without_default)] // napi constructors take no Default
    pub fn new() -> Self {
        Self { token: CancelToken::new() }
    }

    #[napi]
    pub fn cancel(&self) {
        self.token.cancel();
    }

    #[napi(getter)]
    pub fn cancelled(&self) -> bool {
        self.token.is_cancelled()
    }
}

#[napi(object)]
pub struct BindingLoadOptions {
    /// `f32` (default), `f16` or `bf16`.
    pub dtype: Option<String>,
    /// `cpu` (default), `cuda`, `cuda:N` or `auto` (CUDA when usable, else the CPU).
    pub device: Option<String>,
    /// Read each layer from the checkpoint only while a pass runs it (default false).
    pub stream: Option<bool>,
}

/// A count of tensors of one ggml type in a GGUF file.
#[napi(object)]
pub struct BindingTensorTypeCount {
    pub r#type: String,
    pub count: u32,
}

#[napi(object)]
pub struct BindingModelInfo {
    /// `llama`, `mistral`, `qwen2` or `qwen3`.
    pub architecture: String,
    /// `safetensors` (a Hugging Face folder) or `gguf`.
    pub format: String,
    pub path: String,
    pub dtype: String,
    pub device: String,
    /// Why the model is on the CPU although `auto` was asked for.
    pub device_fallback: Option<String>,
    pub streamed: Option<String>,
    pub num_layers: u32,
    pub hidden_size: u32,
    pub intermediate_size: u32,
    pub num_attention_heads: u32,
    pub num_key_value_heads: u32,
    pub head_dim: u32,
    pub vocab_size: u32,
    pub max_position_embeddings: u32,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    pub parameters: f64,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// GGUF tensor types, most frequent first; empty for safetensors.
    pub quantization: Vec<BindingTensorTypeCount>,
}

/// The text to evaluate: exactly one of `text` or `file` (a `.txt` or `.jsonl` path).
#[napi(object)]
pub struct BindingTextSource {
    pub text: Option<String>,
    pub file: Option<String>,
}

#[napi(object)]
pub struct BindingPerplexityOptions {
    /// Tokens per window. Default `min(2048, max_position_embeddings)`.
    pub seq_len: Option<u32>,
    /// Evaluate at most this many windows. Default: all.
    pub max_windows: Option<u32>,
    /// Windows per forward pass. Default 1.
    pub batch_size: Option<u32>,
}

#[napi(object)]
pub struct BindingPerplexityResult {
    pub ppl: f64,
    /// Mean NLL per predicted token, in nats.
    pub nll: f64,
    /// Predicted tokens: `windows · (seqLen − 1)`.
    pub tokens: f64,
    pub windows: u32,
    pub seq_len: u32,
    pub corpus_tokens: f64,
    pub seconds: f64,
    pub warnings: Vec<String>,
}

#[napi(object)]
#[derive(Default)]
pub struct BindingSaveOptions {
    /// `safetensors` (a Hugging Face folder) or `gguf` (one llama.cpp file). Default: `gguf` for
    /// a path ending in `.gguf`, else `safetensors`.
    pub format: Option<String>,
    /// Dtype of the saved weights: `f32`, `f16` or `bf16` (safetensors); `f32`, `f16` or `q8_0`
    /// (GGUF). Default: the model's (bf16 as f16 in GGUF).
    pub dtype: Option<String>,
    /// Bytes of tensor data per shard. Default 5e9.
    pub max_shard_bytes: Option<f64>,
    /// Replace a non-empty target folder. Default false.
    pub force: Option<bool>,
}

#[napi(object)]
pub struct BindingSaveResult {
    pub path: String,
    pub files: Vec<String>,
    pub bytes: f64,
}

#[napi(object)]
pub struct BindingEvalOptions {
    /// Task ids (`boolq`, `piqa`, `hellaswag`, `winogrande`, `arc_easy`, `arc_challenge`,
    /// `openbookqa`) and `.jsonl` files of your own. Default: the seven standard tasks.
    pub tasks: Option<Vec<String>>,
    /// The first `limit` examples of each task, in file order. Default: all.
    pub limit: Option<u32>,
    /// Requests per forward pass. Default 32.
    pub batch_size: Option<u32>,
    /// The folder holding the standard task files.
    pub data_dir: Option<String>,
}

/// One task's result (METHODS.md §4.2). Standard errors are lm-eval's (`null` below 2 examples).
#[napi(object)]
pub struct BindingTaskResult {
    pub name: String,
    /// The reported metric: `acc` or `acc_norm`.
    pub metric: String,
    pub value: f64,
    pub stderr: Option<f64>,
    pub n: u32,
    pub acc: f64,
    pub acc_stderr: Option<f64>,
    pub acc_norm: f64,
    pub acc_norm_stderr: Option<f64>,
}

/// One scored example.
#[napi(object)]
pub struct BindingEvalSample {
    pub task: String,
    /// 0-based index of the example in its file.
    pub doc: u32,
    pub gold: u32,
    /// `loglik(continuation | context)` per choice, in nats.
    pub loglik: Vec<f64>,
    /// Whether each choice's continuation was the greedy one.
    pub greedy: Vec<bool>,
    pub pred: u32,
    pub pred_norm: u32,
}

#[napi(object)]
pub struct BindingEvalResult {
    /// In the order asked for.
    pub tasks: Vec<BindingTaskResult>,
    /// Mean of the reported metrics × 100.
    pub average: f64,
    pub samples: Vec<BindingEvalSample>,
    pub seconds: f64,
}

#[napi(object)]
#[derive(Default)]
pub struct BindingGenerateOptions {
    /// New tokens at most; generation also stops after EOS. Default 32.
    pub max_tokens: Option<u32>,
    /// How many of each step's most probable tokens to report. Default 5.
    pub top_k: Option<u32>,
}

/// A token and its probability.
#[napi(object)]
pub struct BindingTokenProb {
    pub token: u32,
    pub prob: f64,
}

/// One generated token: its probability and the most probable tokens of its step.
#[napi(object)]
pub struct BindingGenerateStep {
    pub token: u32,
    pub prob: f64,
    pub top: Vec<BindingTokenProb>,
}

#[napi(object)]
pub struct BindingGeneration {
    pub prompt_tokens: Vec<u32>,
    pub steps: Vec<BindingGenerateStep>,
    /// The generated tokens decoded.
    pub text: String,
}

/// One task's reported metric in a compare row.
#[napi(object)]
pub struct BindingTaskScore {
    pub task: String,
    /// `acc` or `acc_norm`.
    pub metric: String,
    /// × 100.
    pub value: f64,
}

/// One model of a comparison (core's `CompareRow`).
#[napi(object)]
pub struct BindingCompareRow {
    /// A method id, or `dense`.
    pub method: String,
    pub layers: u32,
    pub parameters: f64,
    /// Perplexity; null without a text, or when it overflows.
    pub ppl: Option<f64>,
    pub tasks: Vec<BindingTaskScore>,
    /// Mean of the task values (× 100).
    pub average: f64,
    /// `average` as a percentage of the dense model's; null when the dense average is 0.
    pub retained: Option<f64>,
    pub prune_seconds: f64,
    /// Seconds of distillation (`<method>+distill` rows).
    pub distill_seconds: Option<f64>,
    pub eval_seconds: f64,
    /// The merge record as JSON (`[0, [1, 2], 3]`).
    pub record: String,
    pub warnings: Vec<String>,
}

#[napi(object)]
pub struct BindingCompareResult {
    /// The dense model first, then the methods in the order asked for.
    pub rows: Vec<BindingCompareRow>,
    pub seconds: f64,
}
