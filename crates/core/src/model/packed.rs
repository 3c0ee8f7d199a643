//! Forward passes over sequences packed row after row into one `[N, d]` batch, without padding
//! (the "varlen" layout of flash-attention and vLLM): the linear layers, norms and RoPE run on
//! every real token at once, attention runs sequence by sequence. A sequence may continue
//! another one of the same batch, attending to its keys and values as a KV cache would: the
//! choices of a multiple-choice example share their context (METHODS.md §4.2), so the context
//! is one sequence and each choice's rest another that continues it, and both run in one pass.
//! The math is the padded pass's; only the order in which the same products are summed changes.

use std::ops::Range;

use candle_core::{Module, Tensor};

use crate::error::{Error, Result};
use crate::model::config::Config;
use crate::model::decoder::{
    Attention, CausalLm, DecoderLayer, KeyValues, Mode, NoObserver, Rope, TokenMask,
};

/// Sequences packed into one batch.
#[derive(Debug, Clone)]
pub struct Packing {
    /// `[N]` u32, every sequence's tokens in order.
    ids: Tensor,
    /// Each sequence's rows.
    spans: Vec<Range<usize>>,
    /// The rows of the earlier sequence each one continues (its positions start after them).
    past: Vec<Option<Range<usize>>>,
    /// RoPE tables at every row's position, `[N, d_h/2]`.
    cos: Tensor,
    sin: Tensor,
    sliding_window: Option<usize>,
}

impl Packing {
    /// Packs `sequences`: each is its tokens and, optionally, the index of an earlier sequence
    /// that starts at position 0 and that it continues.
    pub fn new(lm: &CausalLm, cfg: &Config, sequences: &[(&[u32], Option<usize>)]) -> Result<Self> {
        let mut ids = Vec::new();
        let mut spans: Vec<Range<usize>> = Vec::with_capacity(sequences.len());
        let mut past: Vec<Option<Range<usize>>> = Vec::with_capacity(sequences.len());
        let mut positions = Vec::new();
        for (j, &(tokens, continues)) in sequences.iter().enumerate() {
            let before = match continues {
                None => None,
                Some(c) if c < j && past[c].is_none() => Some(spans[c].clone()),
                Some(c) => {
                    return Err(Error::Internal(format!(
                        "packed sequence {j} continues {c}, which is not an earlier sequence \
                         starting at position 0"
                    )))
                }
            };
            let offset = before.as_ref().map_or(0, |r| r.len());
            spans.push(ids.len()..ids.len() + tokens.len());
            past.push(before);
            ids.extend_from_slice(tokens);
            positions.extend((offset..offset + tokens.len()).map(|p| p as u32));
        }
        let device = lm.device();
        let longest = positions.iter().max().map_or(0, |&p| p as usize + 1);
        let rope = Rope::new(cfg, longest, lm.dtype(), device)?;
        let (cos, sin) = rope.rows(&Tensor::new(positions.as_slice(), device)?)?;
        Ok(Self {
            ids: Tensor::new(ids.as_slice(), device)?,
            spans,
            past,
            cos,
            sin,
            sliding_window: cfg.sliding_window,
        })
    }

    /// The rows of sequence `j`.
    pub fn span(&self, j: usize) -> Range<usize> {
        self.spans[j].clone()
    }
}

impl Attention {
    /// [`Attention::attend`] over a packing: `x` is `[N, d]`, the result `[N, n_q·d_h]`.
    fn attend_packed(&self, x: &Tensor, packing: &Packing) -> Result<Tensor> {
        let n = x.dim(0)?;
        let (q, kv) = self.project(&x.unsqueeze(0)?, &packing.cos, &packing.sin, Mode::Infer)?;
        let mut out = Vec::with_capacity(packing.spans.len());
        for (span, past) in packing.spans.iter().zip(&packing.past) {
            if span.is_empty() {
                continue;
            }
            let own = |t: &Tensor| t.narrow(2, span.start, span.len());
            let (kv, offset) = match past {
                None => (KeyValues { k: own(&kv.k)?, v: own(&kv.v)? }, 0),
                Some(p) => {
                    let before = |t: &Tensor| t.narrow(2, p.start, p.len());
                    let k = Tensor::cat(&[before(&kv.k)?, own(&kv.k)?], 2)?;
                    let v = Tensor::cat(&[before(&kv.v)?, own(&kv.v)?], 2)?;
                    (KeyValues { k, v }, p.len())
                }
            };
            let q = own(&q)?.contiguous()?;
            let window = packing.sliding_window;
            out.push(Mode::Infer.causal_attention(&q, &kv, offset, self.group(), window)?);
        }
        let out = Tensor::cat(&out, 2)?; // [1, n_q, N, d_h]
        Ok(out.squeeze(0)?.transpose(0, 1)?.reshape((n, ()))?)
    }
}

impl DecoderLayer {
    /// [`DecoderLayer::forward`] over a packing, `x`: `[N, d]`.
    fn forward_packed(&self, index: usize, x: &Tensor, packing: &Packing) -> Result<Tensor> {
        let o = self.self_attn.attend_packed(&self.input_layernorm.forward(x)?, packing)?;
        // One row of N real tokens: observers are not fed from packed passes.
        let tokens =
            TokenMask { lengths: vec![x.dim(0)?], seq_len: x.dim(0)?, weights: None, batch: 0 };
        self.after_attention(index, x, &o, &tokens, Mode::Infer, &mut NoObserver)
    }
}

impl CausalLm {
    /// `ĥ` of every row of `packing`, `[N, d]`. `check` runs before every layer (cancellation).
    pub fn forward_packed(
        &self,
        packing: &Packing,
        check: &dyn Fn() -> Result<()>,
    ) -> Result<Tensor> {
        let mut out = self.forward_packed_runs(std::slice::from_ref(packing), check)?;
        Ok(out.pop().expect("one packing gives one output"))
    }

    /// [`forward_packed`](Self::forward_packed) of several packings: one after the other when
    /// the layers are in memory, layer by layer over all of them when the model is streamed (each
    /// layer read once for all). The same products either way.
    pub fn forward_packed_runs(
        &self,
        packings: &[Packing],
        check: &dyn Fn() -> Result<()>,
    ) -> Result<Vec<Tensor>> {
        let embed = |p: &Packing| self.embed_tokens.index_select(&p.ids, 0);
        let mut out = Vec::with_capacity(packings.len());
        if !self.is_streamed() {
            for p in packings {
                let mut h = embed(p)?;
                for (i, layer) in self.layers.iter().enumerate() {
                    check()?;
                    h = layer.get()?.forward_packed(i, &h, p)?;
                }
                out.push(self.norm.forward(&h)?);
            }
            return Ok(out);
        }
        let mut states = packings.iter().map(embed).collect::<candle_core::Result<Vec<_>>>()?;
        for (i, slot) in self.layers.iter().enumerate() {
            check()?;
            let layer = slot.get()?;
            for (h, p) in states.iter_mut().zip(packings) {
                *h = layer.forward_packed(i, h, p)?;
            }
        }
        for h in states {
            out.push(self.norm.forward(&h)?);
        }
        Ok(out)
    }
}
