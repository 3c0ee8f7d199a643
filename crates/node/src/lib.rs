//! layerfold-node: the Node-API binding of layerfold-core. Only argument conversion, async tasks,
//! progress callbacks, cancellation and error codes live here (STYLE.md, "Crate boundaries").

mod error;
mod model;
mod output;
mod task;
mod types;

use napi_derive::napi;

/// The version of the native addon.
#[napi]
pub fn native_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// The library behind the CPU's f32 matrix products: `mkl` (Intel MKL, linked at build time) or
/// `gemm` (candle's own).
#[napi(ts_return_type = "'mkl' | 'gemm'")]
pub fn cpu_blas() -> String {
    layerfold_core::cpu_blas().to_string()
}

/// Whether this build can use a CUDA device.
#[napi]
pub fn cuda_available() -> bool {
    cfg!(feature = "cuda") && layerfold_core::model::DeviceChoice::Cuda(0).open().is_ok()
}

/// Every method's options with their defaults, its calibration defaults and whether it takes a
/// threshold target, as JSON: `{"methods": {id: {...}}, "analyze": {...}}`. Feeds CLI help and a
/// spec that checks the documented defaults.
#[napi]
pub fn method_defaults() -> String {
    use layerfold_core::calib::CalibrationDefaults;
    let calib = |c: &CalibrationDefaults| serde_json::json!({"kind": c.kind, "seqLen": c.seq_len, "nSamples": c.n_samples});
    let methods: serde_json::Map<String, serde_json::Value> = layerfold_core::methods::METHODS
        .iter()
        .map(|m| {
            let entry = serde_json::json!({
                "options": (m.defaults)(),
                "calibration": m.calibration.as_ref().map(calib),
                "acceptsThreshold": m.accepts_threshold,
            });
            (m.id.to_string(), entry)
        })
        .collect();
    serde_json::json!({"methods": methods, "analyze": calib(&layerfold_core::analysis::CALIBRATION)}).to_string()
}
