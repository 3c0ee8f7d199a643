//! Launch parameters of the CUDA kernels. The tuned values come from `tuning.json` (build.rs);
//! the `_with` variants of the ops take explicit ones, for the tuning harness.

/// One kernel's launch parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    /// Threads per block.
    pub block: u32,
    /// Work items per thread: rows per block for act-intensity, rows per thread for concat-cols.
    pub items: u32,
    /// Elements per vector load (1, 2, 4, or 8 for 16-bit types).
    pub vec: u32,
}

#[cfg(feature = "cuda")]
mod tuned {
    use super::Launch;
    include!(concat!(env!("OUT_DIR"), "/tuning.rs"));
}
#[cfg(feature = "cuda")]
pub use tuned::*;

/// The CPU build launches nothing; the ops still take a `Launch`, so one call path serves both.
#[cfg(not(feature = "cuda"))]
mod untuned {
    use super::Launch;
    const NONE: Launch = Launch { block: 0, items: 0, vec: 0 };
    pub const ACT_INTENSITY: Launch = NONE;
    pub const CONCAT_ROWS: Launch = NONE;
    pub const CONCAT_COLS: Launch = NONE;
    pub const KL_DIV: Launch = NONE;
    pub const HIDDEN_MSE: Launch = NONE;
}
#[cfg(not(feature = "cuda"))]
pub use untuned::*;
