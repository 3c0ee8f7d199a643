//! The output rule of core (`layerfold_core::output`) for folders the TypeScript side writes
//! (`analyze`): a check to run before any long work, and a staging folder to write into.

use std::path::PathBuf;

use napi_derive::napi;

use layerfold_core::output::{OutputTarget, StagingDir};

use crate::error::{sync_error, Code, Failure};

type Result<T> = std::result::Result<T, napi::Error<Code>>;

fn paths(inputs: Vec<String>) -> Vec<PathBuf> {
    inputs.into_iter().map(PathBuf::from).collect()
}

/// Fails unless `out` may receive the output of a command that reads `inputs`.
#[napi]
pub fn check_output(out: String, inputs: Vec<String>, force: bool) -> Result<()> {
    OutputTarget::check(&PathBuf::from(out), &paths(inputs), force)
        .map(|_| ())
        .map_err(|e| sync_error(e.into()))
}

/// Fails unless `out` may receive a save with `options` of a model read from `inputs`: a folder
/// or a GGUF file, checked before the model is loaded.
#[napi]
pub fn check_save_target(
    out: String,
    inputs: Vec<String>,
    options: Option<crate::types::BindingSaveOptions>,
) -> Result<()> {
    crate::model::save_options(&options.unwrap_or_default())
        .and_then(|o| {
            layerfold_core::model::save::check_target(&PathBuf::from(out), &paths(inputs), &o)
        })
        .map_err(|e| sync_error(e.into()))
}

/// A staging folder beside an output target: write into `path`, then `commit()` moves it into
/// place. `discard()` (or garbage collection) removes it.
#[napi]
pub struct BindingStagedOutput {
    staged: Option<StagingDir>,
}

#[napi]
impl BindingStagedOutput {
    /// Checks `out` as `checkOutput` does and creates the staging folder.
    #[napi(factory)]
    pub fn stage(out: String, inputs: Vec<String>, force: bool) -> Result<Self> {
        let staged = OutputTarget::check(&PathBuf::from(out), &paths(inputs), force)
            .and_then(OutputTarget::stage)
            .map_err(|e| sync_error(e.into()))?;
        Ok(Self { staged: Some(staged) })
    }

    /// The staging folder to write into.
    #[napi(getter)]
    pub fn path(&self) -> Result<String> {
        Ok(self.get()?.path().display().to_string())
    }

    /// Moves the staging folder into place; returns the target.
    #[napi]
    pub fn commit(&mut self) -> Result<String> {
        let staged = self.staged.take().ok_or_else(Self::finished)?;
        staged.commit().map(|p| p.display().to_string()).map_err(|e| sync_error(e.into()))
    }

    /// Removes the staging folder and what was written into it. Safe to repeat.
    #[napi]
    pub fn discard(&mut self) {
        self.staged = None;
    }

    fn get(&self) -> Result<&StagingDir> {
        self.staged.as_ref().ok_or_else(Self::finished)
    }

    fn finished() -> napi::Error<Code> {
        sync_error(Failure {
            code: "E_INTERNAL",
            message: "the staged output was already committed or discarded".into(),
        })
    }
}

/// Fails unless the file `out` (a log) may be written for a command that reads `inputs`.
#[napi]
pub fn check_output_file(out: String, inputs: Vec<String>, force: bool) -> Result<()> {
    OutputTarget::check_file(&PathBuf::from(out), &paths(inputs), force)
        .map(|_| ())
        .map_err(|e| sync_error(e.into()))
}

/// Writes the file `out` (a log) under the same rule as folders: never an input or inside one, an
/// existing file replaced only with `force`, written beside and renamed into place.
#[napi]
pub fn write_output_file(
    out: String,
    content: napi::bindgen_prelude::Buffer,
    inputs: Vec<String>,
    force: bool,
) -> Result<String> {
    OutputTarget::write_file(&PathBuf::from(out), &content, &paths(inputs), force)
        .map(|p| p.display().to_string())
        .map_err(|e| sync_error(e.into()))
}
