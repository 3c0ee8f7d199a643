//! Evaluation (METHODS.md §4).

pub mod nll;
pub mod perplexity;
