//! One `AsyncTask` shape for every long core call: `compute` runs the core function on the libuv
//! pool (catching panics), `resolve` converts its output on the JS thread, and `reject` turns a
//! core failure into a JS error with its `E_*` code.

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Env;

use layerfold_core::RunContext;

use crate::error::{catch, to_js, Failure};
use crate::types::{BindingCancelToken, BindingProgress, BindingTraining};

type Work<T> = Box<dyn FnOnce() -> std::result::Result<T, Failure> + Send>;

pub struct CoreTask<T: Send + 'static, J> {
    work: Option<Work<T>>,
    convert: fn(&Env, T) -> napi::Result<J>,
    failure: Option<Failure>,
}

impl<T: Send + 'static, J> CoreTask<T, J> {
    pub fn new(
        work: impl FnOnce() -> std::result::Result<T, Failure> + Send + 'static,
        convert: fn(&Env, T) -> napi::Result<J>,
    ) -> AsyncTask<Self>
    where
        J: ToNapiValue + TypeName,
    {
        AsyncTask::new(Self { work: Some(Box::new(work)), convert, failure: None })
    }
}

impl<T: Send + 'static, J: ToNapiValue + TypeName> Task for CoreTask<T, J> {
    type Output = T;
    type JsValue = J;

    fn compute(&mut self) -> napi::Result<T> {
        let Some(work) = self.work.take() else {
            return Err(napi::Error::from_reason("task computed twice"));
        };
        catch(work).map_err(|failure| {
            self.failure = Some(failure);
            napi::Error::from_reason("layerfold task failed")
        })
    }

    fn resolve(&mut self, env: Env, output: T) -> napi::Result<J> {
        (self.convert)(&env, output)
    }

    fn reject(&mut self, env: Env, err: napi::Error) -> napi::Result<J> {
        match self.failure.take() {
            Some(failure) => Err(to_js(&env, &failure)),
            None => Err(err),
        }
    }
}

/// Progress reported to JS: `(p) => void`, called without blocking the computing thread.
pub type ProgressCallback =
    ThreadsafeFunction<BindingProgress, Unknown<'static>, BindingProgress, Status, false>;

/// The core run context for a call's optional progress callback and cancel token.
pub fn run_context(
    on_progress: Option<ProgressCallback>,
    cancel: Option<&BindingCancelToken>,
) -> RunContext {
    let mut ctx =
        RunContext::new().with_cancel(cancel.map(|c| c.token.clone()).unwrap_or_default());
    if let Some(f) = on_progress {
        ctx = ctx.with_progress(move |p| {
            f.call(
                BindingProgress {
                    stage: p.stage.as_str().to_string(),
                    done: p.done as f64,
                    total: p.total as f64,
                    training: p.training.map(|t| BindingTraining {
                        loss: t.loss,
                        kl: t.kl,
                        mse: t.mse,
                        tokens: t.tokens as f64,
                    }),
                },
                ThreadsafeFunctionCallMode::NonBlocking,
            );
        });
    }
    ctx
}
