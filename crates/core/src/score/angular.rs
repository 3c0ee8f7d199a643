//! Angular distance of a block (Gromov et al.; METHODS.md §2.2):
//! `D(ℓ, n) = arccos(clamp(cos(h_ℓ[T], h_{ℓ+n}[T]), −1, 1)) / π` on the last token `T` of each
//! sequence, averaged over sequences; HF's states, so `h_L` is replaced by the post-norm `ĥ`.
//! CoMe's variant clamps `cos` to `[0, 1]` and sums.

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::model::decoder::{Observer, TokenMask};

/// Keeps the last-token state of every sequence at every HF state `h_0…h_{L−1}, ĥ`:
/// `(L + 1) × sequences × d` floats.
pub struct LastTokenStates {
    n_layers: usize,
    /// `[state][sequence]` → `d` floats; state `L` is `ĥ`.
    states: Vec<Vec<Vec<f32>>>,
}

fn last_tokens(h: &Tensor, tokens: &TokenMask) -> Result<Vec<Vec<f32>>> {
    let h = h.to_dtype(DType::F32)?;
    tokens
        .lengths
        .iter()
        .enumerate()
        .map(|(b, &len)| Ok(h.get(b)?.get(len - 1)?.to_vec1::<f32>()?))
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

impl LastTokenStates {
    pub fn new(n_layers: usize) -> Self {
        Self { n_layers, states: vec![Vec::new(); n_layers + 1] }
    }

    fn angles(&self, start: usize, n: usize, clamp_lo: f64) -> impl Iterator<Item = f64> + '_ {
        self.states[start].iter().zip(&self.states[start + n]).map(move |(a, b)| {
            let c = cosine(a, b);
            let c = if c.is_nan() { 1.0 } else { c.clamp(clamp_lo, 1.0) };
            c.acos() / std::f64::consts::PI
        })
    }

    /// `D(start, n)`, the mean over sequences (METHODS.md §2.2).
    pub fn distance(&self, start: usize, n: usize) -> f64 {
        let k = self.states[start].len().max(1) as f64;
        self.angles(start, n, -1.0).sum::<f64>() / k
    }

    /// CoMe's `D(start, n)`: `cos` clamped to `[0, 1]`, summed over sequences.
    pub fn come_distance(&self, start: usize, n: usize) -> f64 {
        self.angles(start, n, 0.0).sum()
    }

    pub fn n_layers(&self) -> usize {
        self.n_layers
    }

    /// Keeps states `..=from` of `self` and takes states `from + 1..` from `fresh`, which observed
    /// a pass that started at layer `from` (its input `h_from` is unchanged).
    pub fn splice(&mut self, from: usize, fresh: LastTokenStates) {
        self.states.truncate(from + 1);
        self.states.extend(fresh.states.into_iter().skip(from + 1));
        self.n_layers = fresh.n_layers;
    }
}

impl Observer for LastTokenStates {
    fn reads_layer_internals(&self) -> bool {
        false
    }

    fn hidden_state(&mut self, i: usize, h: &Tensor, tokens: &TokenMask) -> Result<()> {
        if i < self.n_layers {
            self.states[i].extend(last_tokens(h, tokens)?);
        }
        Ok(())
    }

    fn final_state(&mut self, h: &Tensor, tokens: &TokenMask) -> Result<()> {
        self.states[self.n_layers].extend(last_tokens(h, tokens)?);
        Ok(())
    }
}
