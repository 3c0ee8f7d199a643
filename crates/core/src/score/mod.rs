//! Scores of layers and of candidate models (METHODS.md §2). Each is an [`Observer`] or a function
//! of observed states, so one calibration pass computes every score a method needs.
//!
//! [`Observer`]: crate::model::decoder::Observer

pub mod angular;
pub mod bi;
pub mod channel_sensitivity;
pub mod cka;
pub mod output_similarity;

use candle_core::Tensor;

use crate::error::Result;

/// Per-token cosine similarity of two `[b, s, d]` states, as `[b][s]` f32 (NaN where a norm is 0).
pub(crate) fn token_cosines(a: &Tensor, b: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(layerfold_kernels::row_cosines(a, b)?.to_vec2::<f32>()?)
}
