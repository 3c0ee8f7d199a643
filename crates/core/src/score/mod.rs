//! Scores of layers and of candidate models (METHODS.md §2). Each is an [`Observer`] or a function
//! of observed states, so one calibration pass computes every score a method needs.
//!
//! [`Observer`]: crate::model::decoder::Observer

pub mod angular;
pub mod bi;
pub mod channel_sensitivity;
pub mod cka;
pub mod output_similarity;

use candle_core::{DType, Tensor, D};

use crate::error::Result;

/// Per-token cosine similarity of two `[b, s, d]` states, as `[b][s]` f32 (NaN where a norm is 0).
pub(crate) fn token_cosines(a: &Tensor, b: &Tensor) -> Result<Vec<Vec<f32>>> {
    let a = a.to_dtype(DType::F32)?;
    let b = b.to_dtype(DType::F32)?;
    let dot = (&a * &b)?.sum(D::Minus1)?;
    let na = a.sqr()?.sum(D::Minus1)?.sqrt()?;
    let nb = b.sqr()?.sum(D::Minus1)?.sqrt()?;
    Ok((dot / (na * nb)?)?.to_vec2::<f32>()?)
}
