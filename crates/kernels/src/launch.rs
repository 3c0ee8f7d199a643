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
