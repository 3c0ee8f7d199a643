//! Building a [`CausalLm`] from any checkpoint format: a [`WeightSource`] hands out tensors by
//! their Hugging Face name, and [`build`] walks those names, checks every shape against the
//! configuration and converts to the requested dtype and device.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::context::{RunContext, Stage};
use crate::error::{Error, Result};
use crate::model::config::{Architecture, Config};
use crate::model::decoder::{Attention, CausalLm, DecoderLayer, Linear, Mlp, RmsNorm};

/// A checkpoint that yields tensors by HF name (`model.layers.0.self_attn.q_proj.weight`).
pub trait WeightSource {
    /// The file or folder, for messages.
    fn path(&self) -> &Path;
    /// The tensor in any dtype on the CPU, or `None` if the checkpoint has no such tensor.
    fn load(&self, name: &str) -> Result<Option<Tensor>>;
}

struct Builder<'a> {
    src: &'a dyn WeightSource,
    dtype: DType,
    device: &'a Device,
}

impl Builder<'_> {
    fn optional(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        let Some(t) = self.src.load(name)? else { return Ok(None) };
        if t.dims() != shape {
            return Err(Error::TensorShape {
                path: self.src.path().to_path_buf(),
                name: name.to_string(),
                expected: shape.to_vec(),
                got: t.dims().to_vec(),
            });
        }
        Ok(Some(t.to_dtype(self.dtype)?.to_device(self.device)?))
    }

    fn required(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.optional(name, shape)?.ok_or_else(|| Error::MissingTensor {
            path: self.src.path().to_path_buf(),
            name: name.to_string(),
        })
    }

    fn linear(&self, prefix: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
        let weight = self.required(&format!("{prefix}.weight"), &[out, inp])?;
        let bias =
            if bias { Some(self.required(&format!("{prefix}.bias"), &[out])?) } else { None };
        Ok(Linear::new(weight, bias))
    }

    fn norm(&self, name: &str, width: usize, eps: f64) -> Result<RmsNorm> {
        Ok(RmsNorm { weight: self.required(name, &[width])?, eps })
    }

    fn layer(&self, cfg: &Config, i: usize) -> Result<DecoderLayer> {
        let p = format!("model.layers.{i}");
        let (d, dh, eps) = (cfg.hidden_size, cfg.head_dim, cfg.rms_norm_eps);
        let (q, kv, ff) =
            (cfg.num_attention_heads * dh, cfg.num_key_value_heads * dh, cfg.intermediate_size);
        let qwen3 = cfg.architecture == Architecture::Qwen3;
        let head_norm = |which: &str| -> Result<Option<RmsNorm>> {
            if qwen3 {
                Ok(Some(self.norm(&format!("{p}.self_attn.{which}.weight"), dh, eps)?))
            } else {
                Ok(None)
            }
        };
        Ok(DecoderLayer {
            self_attn: Attention {
                q_proj: self.linear(&format!("{p}.self_attn.q_proj"), q, d, cfg.qkv_bias)?,
                k_proj: self.linear(&format!("{p}.self_attn.k_proj"), kv, d, cfg.qkv_bias)?,
                v_proj: self.linear(&format!("{p}.self_attn.v_proj"), kv, d, cfg.qkv_bias)?,
                o_proj: self.linear(&format!("{p}.self_attn.o_proj"), d, q, cfg.o_bias)?,
                q_norm: head_norm("q_norm")?,
                k_norm: head_norm("k_norm")?,
                head_dim: dh,
            },
            mlp: Mlp {
                gate_proj: self.linear(&format!("{p}.mlp.gate_proj"), ff, d, cfg.mlp_bias)?,
                up_proj: self.linear(&format!("{p}.mlp.up_proj"), ff, d, cfg.mlp_bias)?,
                down_proj: self.linear(&format!("{p}.mlp.down_proj"), d, ff, cfg.mlp_bias)?,
            },
            input_layernorm: self.norm(&format!("{p}.input_layernorm.weight"), d, eps)?,
            post_attention_layernorm: self.norm(
                &format!("{p}.post_attention_layernorm.weight"),
                d,
                eps,
            )?,
        })
    }
}

/// Loads every tensor `cfg` calls for from `src`, in `dtype` on `device`. Reports one progress
/// unit per layer and checks for cancellation as often.
pub fn build(
    cfg: &Config,
    src: &dyn WeightSource,
    dtype: DType,
    device: &Device,
    ctx: &RunContext,
) -> Result<CausalLm> {
    let b = Builder { src, dtype, device };
    let (v, d) = (cfg.vocab_size, cfg.hidden_size);
    let total = cfg.num_hidden_layers as u64;
    let embed_tokens = b.required("model.embed_tokens.weight", &[v, d])?;
    let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
    for i in 0..cfg.num_hidden_layers {
        ctx.check_cancelled()?;
        layers.push(b.layer(cfg, i)?);
        ctx.report(Stage::Load, i as u64 + 1, total);
    }
    let norm = b.norm("model.norm.weight", d, cfg.rms_norm_eps)?;
    // transformers ties the head to the embeddings whenever the config says so, ignoring any
    // stored `lm_head.weight`.
    let lm_head =
        if cfg.tie_word_embeddings { None } else { Some(b.required("lm_head.weight", &[v, d])?) };
    Ok(CausalLm { embed_tokens, layers, norm, lm_head })
}
