//! Scores of layers and of candidate models (METHODS.md §2). Each is an [`Observer`] or a function
//! of observed states, so one calibration pass computes every score a method needs.
//!
//! [`Observer`]: crate::model::decoder::Observer

pub mod angular;
pub mod bi;
pub mod channel_sensitivity;
pub mod cka;
pub mod output_similarity;
