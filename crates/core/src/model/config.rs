//! Model configuration: the lenient `RawConfig` (the keys of a Hugging Face `config.json`, verbatim)
//! resolved once into the strict `Config` the decoder runs on (candle's llama.rs pattern).
//!
//! Follows transformers' `configuration_{llama,mistral,qwen2,qwen3}.py` defaults. Both spellings of
//! the RoPE settings are read: `rope_theta` + `rope_scaling` (transformers 4) and `rope_parameters`
//! (transformers 5).

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The decoder families layerfold runs. All share the Llama layer (METHODS.md §0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Mistral,
    /// Adds biases on `q_proj`, `k_proj`, `v_proj`.
    Qwen2,
    /// Adds per-head `q_norm`/`k_norm` before RoPE.
    Qwen3,
}

impl Architecture {
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "llama" => Some(Self::Llama),
            "mistral" => Some(Self::Mistral),
            "qwen2" => Some(Self::Qwen2),
            "qwen3" => Some(Self::Qwen3),
            _ => None,
        }
    }

    /// The `model_type` of `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
        }
    }

    /// The class name transformers instantiates (`architectures[0]`).
    pub fn hf_class(self) -> &'static str {
        match self {
            Self::Llama => "LlamaForCausalLM",
            Self::Mistral => "MistralForCausalLM",
            Self::Qwen2 => "Qwen2ForCausalLM",
            Self::Qwen3 => "Qwen3ForCausalLM",
        }
    }
}

/// The "llama3" frequency-dependent RoPE scaling (transformers `_compute_llama3_parameters`).
#[derive(Debug, Clone, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// `config.json` as written, every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawConfig {
    pub model_type: Option<String>,
    pub architectures: Option<Vec<String>>,
    pub vocab_size: Option<usize>,
    pub hidden_size: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    pub num_attention_heads: Option<usize>,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub max_position_embeddings: Option<usize>,
    pub rms_norm_eps: Option<f64>,
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<serde_json::Value>,
    pub rope_parameters: Option<serde_json::Value>,
    pub tie_word_embeddings: Option<bool>,
    pub attention_bias: Option<bool>,
    pub mlp_bias: Option<bool>,
    pub hidden_act: Option<String>,
    pub sliding_window: Option<usize>,
    pub use_sliding_window: Option<bool>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<serde_json::Value>,
}

/// The resolved configuration: every field the decoder needs, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v (Qwen2 always; Llama/Qwen3 when `attention_bias`). Llama's `attention_bias`
    /// also puts one on `o_proj`.
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Tokens further back than this are masked (Mistral); `None` for full causal attention.
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

/// The largest width, depth, vocabulary or context a configuration may state: 2^24, far above
/// any real model, and small enough that products of two sizes cannot overflow.
pub const MAX_SIZE: usize = 1 << 24;

impl RawConfig {
    /// Resolves defaults and checks what layerfold supports. `source` names the file in messages;
    /// a value no model can have is `E_MODEL_FORMAT` naming the key.
    pub fn resolve(&self, source: &Path) -> Result<Config> {
        let bad = |key: &str, problem: String| {
            Error::format(source, "model configuration", format!("`{key}` {problem}"))
        };
        let model_type = self.model_type.as_deref().ok_or_else(|| {
            Error::unsupported(
                format!("a config without `model_type` ({})", source.display()),
                "layerfold reads Llama, Mistral, Qwen2 and Qwen3 checkpoints",
            )
        })?;
        let architecture = Architecture::from_model_type(model_type).ok_or_else(|| {
            Error::unsupported(
                format!("model type `{model_type}`"),
                "layerfold reads Llama, Mistral, Qwen2 and Qwen3 checkpoints",
            )
        })?;
        let size = |value: Option<usize>, key: &str| match value {
            None => Err(bad(key, "is missing".into())),
            Some(v) if (1..=MAX_SIZE).contains(&v) => Ok(v),
            Some(v) => Err(bad(key, format!("is {v}, outside 1..={MAX_SIZE}"))),
        };
        let optional =
            |value: Option<usize>, key: &str| value.map(|v| size(Some(v), key)).transpose();
        let hidden_size = size(self.hidden_size, "hidden_size")?;
        let num_attention_heads = size(self.num_attention_heads, "num_attention_heads")?;
        let num_key_value_heads = optional(self.num_key_value_heads, "num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        if !num_attention_heads.is_multiple_of(num_key_value_heads) {
            return Err(bad(
                "num_key_value_heads",
                format!(
                    "is {num_key_value_heads}: {num_attention_heads} attention heads cannot be \
                     grouped over it"
                ),
            ));
        }
        let head_dim = match self.head_dim {
            Some(v) => size(Some(v), "head_dim")?,
            None => hidden_size / num_attention_heads,
        };
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(bad("head_dim", format!("is {head_dim}; it must be even and positive")));
        }
        if let Some(act) = &self.hidden_act {
            if act != "silu" {
                return Err(Error::unsupported(
                    format!("activation `{act}`"),
                    "the Llama family uses `silu` in its MLP",
                ));
            }
        }
        let rms_norm_eps = self.rms_norm_eps.unwrap_or(1e-6);
        if !(rms_norm_eps.is_finite() && rms_norm_eps >= 0.0) {
            return Err(bad(
                "rms_norm_eps",
                format!("is {rms_norm_eps}; it must be finite and ≥ 0"),
            ));
        }
        let (rope_theta, rope_scaling) = self.rope(source)?;
        let sliding_window = match architecture {
            Architecture::Mistral => optional(self.sliding_window, "sliding_window")?,
            Architecture::Qwen2 | Architecture::Qwen3 => {
                self.sliding_window.filter(|_| self.use_sliding_window.unwrap_or(false))
            }
            Architecture::Llama => None,
        };
        if architecture != Architecture::Mistral && sliding_window.is_some() {
            return Err(Error::unsupported(
                "Qwen sliding-window attention (`use_sliding_window: true`)",
                "it applies to some layers only; set use_sliding_window to false",
            ));
        }
        let attention_bias = self.attention_bias.unwrap_or(false);
        let eos_token_ids = match &self.eos_token_id {
            None | Some(serde_json::Value::Null) => vec![],
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().map(|v| vec![v as u32]).unwrap_or_default()
            }
            Some(serde_json::Value::Array(a)) => {
                a.iter().filter_map(|v| v.as_u64()).map(|v| v as u32).collect()
            }
            Some(other) => return Err(bad("eos_token_id", format!("is {other}, not a token id"))),
        };
        let vocab_size = size(self.vocab_size, "vocab_size")?;
        if let Some(bos) = self.bos_token_id.filter(|&b| b as usize >= vocab_size) {
            return Err(bad(
                "bos_token_id",
                format!("is {bos}, outside the {vocab_size}-token vocabulary"),
            ));
        }
        Ok(Config {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size: size(self.intermediate_size, "intermediate_size")?,
            // Not capped: the weights decide (`weights::build` names both numbers).
            num_hidden_layers: match self.num_hidden_layers {
                None => return Err(bad("num_hidden_layers", "is missing".into())),
                Some(0) => return Err(bad("num_hidden_layers", "is 0".into())),
                Some(n) => n,
            },
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            max_position_embeddings: optional(
                self.max_position_embeddings,
                "max_position_embeddings",
            )?
            .unwrap_or(2048),
            rms_norm_eps,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(false),
            qkv_bias: architecture == Architecture::Qwen2 || attention_bias,
            o_bias: architecture != Architecture::Qwen2 && attention_bias,
            mlp_bias: self.mlp_bias.unwrap_or(false),
            sliding_window,
            bos_token_id: self.bos_token_id,
            eos_token_ids,
        })
    }

    /// `(rope_theta, scaling)` from either `rope_parameters` or `rope_theta` + `rope_scaling`.
    fn rope(&self, source: &Path) -> Result<(f64, Option<Llama3RopeScaling>)> {
        let bad = |key: &str, problem: String| {
            Error::format(source, "model configuration", format!("`{key}` {problem}"))
        };
        let params = self.rope_parameters.as_ref().or(self.rope_scaling.as_ref());
        let theta = self
            .rope_parameters
            .as_ref()
            .and_then(|p| p.get("rope_theta"))
            .and_then(|v| v.as_f64())
            .or(self.rope_theta)
            .unwrap_or(10000.0);
        if !(theta.is_finite() && theta > 0.0) {
            return Err(bad("rope_theta", format!("is {theta}; it must be finite and positive")));
        }
        let Some(params) = params.filter(|p| !p.is_null()) else { return Ok((theta, None)) };
        let kind = params
            .get("rope_type")
            .or_else(|| params.get("type"))
            .and_then(|v| v.as_str())
            .unwrap_or("default");
        match kind {
            "default" => Ok((theta, None)),
            "llama3" => {
                let field = |key: &str| {
                    let name = format!("rope_scaling.{key}");
                    match params.get(key).and_then(|v| v.as_f64()) {
                        None => Err(bad(&name, "is missing".into())),
                        Some(v) if v.is_finite() && v > 0.0 => Ok(v),
                        Some(v) => {
                            Err(bad(&name, format!("is {v}; it must be finite and positive")))
                        }
                    }
                };
                let scaling = Llama3RopeScaling {
                    factor: field("factor")?,
                    low_freq_factor: field("low_freq_factor")?,
                    high_freq_factor: field("high_freq_factor")?,
                    original_max_position_embeddings: field("original_max_position_embeddings")?
                        .min(MAX_SIZE as f64)
                        as usize,
                };
                if scaling.low_freq_factor == scaling.high_freq_factor {
                    return Err(bad(
                        "rope_scaling.high_freq_factor",
                        "equals low_freq_factor; the llama3 scaling divides by their difference"
                            .into(),
                    ));
                }
                Ok((theta, Some(scaling)))
            }
            other => Err(Error::unsupported(
                format!("RoPE scaling `{other}`"),
                "layerfold implements the default RoPE and the `llama3` scaling",
            )),
        }
    }
}

impl Config {
    /// Query heads per KV head (`G` in METHODS.md §0).
    pub fn group_size(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Parameters of one decoder layer of the standard shape (METHODS.md §3: a parameter ratio is
    /// converted to a layer count by this).
    pub fn layer_parameters(&self) -> usize {
        let (d, i, dh) = (self.hidden_size, self.intermediate_size, self.head_dim);
        let (nq, nkv) = (self.num_attention_heads, self.num_key_value_heads);
        let mut n = d * nq * dh * 2 + d * nkv * dh * 2 + 3 * d * i + 2 * d;
        if self.qkv_bias {
            n += nq * dh + 2 * nkv * dh;
        }
        if self.o_bias {
            n += d;
        }
        if self.mlp_bias {
            n += 2 * i + d;
        }
        if self.architecture == Architecture::Qwen3 {
            n += 2 * dh;
        }
        n
    }

    /// Parameters of the whole model, counting tied embeddings once.
    pub fn parameters(&self) -> usize {
        let embeddings = self.vocab_size * self.hidden_size;
        let head = if self.tie_word_embeddings { 0 } else { embeddings };
        embeddings + head + self.hidden_size + self.num_hidden_layers * self.layer_parameters()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> RawConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn resolves_defaults() {
        let c =
            raw(r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,
            "num_hidden_layers":2,"num_attention_heads":2}"#)
            .resolve(Path::new("t"))
            .unwrap();
        assert_eq!(c.num_key_value_heads, 2);
        assert_eq!(c.head_dim, 4);
        assert_eq!(c.rope_theta, 10000.0);
        assert!(!c.qkv_bias);
    }

    #[test]
    fn qwen2_has_qkv_bias_and_reads_rope_parameters() {
        let c =
            raw(r#"{"model_type":"qwen2","vocab_size":10,"hidden_size":8,"intermediate_size":16,
            "num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1,
            "rope_parameters":{"rope_type":"default","rope_theta":1000000.0}}"#)
            .resolve(Path::new("t"))
            .unwrap();
        assert!(c.qkv_bias && !c.o_bias);
        assert_eq!(c.rope_theta, 1e6);
        assert_eq!(c.group_size(), 2);
    }

    #[test]
    fn rejects_unknown_architectures_and_scalings() {
        let e = raw(r#"{"model_type":"gpt2"}"#).resolve(Path::new("t")).unwrap_err();
        assert_eq!(e.code(), "E_UNSUPPORTED");
        let e = raw(r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,
            "num_hidden_layers":2,"num_attention_heads":2,"rope_scaling":{"type":"yarn","factor":2}}"#)
        .resolve(Path::new("t"))
        .unwrap_err();
        assert_eq!(e.code(), "E_UNSUPPORTED");
    }

    #[test]
    fn rejects_heads_that_do_not_group() {
        let e =
            raw(r#"{"model_type":"llama","vocab_size":10,"hidden_size":9,"intermediate_size":16,
            "num_hidden_layers":2,"num_attention_heads":3,"num_key_value_heads":2}"#)
            .resolve(Path::new("t"))
            .unwrap_err();
        assert_eq!(e.code(), "E_MODEL_FORMAT");
    }

    #[test]
    fn impossible_sizes_are_format_errors_whatever_their_sign() {
        let base: serde_json::Value = serde_json::from_str(
            r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,
            "num_hidden_layers":2,"num_attention_heads":2}"#,
        )
        .unwrap();
        for (key, value) in [
            ("max_position_embeddings", "0"),
            ("num_hidden_layers", "0"),
            ("num_key_value_heads", "0"),
            ("rms_norm_eps", "-1"),
            ("rope_theta", "0"),
            ("bos_token_id", "10"),
        ] {
            let mut json = base.clone();
            json[key] = serde_json::from_str(value).unwrap();
            let e = raw(&json.to_string()).resolve(Path::new("c.json")).unwrap_err();
            assert_eq!(e.code(), "E_MODEL_FORMAT", "{key} = {value}: {e}");
            assert!(e.to_string().contains(key) && e.to_string().contains("c.json"), "{e}");
        }
    }
}
