//! Progress reporting and cooperative cancellation for long operations (STYLE.md, "Async, progress
//! and cancellation"). Core reports at most once per layer or batch and checks for cancellation at
//! least as often.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

/// What a long operation is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Load,
    Tokenize,
    Calibrate,
    Score,
    Merge,
    Distill,
    Eval,
    Save,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Load => "load",
            Stage::Tokenize => "tokenize",
            Stage::Calibrate => "calibrate",
            Stage::Score => "score",
            Stage::Merge => "merge",
            Stage::Distill => "distill",
            Stage::Eval => "eval",
            Stage::Save => "save",
        }
    }
}

/// One progress report: `done` of `total` units of `stage` are finished.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub stage: Stage,
    pub done: u64,
    pub total: u64,
    /// A training step's loss, for the live display.
    pub training: Option<TrainingProgress>,
}

/// What a distillation step reports besides its count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainingProgress {
    pub loss: f64,
    pub kl: f64,
    pub mse: f64,
    /// Training tokens seen so far.
    pub tokens: u64,
}

/// A shared flag that asks a running operation to stop.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

type ProgressFn = dyn Fn(Progress) + Send + Sync;

/// What every long operation receives besides its inputs.
#[derive(Clone, Default)]
pub struct RunContext {
    progress: Option<Arc<ProgressFn>>,
    cancel: CancelToken,
    state_cache_bytes: Option<usize>,
    shared_states: Option<Arc<crate::methods::candidates::SharedStates>>,
}

impl RunContext {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_progress(mut self, f: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    pub fn with_cancel(mut self, cancel: CancelToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// Caps the memory of cached calibration states (see `methods::candidates::StateCache`).
    pub fn with_state_cache_budget(mut self, bytes: usize) -> Self {
        self.state_cache_bytes = Some(bytes);
        self
    }

    /// This context, with `model`'s calibration states shared by every method run under it
    /// (`compare`; see `methods::candidates::SharedStates`).
    pub fn sharing_states(&self, model: &crate::Model) -> Self {
        let shared = crate::methods::candidates::SharedStates::new(model);
        Self { shared_states: Some(Arc::new(shared)), ..self.clone() }
    }

    pub fn shared_states(&self) -> Option<&crate::methods::candidates::SharedStates> {
        self.shared_states.as_deref()
    }

    /// Bytes the cached calibration states may take: the budget set here, else
    /// `LAYERFOLD_STATE_CACHE_BYTES`, else half of the memory available now (`MemAvailable`,
    /// Linux), else 8 GiB.
    pub fn state_cache_budget(&self) -> usize {
        let from_env = || std::env::var("LAYERFOLD_STATE_CACHE_BYTES").ok()?.parse().ok();
        let half_available = || Some(meminfo("MemAvailable:")? as usize / 2);
        self.state_cache_bytes.or_else(from_env).or_else(half_available).unwrap_or(8 << 30)
    }

    pub fn report(&self, stage: Stage, done: u64, total: u64) {
        if let Some(f) = &self.progress {
            f(Progress { stage, done, total, training: None });
        }
    }

    /// A training step's report.
    pub fn report_training(&self, done: u64, total: u64, training: TrainingProgress) {
        if let Some(f) = &self.progress {
            f(Progress { stage: Stage::Distill, done, total, training: Some(training) });
        }
    }

    /// `Err(Aborted)` once cancellation was asked for.
    pub fn check_cancelled(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            Err(Error::Aborted)
        } else {
            Ok(())
        }
    }
}

/// A `/proc/meminfo` field in bytes (Linux).
fn meminfo(key: &str) -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Memory this process could take now: available RAM plus free swap (Linux; `None` elsewhere).
pub fn available_memory() -> Option<u64> {
    Some(meminfo("MemAvailable:")? + meminfo("SwapFree:").unwrap_or(0))
}

impl std::fmt::Debug for RunContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunContext")
            .field("progress", &self.progress.is_some())
            .field("cancelled", &self.cancel.is_cancelled())
            .finish()
    }
}
