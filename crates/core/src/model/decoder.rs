//! The Llama-family decoder (Llama, Mistral, Qwen2, Qwen3), after transformers'
//! `modeling_llama.py` / `modeling_qwen3.py` and candle's `qwen2.rs`.
//!
//! candle-transformers' Llama returns only the last position and hides its layers, so layerfold
//! has its own: full-sequence states, an editable list of layers whose head counts and FFN width are
//! read from each layer's own weights (a merged layer may be wider, METHODS.md §3.4), and
//! [`Observer`] hooks that see every state the methods score without the decoder storing any.
//!
//! Precision follows transformers: RMSNorm and softmax accumulate in f32, RoPE tables are computed
//! in f32 and cast to the model dtype.

use candle_core::{DType, Device, Module, Tensor, D};

use crate::error::Result;
use crate::model::config::{Config, Llama3RopeScaling};
use crate::model::stream::LayerSlot;

/// A dense layer `y = x Wᵀ + b` with HF's `[out, in]` weight, and while a LoRA run trains it, a
/// low-rank adapter beside the frozen weight.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub lora: Option<Lora>,
}

/// A low-rank adapter (LoRA, Hu et al. 2021, as PEFT names it): `y += scale · (x Aᵀ) Bᵀ` with
/// `A: [r, in]`, `B: [out, r]`. The frozen weight never gets a gradient, so only `A` and `B` carry
/// gradients and optimizer moments.
#[derive(Debug, Clone)]
pub struct Lora {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias, lora: None }
    }

    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// `residual + self(x)`, a residual connection's sum, made by the product itself (no pass of
    /// its own over the sum).
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        Ok(self.product(x, Some(residual))?)
    }

    /// `x Wᵀ` (plus `residual`), then the adapter's and the bias's terms, as one large matmul over
    /// all leading dimensions instead of a batched one.
    fn product(&self, x: &Tensor, residual: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let dims = x.dims();
        let (rows, last) = (x.elem_count() / dims[dims.len() - 1], dims[dims.len() - 1]);
        let x = x.reshape((rows, last))?;
        let mut y = match residual {
            Some(r) => {
                let r = r.reshape((rows, self.out_features()))?;
                layerfold_kernels::linear_add(&x, &self.weight, &r)?
            }
            None => layerfold_kernels::linear(&x, &self.weight)?,
        };
        if let Some(l) = &self.lora {
            y = (y + (x.matmul(&l.a.t()?)?.matmul(&l.b.t()?)? * l.scale)?)?;
        }
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out = dims.to_vec();
        *out.last_mut().expect("a tensor fed to Linear has at least one dimension") =
            self.out_features();
        y.reshape(out)
    }

    /// The adapter folded into the weight, `W + scale · B A`, in the weight's dtype.
    pub fn merge_lora(&self) -> Result<Linear> {
        let Some(l) = &self.lora else { return Ok(self.clone()) };
        let delta = (l.b.to_dtype(DType::F32)?.matmul(&l.a.to_dtype(DType::F32)?)? * l.scale)?;
        let weight = (self.weight.to_dtype(DType::F32)? + delta)?.to_dtype(self.weight.dtype())?;
        Ok(Linear::new(weight, self.bias.clone()))
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.product(x, None)
    }
}

/// Whether a pass trains. The fused ops (RMSNorm, RoPE with the head split, causal attention and
/// SwiGLU) have no backward pass, and candle drops their gradients silently; training runs their
/// composed, differentiable definitions instead. This is the one place that chooses. (The
/// projections, `linear` and `linear_add`, have their backward pass and serve both.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Infer,
    Train,
}

impl Mode {
    pub fn rms_norm(self, norm: &RmsNorm, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Mode::Infer => norm.forward(x)?,
            Mode::Train => layerfold_kernels::rms_norm_slow(x, &norm.weight, norm.eps as f32)?,
        })
    }

    /// `x` `[b, s, heads·d_h]` split into `[b, heads, s, d_h]` (contiguous) with RoPE
    /// (rotate-half) applied by the tables `[s, d_h/2]`.
    pub fn rope_heads(
        self,
        x: &Tensor,
        heads: usize,
        cos: &Tensor,
        sin: &Tensor,
    ) -> Result<Tensor> {
        Ok(match self {
            Mode::Infer => layerfold_kernels::rope_heads(x, heads, cos, sin)?,
            Mode::Train => layerfold_kernels::rope_heads_slow(x, heads, cos, sin)?,
        })
    }

    /// Causal attention of queries `q` (`[b, n_q, s, d_h]`, contiguous) at positions
    /// `offset..offset + s` over keys and values `k`, `v` (`[b, n_kv, offset + s, d_h]`, positions
    /// from 0), `group` query heads per KV head. Returns `[b, n_q, s, d_h]`.
    pub fn causal_attention(
        self,
        q: &Tensor,
        kv: &KeyValues,
        offset: usize,
        group: usize,
        window: Option<usize>,
    ) -> Result<Tensor> {
        let (k, v) = (&kv.k, &kv.v);
        Ok(match self {
            Mode::Infer => layerfold_kernels::causal_attention(q, k, v, offset, group, window)?,
            Mode::Train => {
                layerfold_kernels::causal_attention_slow(q, k, v, offset, group, window)?
            }
        })
    }

    /// `silu(gate) ⊙ up`.
    pub fn swiglu(self, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Mode::Infer => layerfold_kernels::swiglu(gate, up)?,
            Mode::Train => layerfold_kernels::swiglu_slow(gate, up)?,
        })
    }
}

/// RMSNorm over the last dimension (transformers `LlamaRMSNorm`).
#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        layerfold_kernels::rms_norm(x, &self.weight, self.eps as f32)
    }
}

/// Self-attention with grouped KV heads and rotary position embeddings.
#[derive(Debug, Clone)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    /// Qwen3's per-head norms, applied before RoPE.
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    pub head_dim: usize,
}

impl Attention {
    pub fn num_heads(&self) -> usize {
        self.q_proj.out_features() / self.head_dim
    }

    pub fn num_kv_heads(&self) -> usize {
        self.k_proj.out_features() / self.head_dim
    }

    /// Query heads per KV head.
    pub fn group(&self) -> usize {
        self.num_heads() / self.num_kv_heads()
    }

    /// `x`: `[b, s, d]` (already normalised). Returns the input of `o_proj`, `[b, s, n_q·d_h]`.
    pub fn attend(&self, x: &Tensor, ctx: &ForwardContext) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let (cos, sin) = ctx.rope.at(0, s)?;
        let (q, kv) = self.project(x, &cos, &sin, ctx.mode)?;
        let out = ctx.mode.causal_attention(&q, &kv, 0, self.group(), ctx.sliding_window)?;
        Ok(out.transpose(1, 2)?.reshape((b, s, ()))?)
    }

    /// Queries and keys (RoPE applied with `cos`, `sin`: `[s, d_h/2]`, the tables at the positions
    /// of `x`'s rows) and values of `x` (`[b, s, d]`), each `[b, heads, s, d_h]`.
    pub(crate) fn project(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mode: Mode,
    ) -> Result<(Tensor, KeyValues)> {
        Ok((self.queries(x, cos, sin, mode)?, self.keys_values(x, cos, sin, mode)?))
    }

    /// The queries of [`project`](Self::project) alone.
    fn queries(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, mode: Mode) -> Result<Tensor> {
        let q = self.projected(x, &self.q_proj, &self.q_norm, mode)?;
        mode.rope_heads(&q, self.num_heads(), cos, sin)
    }

    /// The keys and values of [`project`](Self::project) alone.
    fn keys_values(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, mode: Mode) -> Result<KeyValues> {
        let (b, s, _) = x.dims3()?;
        let n_kv = self.num_kv_heads();
        let k = self.projected(x, &self.k_proj, &self.k_norm, mode)?;
        Ok(KeyValues {
            k: mode.rope_heads(&k, n_kv, cos, sin)?,
            v: self
                .projected(x, &self.v_proj, &None, mode)?
                .reshape((b, s, n_kv, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()?,
        })
    }

    /// `proj(x)`, `[b, s, heads·d_h]`, with Qwen3's per-head norm applied when there is one.
    fn projected(
        &self,
        x: &Tensor,
        proj: &Linear,
        norm: &Option<RmsNorm>,
        mode: Mode,
    ) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let t = proj.forward(x)?;
        Ok(match norm {
            Some(norm) => {
                mode.rms_norm(norm, &t.reshape((b, s, (), self.head_dim))?)?.reshape((b, s, ()))?
            }
            None => t,
        })
    }
}

/// One layer's keys (after RoPE) and values for a run of positions: `[b, n_kv, len, d_h]` each.
#[derive(Debug, Clone)]
pub struct KeyValues {
    pub k: Tensor,
    pub v: Tensor,
}

/// The SwiGLU feed-forward block.
#[derive(Debug, Clone)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl Mlp {
    pub fn intermediate_size(&self) -> usize {
        self.gate_proj.out_features()
    }

    /// The input of `down_proj`: `silu(W_gate u) ⊙ W_up u`.
    pub fn activation(&self, u: &Tensor, mode: Mode) -> Result<Tensor> {
        mode.swiglu(&self.gate_proj.forward(u)?, &self.up_proj.forward(u)?)
    }
}

/// One decoder layer: `y = x + Attn(norm_in(x))`, `z = y + FFN(norm_post(y))` (METHODS.md §0).
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    pub self_attn: Attention,
    pub mlp: Mlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    /// `index` is the layer's position in the current list, passed to the observer.
    pub fn forward(
        &self,
        index: usize,
        x: &Tensor,
        ctx: &ForwardContext,
        obs: &mut dyn Observer,
    ) -> Result<Tensor> {
        let o = self.self_attn.attend(&ctx.mode.rms_norm(&self.input_layernorm, x)?, ctx)?;
        self.after_attention(index, x, &o, &ctx.tokens, ctx.mode, obs)
    }

    /// The layer's output at each sequence's last real token only, `[b, 1, d]`: keys and values
    /// at every position, the rest for one query per sequence, about a sixth of
    /// [`forward`](Self::forward)'s work. What a score of last-token states needs of the last
    /// layer (CoMe's re-scoring). Observers are not fed.
    pub fn forward_last_token(&self, x: &Tensor, ctx: &ForwardContext) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let (cos, sin) = ctx.rope.at(0, s)?;
        let xn = ctx.mode.rms_norm(&self.input_layernorm, x)?;
        let attn = &self.self_attn;
        let kv = attn.keys_values(&xn, &cos, &sin, ctx.mode)?;
        let (mut heads, mut inputs) = (Vec::with_capacity(b), Vec::with_capacity(b));
        for (row, &len) in ctx.tokens.lengths.iter().enumerate() {
            let Some(last) = len.checked_sub(1) else {
                return Err(crate::error::Error::Internal(format!("row {row} has no tokens")));
            };
            let of_row =
                |t: &Tensor, start: usize, n: usize| t.narrow(0, row, 1)?.narrow(2, start, n);
            let kv_row = KeyValues { k: of_row(&kv.k, 0, len)?, v: of_row(&kv.v, 0, len)? };
            // The one query, rotated to its own position.
            let (cos, sin) = ctx.rope.at(last, 1)?;
            let q_row =
                attn.queries(&xn.narrow(0, row, 1)?.narrow(1, last, 1)?, &cos, &sin, ctx.mode)?;
            let o = ctx.mode.causal_attention(
                &q_row,
                &kv_row,
                last,
                attn.group(),
                ctx.sliding_window,
            )?;
            heads.push(o.transpose(1, 2)?.reshape((1, 1, ()))?);
            inputs.push(x.narrow(0, row, 1)?.narrow(1, last, 1)?);
        }
        let (o, x) = (Tensor::cat(&heads, 0)?, Tensor::cat(&inputs, 0)?);
        self.after_attention(0, &x, &o, &ctx.tokens.last_tokens(), ctx.mode, &mut NoObserver)
    }

    /// The rest of the layer once attention has given `o`, the input of `o_proj`.
    pub(crate) fn after_attention(
        &self,
        index: usize,
        x: &Tensor,
        o: &Tensor,
        tokens: &TokenMask,
        mode: Mode,
        obs: &mut dyn Observer,
    ) -> Result<Tensor> {
        obs.o_proj_input(index, o, tokens)?;
        let y = self.self_attn.o_proj.forward_add(o, x)?;
        let a = self.mlp.activation(&mode.rms_norm(&self.post_attention_layernorm, &y)?, mode)?;
        obs.down_proj_input(index, &a, tokens)?;
        self.mlp.down_proj.forward_add(&a, &y)
    }

    /// The layer with each tensor replaced by `f(name, tensor)`, names as [`Self::named_tensors`].
    pub fn try_map_tensors(
        &self,
        f: &mut dyn FnMut(&str, &Tensor) -> Result<Tensor>,
    ) -> Result<Self> {
        let mapped = self.try_map_linears(&mut |name, l| {
            let weight = f(&format!("{name}.weight"), &l.weight)?;
            let bias = l.bias.as_ref().map(|b| f(&format!("{name}.bias"), b)).transpose()?;
            let lora = match &l.lora {
                Some(lora) => Some(Lora {
                    a: f(&format!("{name}.lora_A.weight"), &lora.a)?,
                    b: f(&format!("{name}.lora_B.weight"), &lora.b)?,
                    scale: lora.scale,
                }),
                None => None,
            };
            Ok(Linear { weight, bias, lora })
        })?;
        let mut norm = |name: &str, n: &RmsNorm| -> Result<RmsNorm> {
            Ok(RmsNorm { weight: f(name, &n.weight)?, eps: n.eps })
        };
        let a = &mapped.self_attn;
        let (q_norm, k_norm) = (
            a.q_norm.as_ref().map(|n| norm("self_attn.q_norm.weight", n)).transpose()?,
            a.k_norm.as_ref().map(|n| norm("self_attn.k_norm.weight", n)).transpose()?,
        );
        Ok(Self {
            self_attn: Attention { q_norm, k_norm, ..mapped.self_attn.clone() },
            input_layernorm: norm("input_layernorm.weight", &self.input_layernorm)?,
            post_attention_layernorm: norm(
                "post_attention_layernorm.weight",
                &self.post_attention_layernorm,
            )?,
            mlp: mapped.mlp,
        })
    }

    /// The seven linears, in HF order (q, k, v, o, gate, up, down).
    pub fn linears(&self) -> [&Linear; 7] {
        let (a, m) = (&self.self_attn, &self.mlp);
        [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj, &m.gate_proj, &m.up_proj, &m.down_proj]
    }

    /// The layer with each of its seven linears (named as in HF, `self_attn.q_proj`) replaced by
    /// `f`'s result; the norms are shared.
    pub fn try_map_linears(
        &self,
        f: &mut dyn FnMut(&str, &Linear) -> Result<Linear>,
    ) -> Result<Self> {
        let mut linear = |name: &str, l: &Linear| f(name, l);
        let a = &self.self_attn;
        let (q_proj, k_proj) =
            (linear("self_attn.q_proj", &a.q_proj)?, linear("self_attn.k_proj", &a.k_proj)?);
        let (v_proj, o_proj) =
            (linear("self_attn.v_proj", &a.v_proj)?, linear("self_attn.o_proj", &a.o_proj)?);
        let gate_proj = linear("mlp.gate_proj", &self.mlp.gate_proj)?;
        let up_proj = linear("mlp.up_proj", &self.mlp.up_proj)?;
        let down_proj = linear("mlp.down_proj", &self.mlp.down_proj)?;
        Ok(Self {
            self_attn: Attention { q_proj, k_proj, v_proj, o_proj, ..a.clone() },
            mlp: Mlp { gate_proj, up_proj, down_proj },
            ..self.clone()
        })
    }

    /// Every tensor of the layer with its HF name relative to `model.layers.{i}.`.
    pub fn named_tensors(&self) -> Vec<(String, &Tensor)> {
        let a = &self.self_attn;
        let linears = [
            ("self_attn.q_proj", &a.q_proj),
            ("self_attn.k_proj", &a.k_proj),
            ("self_attn.v_proj", &a.v_proj),
            ("self_attn.o_proj", &a.o_proj),
            ("mlp.gate_proj", &self.mlp.gate_proj),
            ("mlp.up_proj", &self.mlp.up_proj),
            ("mlp.down_proj", &self.mlp.down_proj),
        ];
        let mut out = Vec::new();
        for (name, l) in linears {
            out.push((format!("{name}.weight"), &l.weight));
            if let Some(b) = &l.bias {
                out.push((format!("{name}.bias"), b));
            }
        }
        if let Some(n) = &a.q_norm {
            out.push(("self_attn.q_norm.weight".into(), &n.weight));
        }
        if let Some(n) = &a.k_norm {
            out.push(("self_attn.k_norm.weight".into(), &n.weight));
        }
        out.push(("input_layernorm.weight".into(), &self.input_layernorm.weight));
        out.push(("post_attention_layernorm.weight".into(), &self.post_attention_layernorm.weight));
        out
    }
}

/// Rotary position embedding tables (transformers `LlamaRotaryEmbedding`, rotate-half layout).
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// Tables for positions `0..len`, `[len, d_h/2]`, in `dtype`.
    pub fn new(cfg: &Config, len: usize, dtype: DType, device: &Device) -> Result<Self> {
        let inv_freq = inverse_frequencies(cfg);
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for pos in 0..len {
            for f in &inv_freq {
                // f32 product as in transformers (autocast disabled, float32 matmul).
                let angle = pos as f32 * *f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let cos = Tensor::from_vec(cos, (len, half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (len, half), device)?.to_dtype(dtype)?;
        Ok(Self { cos, sin })
    }

    /// The tables at positions `offset..offset + s`.
    pub(crate) fn at(&self, offset: usize, s: usize) -> Result<(Tensor, Tensor)> {
        Ok((self.cos.narrow(0, offset, s)?, self.sin.narrow(0, offset, s)?))
    }

    /// The tables at `positions` (u32), one row each.
    pub(crate) fn rows(&self, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((self.cos.index_select(positions, 0)?, self.sin.index_select(positions, 0)?))
    }
}

/// `1 / θ^(2i/d_h)`, with the "llama3" scaling applied when configured.
fn inverse_frequencies(cfg: &Config) -> Vec<f32> {
    let dh = cfg.head_dim;
    let base: Vec<f64> =
        (0..dh / 2).map(|i| 1.0 / cfg.rope_theta.powf((2 * i) as f64 / dh as f64)).collect();
    let scaled = match &cfg.rope_scaling {
        None => base,
        Some(s) => base.into_iter().map(|f| llama3_scale(f, s)).collect(),
    };
    scaled.into_iter().map(|f| f as f32).collect()
}

/// transformers `_compute_llama3_parameters`.
fn llama3_scale(inv_freq: f64, s: &Llama3RopeScaling) -> f64 {
    let old_len = s.original_max_position_embeddings as f64;
    let low_freq_wavelen = old_len / s.low_freq_factor;
    let high_freq_wavelen = old_len / s.high_freq_factor;
    let wavelen = 2.0 * std::f64::consts::PI / inv_freq;
    if wavelen < high_freq_wavelen {
        inv_freq
    } else if wavelen > low_freq_wavelen {
        inv_freq / s.factor
    } else {
        let smooth =
            (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        (1.0 - smooth) * inv_freq / s.factor + smooth * inv_freq
    }
}

/// Which positions of a right-padded batch are real tokens.
#[derive(Debug, Clone)]
pub struct TokenMask {
    /// Real tokens per row.
    pub lengths: Vec<usize>,
    /// Padded row length.
    pub seq_len: usize,
    /// `[b·s]` f32 of 1 (real) and 0 (padding); `None` when no row is padded.
    pub weights: Option<Tensor>,
    /// The batch's place in its pass ([`TokenBatch::index`]): observers that pair states across
    /// calls (`h_i` with `h_{i+1}`) keep one per batch, since a layer-by-layer pass
    /// ([`CausalLm::forward_runs`]) interleaves batches.
    pub batch: usize,
}

impl TokenMask {
    pub fn new(lengths: Vec<usize>, seq_len: usize, batch: usize, device: &Device) -> Result<Self> {
        let weights = if lengths.iter().all(|&l| l == seq_len) {
            None
        } else {
            let w: Vec<f32> = lengths
                .iter()
                .flat_map(|&l| (0..seq_len).map(move |p| if p < l { 1.0 } else { 0.0 }))
                .collect();
            Some(Tensor::from_vec(w, lengths.len() * seq_len, device)?)
        };
        Ok(Self { lengths, seq_len, weights, batch })
    }

    /// The mask of each row's last real token alone (`[b, 1, d]` states of the same batch).
    pub fn last_tokens(&self) -> Self {
        Self { lengths: vec![1; self.lengths.len()], seq_len: 1, weights: None, batch: self.batch }
    }

    /// Number of real tokens.
    pub fn count(&self) -> usize {
        self.lengths.iter().sum()
    }

    /// Per-channel sum over real tokens of `|x|`, in f32: `x` is `[b, s, c]`, the result `[c]`
    /// (the act-intensity op: one pass, no `[b·s, c]` temporary, on every device).
    pub fn abs_sum(&self, x: &Tensor) -> Result<Tensor> {
        let c = x.dim(D::Minus1)?;
        Ok(layerfold_kernels::act_intensity(&x.reshape(((), c))?, self.weights.as_ref())?)
    }
}

/// What a forward pass shares across layers.
#[derive(Debug, Clone)]
pub struct ForwardContext {
    pub rope: Rope,
    /// Keys further back than this are invisible (Mistral).
    pub sliding_window: Option<usize>,
    pub tokens: TokenMask,
    /// Inference (fused ops) or training (differentiable ones).
    pub mode: Mode,
}

/// Hooks into a forward pass. Each receives the state of one batch; observers keep running
/// statistics, never the `[tokens, width]` states of the whole calibration set (METHODS.md §2).
/// `tokens` says which positions are real. Layer indices are positions in the current layer list.
pub trait Observer {
    /// `h_i`: the input of layer `i` for `i < L`, and `h_L`, the last layer's output before the
    /// final norm (METHODS.md §0).
    fn hidden_state(&mut self, _i: usize, _h: &Tensor, _tokens: &TokenMask) -> Result<()> {
        Ok(())
    }
    /// `ĥ = FinalNorm(h_L)`, what the LM head sees.
    fn final_state(&mut self, _h: &Tensor, _tokens: &TokenMask) -> Result<()> {
        Ok(())
    }
    /// The input of layer `layer`'s `down_proj`, `[b, s, I]`.
    fn down_proj_input(&mut self, _layer: usize, _a: &Tensor, _tokens: &TokenMask) -> Result<()> {
        Ok(())
    }
    /// The input of layer `layer`'s `o_proj` (attention output before `W_o`), `[b, s, n_q·d_h]`.
    fn o_proj_input(&mut self, _layer: usize, _o: &Tensor, _tokens: &TokenMask) -> Result<()> {
        Ok(())
    }
    /// Whether it reads states inside the layers (`down_proj_input`, `o_proj_input`), which a
    /// replay of cached hidden states cannot give it. Observers of hidden and final states
    /// only say `false`.
    fn reads_layer_internals(&self) -> bool {
        true
    }
}

/// The observer that observes nothing.
pub struct NoObserver;
impl Observer for NoObserver {
    fn reads_layer_internals(&self) -> bool {
        false
    }
}

/// Several observers fed by one pass.
pub struct Observers<'a>(pub Vec<&'a mut dyn Observer>);

impl Observer for Observers<'_> {
    fn hidden_state(&mut self, i: usize, h: &Tensor, t: &TokenMask) -> Result<()> {
        self.0.iter_mut().try_for_each(|o| o.hidden_state(i, h, t))
    }
    fn final_state(&mut self, h: &Tensor, t: &TokenMask) -> Result<()> {
        self.0.iter_mut().try_for_each(|o| o.final_state(h, t))
    }
    fn down_proj_input(&mut self, l: usize, a: &Tensor, t: &TokenMask) -> Result<()> {
        self.0.iter_mut().try_for_each(|o| o.down_proj_input(l, a, t))
    }
    fn o_proj_input(&mut self, l: usize, x: &Tensor, t: &TokenMask) -> Result<()> {
        self.0.iter_mut().try_for_each(|o| o.o_proj_input(l, x, t))
    }
    fn reads_layer_internals(&self) -> bool {
        self.0.iter().any(|o| o.reads_layer_internals())
    }
}

/// How far a [`CausalLm::forward_runs`] pass is: batches done of all (layers in memory), or
/// layers done of all (streamed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Batches(u64, u64),
    Layers(u64, u64),
}

impl Progress {
    /// `(done, total)` in whichever unit.
    pub fn fraction(self) -> (u64, u64) {
        match self {
            Self::Batches(d, t) | Self::Layers(d, t) => (d, t),
        }
    }
}

/// The decoder stack with its embedding, final norm and LM head.
#[derive(Debug, Clone)]
pub struct CausalLm {
    pub embed_tokens: Tensor,
    /// The editable list of layers: methods remove, replace and insert entries; tensors are shared,
    /// so editing never copies weights. A streamed model's layers stay in the checkpoint until a
    /// pass runs them ([`LayerSlot`]).
    pub layers: Vec<LayerSlot>,
    pub norm: RmsNorm,
    /// `None` when tied to `embed_tokens`.
    pub lm_head: Option<Tensor>,
}

/// A right-padded batch of token sequences.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    /// `[b, s]` u32.
    pub ids: Tensor,
    pub lengths: Vec<usize>,
    /// The batch's place among the batches of one pass (0 for a lone batch).
    pub index: usize,
}

impl TokenBatch {
    /// Pads every sequence on the right with `pad` to the longest one.
    pub fn new(sequences: &[&[u32]], pad: u32, device: &Device) -> Result<Self> {
        let s = sequences.iter().map(|q| q.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(sequences.len() * s);
        for q in sequences {
            ids.extend_from_slice(q);
            ids.extend(std::iter::repeat_n(pad, s - q.len()));
        }
        Ok(Self {
            ids: Tensor::from_vec(ids, (sequences.len(), s), device)?,
            lengths: sequences.iter().map(|q| q.len()).collect(),
            index: 0,
        })
    }

    /// The batch as the `index`-th of a pass.
    pub fn with_index(self, index: usize) -> Self {
        Self { index, ..self }
    }

    pub fn seq_len(&self) -> usize {
        self.ids.dims()[1]
    }
}

impl CausalLm {
    /// Whether some layer is read from the checkpoint when a pass runs it ([`LayerSlot::Mapped`]).
    pub fn is_streamed(&self) -> bool {
        self.layers.iter().any(LayerSlot::is_mapped)
    }

    pub fn lm_head_weight(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens)
    }

    pub fn dtype(&self) -> DType {
        self.embed_tokens.dtype()
    }

    pub fn device(&self) -> &Device {
        self.embed_tokens.device()
    }

    /// The per-pass context for `batch`.
    pub fn context(&self, cfg: &Config, batch: &TokenBatch) -> Result<ForwardContext> {
        self.context_after(cfg, batch, 0)
    }

    /// The per-pass context for `batch` at positions `offset..` (after a prefix of that length).
    pub fn context_after(
        &self,
        cfg: &Config,
        batch: &TokenBatch,
        offset: usize,
    ) -> Result<ForwardContext> {
        let s = batch.seq_len();
        Ok(ForwardContext {
            rope: Rope::new(cfg, offset + s, self.dtype(), self.device())?,
            sliding_window: cfg.sliding_window,
            tokens: TokenMask::new(batch.lengths.clone(), s, batch.index, self.device())?,
            mode: Mode::Infer,
        })
    }

    /// `h_0`, the embeddings of `batch`: `[b, s, d]`.
    pub fn embed(&self, batch: &TokenBatch) -> Result<Tensor> {
        let (b, s) = batch.ids.dims2()?;
        let flat = self.embed_tokens.index_select(&batch.ids.flatten_all()?, 0)?;
        Ok(flat.reshape((b, s, ()))?)
    }

    /// Runs layers `from..` on `h` (= `h_from`) and returns `ĥ`, reporting `h_from..h_L` and `ĥ`.
    /// `from = 0` with `h = embed(batch)` is the full pass; a larger `from` reuses a cached prefix.
    /// `check` runs before every layer (cancellation).
    pub fn forward_from(
        &self,
        from: usize,
        h: Tensor,
        ctx: &ForwardContext,
        obs: &mut dyn Observer,
        check: &dyn Fn() -> Result<()>,
    ) -> Result<Tensor> {
        obs.hidden_state(from, &h, &ctx.tokens)?;
        let mut h = h;
        for i in from..self.layers.len() {
            check()?;
            h = self.layers[i].get()?.forward(i, &h, ctx, obs)?;
            obs.hidden_state(i + 1, &h, &ctx.tokens)?;
        }
        self.finish(h, ctx, obs)
    }

    /// [`forward_from`](Self::forward_from) for several batches: `runs` yields each one's
    /// context (distinct [`TokenBatch::index`]es) and `h_from`, and `sink(k, ĥ)` receives the
    /// `k`-th one's output. Layers in memory run batch by batch, taking each run only when it is
    /// due; a streamed model runs layer by layer over all batches, so that each layer is read
    /// from the checkpoint once per pass. Each batch's observer calls come in the same order
    /// either way, and each layer sees the batches in order, so the statistics are the same bits.
    pub fn forward_runs<'c>(
        &self,
        from: usize,
        runs: impl ExactSizeIterator<Item = Result<(&'c ForwardContext, Tensor)>>,
        obs: &mut dyn Observer,
        sink: &mut dyn FnMut(usize, Tensor) -> Result<()>,
        check: &dyn Fn() -> Result<()>,
        progress: &dyn Fn(Progress),
    ) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        let mut distinct = |c: &ForwardContext| -> Result<()> {
            if seen.insert(c.tokens.batch) {
                Ok(())
            } else {
                Err(crate::error::Error::Internal(format!(
                    "forward_runs: two batches have index {}",
                    c.tokens.batch
                )))
            }
        };
        if !self.layers.iter().skip(from).any(LayerSlot::is_mapped) {
            let total = runs.len() as u64;
            for (k, run) in runs.enumerate() {
                let (c, h) = run?;
                distinct(c)?;
                sink(k, self.forward_from(from, h, c, obs, check)?)?;
                progress(Progress::Batches(k as u64 + 1, total));
            }
            return Ok(());
        }
        let (mut ctxs, mut states) = (Vec::with_capacity(runs.len()), Vec::new());
        for run in runs {
            let (c, h) = run?;
            distinct(c)?;
            obs.hidden_state(from, &h, &c.tokens)?;
            ctxs.push(c);
            states.push(h);
        }
        let total = (self.layers.len() - from) as u64;
        for i in from..self.layers.len() {
            check()?;
            let layer = self.layers[i].get()?;
            for (c, h) in ctxs.iter().zip(states.iter_mut()) {
                *h = layer.forward(i, h, c, obs)?;
                obs.hidden_state(i + 1, h, &c.tokens)?;
            }
            progress(Progress::Layers((i - from) as u64 + 1, total));
        }
        for (k, (c, h)) in ctxs.into_iter().zip(states).enumerate() {
            sink(k, self.finish(h, c, obs)?)?;
        }
        Ok(())
    }

    /// `ĥ = FinalNorm(h_L)`, reported.
    fn finish(&self, h: Tensor, ctx: &ForwardContext, obs: &mut dyn Observer) -> Result<Tensor> {
        let h_hat = ctx.mode.rms_norm(&self.norm, &h)?;
        obs.final_state(&h_hat, &ctx.tokens)?;
        Ok(h_hat)
    }

    /// The full pass: `ĥ` for `batch`, `[b, s, d]`.
    pub fn forward(
        &self,
        cfg: &Config,
        batch: &TokenBatch,
        obs: &mut dyn Observer,
        check: &dyn Fn() -> Result<()>,
    ) -> Result<Tensor> {
        let ctx = self.context(cfg, batch)?;
        self.forward_from(0, self.embed(batch)?, &ctx, obs, check)
    }

    /// Logits in f32 for final states `h` (`[.., d]` → `[.., V]`). Callers chunk long sequences:
    /// `[tokens, V]` logits of a whole window are large.
    pub fn logits(&self, h: &Tensor) -> Result<Tensor> {
        let head = Linear::new(self.lm_head_weight().clone(), None);
        Ok(head.forward(h)?.to_dtype(DType::F32)?)
    }
}
