//! What the CUDA side of the ops shares: the PTX modules build.rs compiled, and typed views of a
//! storage's float data.

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DeviceRepr, ValidAsZeroBits};
use candle_core::cuda_backend::CudaDType;
use candle_core::{CudaDevice, CudaStorage, Layout, Result};

/// `(module name, PTX)` per `.cu` file.
pub const ACT_INTENSITY: (&str, &str) =
    ("layerfold_act_intensity", include_str!(concat!(env!("OUT_DIR"), "/act_intensity.ptx")));
pub const CONCAT_LAYERS: (&str, &str) =
    ("layerfold_concat_layers", include_str!(concat!(env!("OUT_DIR"), "/concat_layers.ptx")));
pub const DISTILL_LOSS: (&str, &str) =
    ("layerfold_distill_loss", include_str!(concat!(env!("OUT_DIR"), "/distill_loss.ptx")));

/// The contiguous elements of `layout` in `slice`, or an error naming `op`.
pub fn view<'a, T: DeviceRepr>(
    op: &str,
    slice: &'a CudaSlice<T>,
    layout: &Layout,
) -> Result<CudaView<'a, T>> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: inputs must be contiguous")
    };
    Ok(slice.slice(start..end))
}

/// A float type the kernels take; `NAME` is its kernel-name suffix (`<op>_<NAME>`).
pub trait Float: CudaDType + DeviceRepr + ValidAsZeroBits {
    const NAME: &'static str;
}

impl Float for f32 {
    const NAME: &'static str = "f32";
}

impl Float for half::f16 {
    const NAME: &'static str = "f16";
}

impl Float for half::bf16 {
    const NAME: &'static str = "bf16";
}

/// `$f::<T>(args…)` with `T` the [`Float`] type of `$dtype`, or an error naming `$op`: one
/// generic launcher serves the three dtypes.
macro_rules! dispatch_float {
    ($op:expr, $dtype:expr, $($f:ident)::+($($arg:expr),* $(,)?)) => {
        match $dtype {
            candle_core::DType::F32 => $($f)::+::<f32>($($arg),*),
            candle_core::DType::F16 => $($f)::+::<half::f16>($($arg),*),
            candle_core::DType::BF16 => $($f)::+::<half::bf16>($($arg),*),
            other => candle_core::bail!("{}: needs f32, f16 or bf16 input, got {other:?}", $op),
        }
    };
}
pub(crate) use dispatch_float;

/// Wraps a kernel's output.
pub fn storage<T: CudaDType>(slice: CudaSlice<T>, dev: &CudaDevice) -> CudaStorage {
    CudaStorage::wrap_cuda_slice(slice, dev.clone())
}
