//! layerfold-core: everything that computes. Loading Llama-family checkpoints, the decoder and its
//! observers, calibration, scores, methods, evaluation and atomic saving. No Node types, no
//! printing, no environment variables (STYLE.md, "Crate boundaries").

pub mod analysis;
pub mod calib;
pub mod compare;
pub mod context;
pub mod distill;
pub mod error;
pub mod eval;
#[doc(hidden)]
pub mod fuzzing;
pub mod methods;
pub mod model;
pub mod output;
pub mod score;

pub use context::{CancelToken, Progress, RunContext, Stage, TrainingProgress};
pub use error::{Error, Result};
pub use model::{LoadOptions, Model};

/// The library behind the CPU's f32 matrix products: `mkl` when the build linked Intel MKL
/// (scripts/mkl.mjs, crates/kernels/src/blas.rs), else `gemm` (candle's own).
pub fn cpu_blas() -> &'static str {
    if layerfold_kernels::blas::MKL {
        "mkl"
    } else {
        "gemm"
    }
}
