//! Layer-by-layer similarity for analysis and heatmaps (SLM's analysis; METHODS.md §2.4): the mean
//! per-token cosine between every pair of HF states `h_0…h_{L−1}, ĥ`, and linear CKA
//! `ΣHSIC(X,Y) / sqrt(ΣHSIC(X,X)·ΣHSIC(Y,Y))` with `HSIC(X,Y) = ‖YᵀX‖_F²` on column-centred
//! states, accumulated over mini-batches of at most [`CKA_CHUNK`] tokens of one sequence. HSIC is
//! kept as a float (the reference code truncates it to an integer, a bug not copied).

use std::collections::HashMap;

use candle_core::{DType, Tensor, D};
use serde::Serialize;

use crate::error::Result;
use crate::model::decoder::{Observer, TokenMask};

/// Tokens per CKA mini-batch: HSIC is computed through `[chunk, chunk]` Gram matrices.
pub const CKA_CHUNK: usize = 512;

/// Collects the states of each batch and folds them into running pairwise sums when its final
/// state arrives.
pub struct LayerSimilarity {
    n_states: usize,
    /// The states seen so far of each batch in flight (by [`TokenMask::batch`]).
    batch: HashMap<usize, Vec<Tensor>>,
    cos_sum: Vec<f64>,
    hsic: Vec<f64>,
    tokens: usize,
}

/// Symmetric `(L+1) × (L+1)` matrices over HF states `h_0…h_{L−1}, ĥ`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimilarityMatrices {
    /// State names, `h_0` … `h_{L−1}`, `ĥ`.
    pub states: Vec<String>,
    pub cosine: Vec<Vec<f64>>,
    pub cka: Vec<Vec<f64>>,
    pub tokens: usize,
}

/// `Σ_rows A_i · A_j` for every pair of stacked rows: `a` is `[n, m]`, the result `[n, n]`.
fn gram(a: &Tensor) -> Result<Vec<Vec<f64>>> {
    Ok(a.matmul(&a.t()?)?.to_dtype(DType::F64)?.to_vec2::<f64>()?)
}

impl LayerSimilarity {
    pub fn new(n_layers: usize) -> Self {
        let n = n_layers + 1;
        Self {
            n_states: n,
            batch: HashMap::new(),
            cos_sum: vec![0.0; n * n],
            hsic: vec![0.0; n * n],
            tokens: 0,
        }
    }

    fn accumulate(&mut self, states: Vec<Tensor>, tokens: &TokenMask) -> Result<()> {
        for (b, &len) in tokens.lengths.iter().enumerate() {
            let rows: Vec<Tensor> = states
                .iter()
                .map(|h| Ok(h.get(b)?.narrow(0, 0, len)?.to_dtype(DType::F32)?))
                .collect::<Result<_>>()?;
            // Cosine: Σ_t û_i(t)·û_j(t) over unit-normalised rows, stacked as [n, len·d].
            let unit: Vec<Tensor> = rows
                .iter()
                .map(|x| {
                    Ok(x.broadcast_div(&x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)?.flatten_all()?)
                })
                .collect::<Result<_>>()?;
            let g = gram(&Tensor::stack(&unit, 0)?)?;
            for start in (0..len).step_by(CKA_CHUNK) {
                let m = CKA_CHUNK.min(len - start);
                // HSIC through Gram matrices: ‖YᵀX‖² = Σ (X Xᵀ) ⊙ (Y Yᵀ), stacked as [n, m²].
                let grams: Vec<Tensor> = rows
                    .iter()
                    .map(|x| {
                        let x = x.narrow(0, start, m)?;
                        let xc = x.broadcast_sub(&x.mean_keepdim(0)?)?;
                        Ok(xc.matmul(&xc.t()?)?.flatten_all()?)
                    })
                    .collect::<Result<_>>()?;
                let h = gram(&Tensor::stack(&grams, 0)?)?;
                for (acc, v) in self.hsic.iter_mut().zip(h.iter().flatten()) {
                    *acc += v;
                }
            }
            for (acc, v) in self.cos_sum.iter_mut().zip(g.iter().flatten()) {
                *acc += v;
            }
            self.tokens += len;
        }
        Ok(())
    }

    pub fn matrices(&self) -> SimilarityMatrices {
        let n = self.n_states;
        let cosine = (0..n)
            .map(|i| (0..n).map(|j| self.cos_sum[i * n + j] / self.tokens.max(1) as f64).collect())
            .collect();
        let cka = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| {
                        self.hsic[i * n + j] / (self.hsic[i * n + i] * self.hsic[j * n + j]).sqrt()
                    })
                    .collect()
            })
            .collect();
        let mut states: Vec<String> = (0..n - 1).map(|i| format!("h_{i}")).collect();
        states.push("ĥ".into());
        SimilarityMatrices { states, cosine, cka, tokens: self.tokens }
    }
}

impl Observer for LayerSimilarity {
    fn hidden_state(&mut self, i: usize, h: &Tensor, tokens: &TokenMask) -> Result<()> {
        if i + 1 < self.n_states {
            self.batch.entry(tokens.batch).or_default().push(h.clone());
        }
        Ok(())
    }

    fn final_state(&mut self, h: &Tensor, tokens: &TokenMask) -> Result<()> {
        let mut states = self.batch.remove(&tokens.batch).unwrap_or_default();
        states.push(h.clone());
        self.accumulate(states, tokens)
    }
}

/// Linear CKA of two `[N, d]` state matrices (one mini-batch), for tests and one-off use.
pub fn linear_cka(x: &Tensor, y: &Tensor) -> Result<f64> {
    let center = |t: &Tensor| -> Result<Tensor> {
        let t = t.to_dtype(DType::F64)?;
        Ok(t.broadcast_sub(&t.mean_keepdim(0)?)?)
    };
    let (x, y) = (center(x)?, center(y)?);
    let hsic = |a: &Tensor, b: &Tensor| -> Result<f64> {
        Ok(b.t()?.matmul(a)?.sqr()?.sum_all()?.to_scalar::<f64>()?)
    };
    Ok(hsic(&x, &y)? / (hsic(&x, &x)? * hsic(&y, &y)?).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn cka_of_a_state_with_itself_is_one_and_rotation_invariant() {
        let x = Tensor::randn(0f64, 1.0, (200, 16), &Device::Cpu).unwrap();
        assert!((linear_cka(&x, &x).unwrap() - 1.0).abs() < 1e-12);
        // A rotation: the product of two Householder reflections I − 2vvᵀ/‖v‖².
        let reflection = || {
            let v = Tensor::randn(0f64, 1.0, (16, 1), &Device::Cpu).unwrap();
            let vv = v.matmul(&v.t().unwrap()).unwrap();
            let norm = v.sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
            (Tensor::eye(16, DType::F64, &Device::Cpu).unwrap() - (vv * (2.0 / norm)).unwrap())
                .unwrap()
        };
        let q = reflection().matmul(&reflection()).unwrap();
        let y = Tensor::randn(0f64, 1.0, (200, 16), &Device::Cpu).unwrap();
        let base = linear_cka(&x, &y).unwrap();
        let rotated = linear_cka(&x.matmul(&q).unwrap(), &y).unwrap();
        assert!((base - rotated).abs() < 1e-10, "{base} vs {rotated}");
        assert!(base < 0.5, "independent states are dissimilar: {base}");
    }

    #[test]
    fn gram_and_feature_forms_of_hsic_agree() {
        let x = Tensor::randn(0f32, 1.0, (30, 8), &Device::Cpu).unwrap();
        let y = Tensor::randn(0f32, 1.0, (30, 8), &Device::Cpu).unwrap();
        let mut sim = LayerSimilarity::new(1);
        let states = vec![x.unsqueeze(0).unwrap(), y.unsqueeze(0).unwrap()];
        sim.accumulate(states, &TokenMask::new(vec![30], 30, 0, &Device::Cpu).unwrap()).unwrap();
        let m = sim.matrices();
        let direct = linear_cka(&x, &y).unwrap();
        assert!((m.cka[0][1] - direct).abs() < 1e-5, "{} vs {direct}", m.cka[0][1]);
        assert!((m.cka[0][0] - 1.0).abs() < 1e-6);
        assert!((m.cosine[0][0] - 1.0).abs() < 1e-5);
    }
}
