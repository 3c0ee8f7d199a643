//! Output similarity to the original model (LaCo, SLM; METHODS.md §2.3): per calibration sample,
//! the cosine of the whole flattened post-norm state `vec(ĥ)` (every position, BOS included) of the
//! candidate and of the original; averaged over samples.

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::model::decoder::TokenMask;

/// Cosine of `vec(ĥ)` for each real sequence of a batch (`[b, s, d]` states).
pub fn sample_similarities(
    reference: &Tensor,
    candidate: &Tensor,
    tokens: &TokenMask,
) -> Result<Vec<f64>> {
    let r = reference.to_dtype(DType::F64)?;
    let c = candidate.to_dtype(DType::F64)?;
    tokens
        .lengths
        .iter()
        .enumerate()
        .map(|(b, &len)| {
            let x = r.get(b)?.narrow(0, 0, len)?.flatten_all()?;
            let y = c.get(b)?.narrow(0, 0, len)?.flatten_all()?;
            let dot = (&x * &y)?.sum_all()?.to_scalar::<f64>()?;
            let nx = x.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
            let ny = y.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
            Ok(dot / (nx * ny))
        })
        .collect()
}

/// `S(M')`: the mean of [`sample_similarities`] over every batch.
pub fn output_similarity(
    references: &[Tensor],
    candidates: &[Tensor],
    tokens: &[&TokenMask],
) -> Result<f64> {
    let mut all = Vec::new();
    for ((r, c), t) in references.iter().zip(candidates).zip(tokens) {
        all.extend(sample_similarities(r, c, t)?);
    }
    Ok(all.iter().sum::<f64>() / all.len().max(1) as f64)
}
