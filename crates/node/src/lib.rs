//! layerfold-node: the Node-API binding of layerfold-core. Only argument conversion, async tasks,
//! progress callbacks, cancellation and error codes live here (STYLE.md, "Crate boundaries").

mod error;
mod model;
mod task;
mod types;

use napi_derive::napi;

/// The version of the native addon.
#[napi]
pub fn native_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// Whether this build can use a CUDA device.
#[napi]
pub fn cuda_available() -> bool {
    cfg!(feature = "cuda") && layerfold_core::model::DeviceChoice::Cuda(0).open().is_ok()
}
