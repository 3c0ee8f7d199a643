//! Core errors as JS errors whose `code` is the stable `E_*` code (STYLE.md, "Errors").
//!
//! `AsyncTask::compute` can only fail with `napi::Error<Status>`, whose code would be a napi
//! status. So a task keeps the core error it met and, back on the JS thread in `reject`, builds a
//! JS `Error` carrying `code` and rejects with that very object.

use napi::bindgen_prelude::*;
use napi::{Env, JsError};

/// A code string as a napi error status (napi-rs `CustomError`).
pub struct Code(pub &'static str);

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        self.0
    }
}

/// What a task's `compute` met: a core error or a panic, kept for `reject`.
#[derive(Debug)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
}

impl From<layerfold_core::Error> for Failure {
    fn from(e: layerfold_core::Error) -> Self {
        Self { code: e.code(), message: e.to_string() }
    }
}

/// The JS error for `failure`, as a `napi::Error` that rejects with the exact object.
pub fn to_js(env: &Env, failure: &Failure) -> napi::Error {
    let err = napi::Error::new(Code(failure.code), failure.message.clone());
    // SAFETY: called on the JS thread with the env of the current callback; `into_value`
    // returns a live error object (or null during teardown, which `from_raw_unchecked` keeps).
    let value = unsafe { JsError::from(err).into_value(env.raw()) };
    napi::Error::from(unsafe { Unknown::from_raw_unchecked(env.raw(), value) })
}

/// Runs `f`, turning a panic into an `E_INTERNAL` failure so none crosses into Node.
pub fn catch<T>(
    f: impl FnOnce() -> std::result::Result<T, Failure>,
) -> std::result::Result<T, Failure> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(Failure { code: "E_INTERNAL", message: format!("internal error (panic): {what}") })
    })
}

/// A failure raised synchronously from an export.
pub fn sync_error(failure: Failure) -> napi::Error<Code> {
    napi::Error::new(Code(failure.code), failure.message)
}
