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
