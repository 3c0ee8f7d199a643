//! The CPU side of the custom ops: their inputs as slices (what `cuda::view` is on CUDA).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result};

/// The contiguous elements of `layout` in `slice`, or an error naming `op`.
pub(crate) fn contiguous<'a, T>(op: &str, slice: &'a [T], layout: &Layout) -> Result<&'a [T]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: inputs must be contiguous")
    };
    Ok(&slice[start..end])
}

/// The contiguous f32 elements of `storage` at `layout`, or an error naming `op` and the input.
pub(crate) fn f32s<'a>(
    op: &str,
    input: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> Result<&'a [f32]> {
    let CpuStorage::F32(slice) = storage else {
        candle_core::bail!("{op}: {input} must be f32, got {:?}", storage.dtype())
    };
    contiguous(op, slice, layout)
}

/// A buffer of `n` f32 for an op's output, not zeroed: every caller writes each element before
/// the buffer is read (or handed to candle). Zeroing would fill it on the calling thread alone,
/// touching every page of a fresh mapping there while the rayon threads that then overwrite it
/// wait (about a fifth of a CoMe calibration pass); uninitialised, the pages are first touched by
/// the threads that write them. candle's CPU backend allocates its outputs the same way
/// (`alloc_uninit`).
#[allow(clippy::uninit_vec)]
pub(crate) fn output_buffer(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: f32 has no invalid bit patterns, and callers overwrite every element before any is
    // read (see each call site).
    unsafe { v.set_len(n) };
    v
}
