//! Building a [`CausalLm`] from any checkpoint format: a [`WeightSource`] hands out tensors by
//! their Hugging Face name, and [`build`] walks those names, checks every shape against the
//! configuration and converts to the requested dtype and device.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::context::{RunContext, Stage};
use crate::error::{Error, Result};
use crate::model::config::{Architecture, Config};
use crate::model::decoder::{Attention, CausalLm, DecoderLayer, Linear, Mlp, RmsNorm};
use crate::model::stream::{LayerSlot, LayerStore};

/// A checkpoint that yields tensors by HF name (`model.layers.0.self_attn.q_proj.weight`).
pub trait WeightSource {
    /// The file or folder, for messages.
    fn path(&self) -> &Path;
    /// The tensor in any dtype on the CPU, or `None` if the checkpoint has no such tensor.
    fn load(&self, name: &str) -> Result<Option<Tensor>>;
    /// The decoder layers the checkpoint holds: one more than the highest layer index among its
    /// tensor names (0 when there are none).
    fn layer_count(&self) -> usize;
    /// The values of every tensor in the checkpoint (after dequantisation), from its header.
    fn total_elements(&self) -> u64;
}

/// The layer index of a tensor name that starts with `prefix` and then `{i}.`
/// (`model.layers.` for Hugging Face names, `blk.` for GGUF's).
pub fn layer_index(name: &str, prefix: &str) -> Option<usize> {
    name.strip_prefix(prefix)?.split_once('.')?.0.parse().ok()
}

pub(crate) struct Builder<'a> {
    pub(crate) src: &'a dyn WeightSource,
    pub(crate) dtype: DType,
    pub(crate) device: &'a Device,
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
        let t = t.to_dtype(self.dtype)?;
        check_finite(&t, name, self.src.path())?;
        Ok(Some(t.to_device(self.device)?))
    }

    pub(crate) fn required(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
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

    pub(crate) fn layer(&self, cfg: &Config, i: usize) -> Result<DecoderLayer> {
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
    check_layer_count(cfg, src)?;
    let needed = src.total_elements().saturating_mul(dtype.size_in_bytes() as u64);
    if let Some(available) = crate::context::available_memory().filter(|&a| needed > a) {
        return Err(Error::OutOfMemory {
            what: format!("loading `{}` in {dtype:?}", src.path().display()),
            needed,
            available,
            hint: "free memory, load it with `stream` (one layer at a time), in a smaller dtype (bf16), or use a larger machine".into(),
        });
    }
    let b = Builder { src, dtype, device };
    let layers = each_layer(cfg, ctx, |i| Ok(b.layer(cfg, i)?.into()))?;
    finish(&b, cfg, layers)
}

/// [`build`] for layer-at-a-time execution: the embeddings, final norm and LM head are loaded,
/// and each layer is checked once (built and dropped) and then read from `src` whenever a pass
/// runs it ([`LayerSlot::Mapped`]).
pub fn build_streamed(
    cfg: &Config,
    src: Box<dyn WeightSource + Send + Sync>,
    dtype: DType,
    device: &Device,
    ctx: &RunContext,
) -> Result<CausalLm> {
    check_layer_count(cfg, src.as_ref())?;
    let store = Arc::new(LayerStore {
        src,
        config: cfg.clone(),
        dtype,
        device: device.clone(),
        _spill: None,
    });
    let layers = each_layer(cfg, ctx, |i| LayerSlot::mapped(&store, i))?;
    let b = Builder { src: store.src.as_ref(), dtype, device };
    finish(&b, cfg, layers)
}

/// Whether `src` in `dtype` fits the memory available now (true when that is unknown).
pub fn fits_in_memory(src: &dyn WeightSource, dtype: DType) -> bool {
    let needed = src.total_elements().saturating_mul(dtype.size_in_bytes() as u64);
    crate::context::available_memory().is_none_or(|a| needed <= a)
}

fn check_layer_count(cfg: &Config, src: &dyn WeightSource) -> Result<()> {
    let found = src.layer_count();
    if found != cfg.num_hidden_layers {
        return Err(Error::format(
            src.path(),
            "checkpoint",
            format!(
                "the configuration says {} layers (num_hidden_layers) but the weights hold {found}: \
                 config.json does not match the weights",
                cfg.num_hidden_layers
            ),
        ));
    }
    Ok(())
}

fn each_layer(
    cfg: &Config,
    ctx: &RunContext,
    mut layer: impl FnMut(usize) -> Result<LayerSlot>,
) -> Result<Vec<LayerSlot>> {
    let total = cfg.num_hidden_layers as u64;
    let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
    for i in 0..cfg.num_hidden_layers {
        ctx.check_cancelled()?;
        layers.push(layer(i)?);
        ctx.report(Stage::Load, i as u64 + 1, total);
    }
    Ok(layers)
}

/// The embeddings, final norm and LM head around `layers`.
fn finish(b: &Builder, cfg: &Config, layers: Vec<LayerSlot>) -> Result<CausalLm> {
    let (v, d) = (cfg.vocab_size, cfg.hidden_size);
    let embed_tokens = b.required("model.embed_tokens.weight", &[v, d])?;
    let norm = b.norm("model.norm.weight", d, cfg.rms_norm_eps)?;
    // transformers ties the head to the embeddings whenever the config says so, ignoring any
    // stored `lm_head.weight`.
    let lm_head =
        if cfg.tie_word_embeddings { None } else { Some(b.required("lm_head.weight", &[v, d])?) };
    Ok(CausalLm { embed_tokens, layers, norm, lm_head })
}

/// Fails when `t` (tensor `name` of `path`, in the dtype it will be used in) holds NaN or an
/// infinity: every output of the model would then be NaN, and a silent NaN perplexity helps no
/// one. An f32 sum is finite exactly when every value is (bar sums past 3e38, which are counted
/// again and let through when the count is 0).
fn check_finite(t: &Tensor, name: &str, path: &Path) -> Result<()> {
    let values = t.to_dtype(DType::F32)?.flatten_all()?;
    if values.sum_all()?.to_scalar::<f32>()?.is_finite() {
        return Ok(());
    }
    let bad = values.to_vec1::<f32>()?.iter().filter(|v| !v.is_finite()).count();
    if bad == 0 {
        return Ok(());
    }
    Err(Error::format(
        path,
        "checkpoint",
        format!(
            "tensor `{name}` holds {bad} non-finite values (NaN or ±inf) of {} in {:?}: the \
             checkpoint is corrupt, or its values overflow this dtype (load it in f32)",
            values.elem_count(),
            t.dtype()
        ),
    ))
}
