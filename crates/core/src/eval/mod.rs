//! Evaluation (METHODS.md §4).

pub mod perplexity;
