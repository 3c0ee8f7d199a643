//! Evaluation (METHODS.md §4): perplexity, and zero-shot multiple-choice tasks scored as
//! lm-evaluation-harness scores them.

pub mod loglikelihood;
pub mod multiple_choice;
pub mod nll;
pub mod perplexity;
pub mod tasks;
