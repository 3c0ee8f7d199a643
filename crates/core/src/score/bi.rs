//! Block Influence (ShortGPT; METHODS.md §2.1): `BI_i = mean over tokens of 1 − cos(h_i, h_{i+1})`,
//! where the last layer's second state is the post-norm `ĥ` (HF's convention) or, as an option,
//! `h_L`. A NaN cosine counts as 0.5. CoMe's variant (clamp `cos` to `[0, 1]`, sum instead of
//! mean) is accumulated in the same pass.

use std::collections::HashMap;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::decoder::{Observer, TokenMask};

/// Which state stands after the last layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LastState {
    /// `ĥ = FinalNorm(h_L)`, as in HF's `output_hidden_states` (the references' choice).
    #[default]
    PostNorm,
    /// `h_L`, the last layer's output before the final norm.
    PreNorm,
}

/// Accumulates BI for every layer of a model with `n_layers` layers.
pub struct BlockInfluence {
    n_layers: usize,
    last: LastState,
    /// `h_i` of each batch in flight (by [`TokenMask::batch`]), awaiting `h_{i+1}`.
    prev: HashMap<usize, Tensor>,
    /// Σ over tokens of `1 − cos` (NaN → 0.5).
    sum: Vec<f64>,
    /// Σ over tokens of `1 − clamp(cos, 0, 1)` (CoMe).
    come_sum: Vec<f64>,
    /// Tokens seen per layer.
    tokens: Vec<usize>,
}

impl BlockInfluence {
    pub fn new(n_layers: usize, last: LastState) -> Self {
        Self {
            n_layers,
            last,
            prev: HashMap::new(),
            sum: vec![0.0; n_layers],
            come_sum: vec![0.0; n_layers],
            tokens: vec![0; n_layers],
        }
    }

    fn pair(&mut self, layer: usize, next: &Tensor, tokens: &TokenMask) -> Result<()> {
        let prev = self.prev.get(&tokens.batch).expect("callers check that h_i was observed");
        // `[b][s]` f32, NaN where a norm is 0.
        let cos = layerfold_kernels::row_cosines(prev, next)?.to_vec2::<f32>()?;
        for (row, &len) in cos.iter().zip(&tokens.lengths) {
            for &c in &row[..len] {
                let (plain, clamped) =
                    if c.is_nan() { (0.5, 0.5) } else { (c as f64, c.clamp(0.0, 1.0) as f64) };
                self.sum[layer] += 1.0 - plain;
                self.come_sum[layer] += 1.0 - clamped;
            }
        }
        self.tokens[layer] += tokens.count();
        Ok(())
    }

    /// `BI_i` (means over calibration tokens), one per layer.
    pub fn mean(&self) -> Vec<f64> {
        self.sum.iter().zip(&self.tokens).map(|(s, &n)| s / n.max(1) as f64).collect()
    }

    /// Keeps layers `..from` of `self` and takes layers `from..` from `fresh`, which observed a
    /// pass that started at layer `from` of a model with `fresh.n_layers` layers.
    pub fn splice(&mut self, from: usize, fresh: BlockInfluence) {
        let keep = |old: &mut Vec<f64>, new: Vec<f64>| {
            old.truncate(from);
            old.extend_from_slice(&new[from..]);
        };
        keep(&mut self.sum, fresh.sum);
        keep(&mut self.come_sum, fresh.come_sum);
        self.tokens.truncate(from);
        self.tokens.extend_from_slice(&fresh.tokens[from..]);
        self.n_layers = fresh.n_layers;
    }

    /// CoMe's BI: sums of `1 − clamp(cos, 0, 1)`.
    pub fn come_sum(&self) -> &[f64] {
        &self.come_sum
    }
}

impl Observer for BlockInfluence {
    fn reads_layer_internals(&self) -> bool {
        false
    }

    fn hidden_state(&mut self, i: usize, h: &Tensor, tokens: &TokenMask) -> Result<()> {
        // A pass may start at any layer (a re-run from a merged layer): the first state only
        // primes `prev`.
        let primed = self.prev.contains_key(&tokens.batch);
        if i > 0 && primed && (i < self.n_layers || self.last == LastState::PreNorm) {
            self.pair(i - 1, h, tokens)?;
        }
        if i < self.n_layers {
            self.prev.insert(tokens.batch, h.clone());
        }
        Ok(())
    }

    fn final_state(&mut self, h: &Tensor, tokens: &TokenMask) -> Result<()> {
        if self.last == LastState::PostNorm && self.prev.contains_key(&tokens.batch) {
            self.pair(self.n_layers - 1, h, tokens)?;
        }
        self.prev.remove(&tokens.batch);
        Ok(())
    }
}
