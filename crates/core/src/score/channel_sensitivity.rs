//! Channel sensitivity (CoMe; METHODS.md §2.5): "activation intensity times weight norm".
//!
//! - FFN channel `j`: `s_j = mean_t |a_j(t)| · ‖W_down[:, j]‖₁`, `a` the input of `down_proj`.
//! - Attention KV group `g`: `e_c(t) = |o_c(t)| · ‖W_o[:, c]‖₁` for every channel `c` of the input of
//!   `o_proj`; `s_g` is the mean of `e_c` over the channels of the `G` query heads that read KV head
//!   `g` (query head `q` reads `q / G`) and over tokens.
//!
//! The observer keeps only running f32 sums of `|a_j|` and `|o_c|` per layer (never a
//! `[tokens, I]` tensor); the weight norms are applied once at the end.

use candle_core::Tensor;

use crate::error::Result;
use crate::model::decoder::{DecoderLayer, Observer, TokenMask};

/// Running `Σ_t |a_j(t)|` and `Σ_t |o_c(t)|` per layer, over real tokens.
pub struct ChannelActivity {
    ffn: Vec<Option<Tensor>>,
    attn: Vec<Option<Tensor>>,
    tokens: Vec<usize>,
}

/// The sensitivities of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSensitivity {
    /// One per FFN channel, `[I]`.
    pub ffn: Vec<f32>,
    /// One per KV group, `[n_kv]`.
    pub kv_groups: Vec<f32>,
}

fn add(slot: &mut Option<Tensor>, x: Tensor) -> Result<()> {
    *slot = Some(match slot.take() {
        Some(acc) => (acc + x)?,
        None => x,
    });
    Ok(())
}

/// `‖W[:, c]‖₁` for every column of an `[out, in]` weight, in f32.
fn column_l1(w: &Tensor) -> Result<Tensor> {
    Ok(layerfold_kernels::act_intensity(w, None)?)
}

impl ChannelActivity {
    pub fn new(n_layers: usize) -> Self {
        Self { ffn: vec![None; n_layers], attn: vec![None; n_layers], tokens: vec![0; n_layers] }
    }

    /// Tokens observed for `layer`.
    pub fn tokens(&self, layer: usize) -> usize {
        self.tokens[layer]
    }

    /// Mean `|a_j|` over tokens (`[I]`), mean `|o_c|` (`[n_q·d_h]`) for `layer`.
    pub fn mean_activity(&self, layer: usize) -> Result<(Tensor, Tensor)> {
        let n = self.tokens[layer].max(1) as f64;
        let missing =
            || crate::error::Error::Internal(format!("no activity observed for layer {layer}"));
        let ffn = self.ffn[layer].as_ref().ok_or_else(missing)?;
        let attn = self.attn[layer].as_ref().ok_or_else(missing)?;
        Ok(((ffn / n)?, (attn / n)?))
    }

    /// The sensitivities of `layer`, whose weights are `weights` (METHODS.md §2.5).
    pub fn sensitivity(&self, layer: usize, weights: &DecoderLayer) -> Result<LayerSensitivity> {
        let (down, o) = (&weights.mlp.down_proj.weight, &weights.self_attn.o_proj.weight);
        self.sensitivity_from(layer, down, o, weights.self_attn.num_kv_heads())
    }

    /// [`sensitivity`](Self::sensitivity) from the two weights it reads, `W_down` and `W_o`, and
    /// the layer's KV head count (what a streamed layer reads without building the layer).
    pub fn sensitivity_from(
        &self,
        layer: usize,
        down_proj: &Tensor,
        o_proj: &Tensor,
        n_kv: usize,
    ) -> Result<LayerSensitivity> {
        let (ffn, attn) = self.mean_activity(layer)?;
        let ffn = (ffn * column_l1(down_proj)?)?;
        let e = (attn * column_l1(o_proj)?)?;
        // Channels are laid out head by head; the G heads of KV group g are contiguous.
        let kv_groups = e.reshape((n_kv, ()))?.mean(1)?;
        Ok(LayerSensitivity { ffn: ffn.to_vec1::<f32>()?, kv_groups: kv_groups.to_vec1::<f32>()? })
    }

    /// Keeps layers `..from` of `self` and takes layers `from..` from `fresh`, which observed a
    /// pass that started at layer `from`.
    pub fn splice(&mut self, from: usize, fresh: ChannelActivity) {
        self.ffn.truncate(from);
        self.attn.truncate(from);
        self.tokens.truncate(from);
        self.ffn.extend(fresh.ffn.into_iter().skip(from));
        self.attn.extend(fresh.attn.into_iter().skip(from));
        self.tokens.extend(fresh.tokens.into_iter().skip(from));
    }
}

impl Observer for ChannelActivity {
    fn down_proj_input(&mut self, layer: usize, a: &Tensor, tokens: &TokenMask) -> Result<()> {
        add(&mut self.ffn[layer], tokens.abs_sum(a)?)?;
        self.tokens[layer] += tokens.count();
        Ok(())
    }

    fn o_proj_input(&mut self, layer: usize, o: &Tensor, tokens: &TokenMask) -> Result<()> {
        add(&mut self.attn[layer], tokens.abs_sum(o)?)
    }
}
