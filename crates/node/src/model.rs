//! `BindingModel`: a loaded model held by JS. Weights never cross into JS; the handle reports
//! their size to V8 so the garbage collector knows what it holds.

use std::path::PathBuf;
use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi::Env;
use napi_derive::napi;

use layerfold_core::calib::text::TextSource;
use layerfold_core::calib::CalibrationConfig;
use layerfold_core::compare::{compare, CompareRequest, CompareResult};
use layerfold_core::distill::{self, DistillRequest};
use layerfold_core::eval::multiple_choice::{evaluate, EvalOptions, EvalResult};
use layerfold_core::eval::perplexity::{self, PerplexityOptions};
use layerfold_core::methods::{self, PruneRequest};
use layerfold_core::model::generate::{encode_prompt, generate, GenerateOptions, Generation};
use layerfold_core::model::save::{self, SaveDType, SaveFormat, SaveOptions};
use layerfold_core::model::{parse_dtype, DeviceChoice};
use layerfold_core::{LoadOptions, Model};

use crate::error::{sync_error, Code, Failure};
use crate::task::{run_context, CoreTask, ProgressCallback};
use crate::types::*;

#[napi(custom_finalize)]
pub struct BindingModel {
    model: Option<Arc<Model>>,
    /// Bytes reported to V8 with `adjust_external_memory`, given back on dispose or finalize.
    external_bytes: i64,
}

fn weight_bytes(model: &Model) -> i64 {
    (model.num_parameters() * model.lm.dtype().size_in_bytes()) as i64
}

impl BindingModel {
    pub(crate) fn wrap(env: &Env, model: Model) -> napi::Result<Self> {
        let external_bytes = weight_bytes(&model);
        env.adjust_external_memory(external_bytes)?;
        Ok(Self { model: Some(Arc::new(model)), external_bytes })
    }

    fn get(&self) -> std::result::Result<Arc<Model>, napi::Error<Code>> {
        self.model.clone().ok_or_else(|| {
            sync_error(Failure { code: "E_DISPOSED", message: "the model was disposed".into() })
        })
    }
}

/// JSON from the facade into a core type; a mismatch is the caller's `E_CONFIG`.
fn parse_json<T: serde::de::DeserializeOwned>(
    what: &str,
    json: &str,
) -> std::result::Result<T, Failure> {
    serde_json::from_str(json)
        .map_err(|e| Failure { code: "E_CONFIG", message: format!("invalid {what}: {e}") })
}

/// Core's save options from the binding's.
pub(crate) fn save_options(o: &BindingSaveOptions) -> layerfold_core::Result<SaveOptions> {
    Ok(SaveOptions {
        format: o.format.as_deref().map(SaveFormat::parse).transpose()?,
        dtype: o.dtype.as_deref().map(SaveDType::parse).transpose()?,
        max_shard_bytes: o
            .max_shard_bytes
            .map_or(SaveOptions::default().max_shard_bytes, |b| b as u64),
        force: o.force.unwrap_or(false),
    })
}

/// A number JSON can hold, else `None` (a standard error of fewer than two examples).
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn eval_result(r: EvalResult) -> BindingEvalResult {
    BindingEvalResult {
        tasks: r
            .tasks
            .into_iter()
            .map(|(name, t)| BindingTaskResult {
                name,
                metric: t.metric.as_str().into(),
                value: t.value,
                stderr: finite(t.stderr),
                n: t.n as u32,
                acc: t.acc,
                acc_stderr: finite(t.acc_stderr),
                acc_norm: t.acc_norm,
                acc_norm_stderr: finite(t.acc_norm_stderr),
            })
            .collect(),
        average: r.average,
        samples: r
            .samples
            .into_iter()
            .map(|s| BindingEvalSample {
                task: s.task,
                doc: s.doc as u32,
                gold: s.gold as u32,
                loglik: s.loglik,
                greedy: s.greedy,
                pred: s.pred as u32,
                pred_norm: s.pred_norm as u32,
            })
            .collect(),
        seconds: r.seconds,
    }
}

impl ObjectFinalize for BindingModel {
    fn finalize(self, env: Env) -> napi::Result<()> {
        if self.external_bytes != 0 {
            env.adjust_external_memory(-self.external_bytes)?;
        }
        Ok(())
    }
}

/// Loads a Hugging Face folder or a GGUF file.
#[napi(ts_return_type = "Promise<BindingModel>")]
pub fn load_model(
    path: String,
    options: Option<BindingLoadOptions>,
    #[napi(ts_arg_type = "(progress: BindingProgress) => void")] on_progress: Option<
        ProgressCallback,
    >,
    cancel: Option<&BindingCancelToken>,
) -> AsyncTask<CoreTask<Model, BindingModel>> {
    let ctx = run_context(on_progress, cancel);
    CoreTask::new(
        move || {
            let o =
                options.unwrap_or(BindingLoadOptions { dtype: None, device: None, stream: None });
            let mut opts = LoadOptions::default();
            if let Some(d) = o.dtype.as_deref() {
                opts.dtype = parse_dtype(d)?;
            }
            if let Some(d) = o.device.as_deref() {
                opts.device = DeviceChoice::parse(d)?;
            }
            if let Some(s) = o.stream {
                opts.stream = s;
            }
            Ok(Model::load(&PathBuf::from(path), &opts, &ctx)?)
        },
        BindingModel::wrap,
    )
}

#[napi]
impl BindingModel {
    /// Architecture, sizes, dtype and device of the model as it is now.
    #[napi]
    pub fn info(&self) -> std::result::Result<BindingModelInfo, napi::Error<Code>> {
        let i = self.get()?.info();
        Ok(BindingModelInfo {
            architecture: i.architecture.into(),
            format: i.format.into(),
            path: i.path.display().to_string(),
            dtype: i.dtype.into(),
            device: i.device,
            device_fallback: i.device_fallback,
            streamed: i.streamed,
            num_layers: i.num_layers as u32,
            hidden_size: i.hidden_size as u32,
            intermediate_size: i.intermediate_size as u32,
            num_attention_heads: i.num_attention_heads as u32,
            num_key_value_heads: i.num_key_value_heads as u32,
            head_dim: i.head_dim as u32,
            vocab_size: i.vocab_size as u32,
            max_position_embeddings: i.max_position_embeddings as u32,
            rope_theta: i.rope_theta,
            tie_word_embeddings: i.tie_word_embeddings,
            parameters: i.parameters as f64,
            bos_token_id: i.bos_token_id,
            eos_token_id: i.eos_token_id,
            quantization: i
                .quantization
                .into_iter()
                .map(|(t, n)| BindingTensorTypeCount { r#type: t, count: n as u32 })
                .collect(),
        })
    }

    /// Perplexity (METHODS.md §4.1) of the text or file.
    #[napi(ts_return_type = "Promise<BindingPerplexityResult>")]
    pub fn perplexity(
        &self,
        source: BindingTextSource,
        options: Option<BindingPerplexityOptions>,
        #[napi(ts_arg_type = "(progress: BindingProgress) => void")] on_progress: Option<
            ProgressCallback,
        >,
        cancel: Option<&BindingCancelToken>,
    ) -> std::result::Result<
        AsyncTask<CoreTask<perplexity::PerplexityResult, BindingPerplexityResult>>,
        napi::Error<Code>,
    > {
        let model = self.get()?;
        let ctx = run_context(on_progress, cancel);
        let source = match (source.text, source.file) {
            (Some(t), None) => TextSource::Text(t),
            (None, Some(f)) => TextSource::File(PathBuf::from(f)),
            _ => {
                return Err(sync_error(Failure {
                    code: "E_CONFIG",
                    message: "invalid option `source`: give exactly one of `text` or `file`".into(),
                }))
            }
        };
        let o = options.unwrap_or(BindingPerplexityOptions {
            seq_len: None,
            max_windows: None,
            batch_size: None,
        });
        let opts = PerplexityOptions {
            seq_len: o.seq_len.map(|v| v as usize),
            max_windows: o.max_windows.map(|v| v as usize),
            batch_size: o.batch_size.map(|v| v as usize),
        };
        Ok(CoreTask::new(
            move || Ok(perplexity::perplexity(&model, &source, &opts, &ctx)?),
            |_, r| {
                Ok(BindingPerplexityResult {
                    ppl: r.ppl,
                    nll: r.nll,
                    tokens: r.tokens as f64,
                    windows: r.windows as u32,
                    seq_len: r.seq_len as u32,
                    corpus_tokens: r.corpus_tokens as f64,
                    seconds: r.seconds,
                    warnings: r.warnings,
                })
            },
        ))
    }

    /// Writes the model as a Hugging Face folder or a GGUF file, atomically.
    #[napi(ts_return_type = "Promise<BindingSaveResult>")]
    pub fn save(
        &self,
        dir: String,
        options: Option<BindingSaveOptions>,
        #[napi(ts_arg_type = "(progress: BindingProgress) => void")] on_progress: Option<
            ProgressCallback,
        >,
        cancel: Option<&BindingCancelToken>,
    ) -> std::result::Result<
        AsyncTask<CoreTask<save::SaveSummary, BindingSaveResult>>,
        napi::Error<Code>,
    > {
        let model = self.get()?;
        let ctx = run_context(on_progress, cancel);
        let o = options.unwrap_or_default();
        Ok(CoreTask::new(
            move || Ok(save::save(&model, &PathBuf::from(dir), &save_options(&o)?, &ctx)?),
            |_, s| {
                Ok(BindingSaveResult {
                    path: s.path.display().to_string(),
                    files: s.files,
                    bytes: s.bytes as f64,
                })
            },
        ))
    }

    /// Runs a depth-pruning method. `request` is the JSON of core's `PruneRequest`
    /// (`{method, options, target, calibration}`); resolves to the pruned model, whose
    /// `provenance()` holds the record and report.
    #[napi(ts_return_type = "Promise<BindingModel>")]
    pub fn prune(
        &self,
        request: String,
        #[napi(ts_arg_type = "(progress: BindingProgress) => void")] on_progress: Option<
            ProgressCallback,
        >,
        cancel: Option<&BindingCancelToken>,
    ) -> std::result::Result<AsyncTask<CoreTask<Model, BindingModel>>, napi::Error<Code>> {
        let model = self.get()?;
        let ctx = run_context(on_progress, cancel);
        Ok(CoreTask::new(
            move || {
                let req: PruneRequest = parse_json("prune options", &request)?;
                Ok(methods::prune(&model, &req, &ctx)?.0)
            },
            BindingModel::wrap,
        ))
    }

    /// Trains this (pruned) model toward `teacher` (core's `distill::run`); `request` is the JSON
    /// of core's `DistillRequest`. Resolves to the trained model, whose `provenance()` holds the
    /// run under `distill`.
    #[napi(ts_return_type = "Promise<BindingModel>")]
    pub fn distill(
        &self,
        teacher: &BindingModel,
        request: String,
        #[napi(ts_arg_type = "(progress: BindingProgress) => void")] on_progress: Option<
            ProgressCallback,
        >,
        cancel: Option<&BindingCancelToken>,
    ) -> std::result::Result<AsyncTask<CoreTask<Model, BindingModel>>, napi::Error<Code>> {
        let (student, teacher) = (self.get()?, teacher.get()?);
        let ctx = run_context(on_progress, cancel);
        Ok(CoreTask::new(
            move || {
                let req: DistillRequest = parse_json("distill options", &request)?;
                Ok(distill::run(&student, &teacher, &req, &ctx)?)
            },
            BindingModel::wrap,
        ))
    }

    /// The dense model and each method at one target (core's `compare`); `request` is the JSON
    /// of core's `CompareRequest`.
    #[napi(ts_return_type = "Promise<BindingCompareResult>")]
    pub fn compare(
        &self,
        request: String,
        #[napi(ts_arg_type = "(progress: BindingProgress) => void")] on_progress: Option<
            ProgressCallback,
        >,
        cancel: Option<&BindingCancelToken>,
    ) -> std::result::Result<
        AsyncTask<CoreTask<CompareResult, BindingCompareResult>>,
        napi::Error<Code>,
    > {
        let model = self.get()?;
        let ctx = run_context(on_progress, cancel);
        Ok(CoreTask::new(
            move || {
                let req: CompareRequest = parse_json("compare options", &request)?;
                Ok(compare(&model, &req, &ctx)?)
            },
            |_, r| {
                Ok(BindingCompareResult {
                    rows: r
                        .rows
                        .into_iter()
                        .map(|row| BindingCompareRow {
                            method: row.method,
                            layers: row.layers as u32,
                            parameters: row.parameters as f64,
                            ppl: row.ppl,
                            tasks: row
                                .tasks
                                .into_iter()
                                .map(|t| BindingTaskScore {
                                    task: t.task,
                                    metric: t.metric,
                                    value: t.value,
                                })
                                .collect(),
                            average: row.average,
                            retained: finite(row.retained),
                            prune_seconds: row.prune_seconds,
                            distill_seconds: row.distill_seconds,
                            eval_seconds: row.eval_seconds,
                            record: serde_json::to_string(&row.record)
                                .expect("a record serialises"),
                            warnings: row.warnings,
                        })
                        .collect(),
                    seconds: r.seconds,
                })
            },
        ))
    }

    /// What pruning did to this model (the `layerfold.json` document), or null.
    #[napi]
    pub fn provenance(&self) -> std::result::Result<Option<String>, napi::Error<Code>> {
        Ok(self.get()?.provenance.as_ref().map(|p| p.to_string()))
    }

    /// Layer similarity analysis on calibration text (`calibration`: JSON of core's
    /// `CalibrationConfig`); resolves to the JSON of core's `Analysis`.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn analyze(
        &self,
        calibration: String,
        #[napi(ts_arg_type = "(progress: BindingProgress) => void")] on_progress: Option<
            ProgressCallback,
        >,
        cancel: Option<&BindingCancelToken>,
    ) -> std::result::Result<AsyncTask<CoreTask<String, String>>, napi::Error<Code>> {
        let model = self.get()?;
        let ctx = run_context(on_progress, cancel);
        Ok(CoreTask::new(
            move || {
                let cfg: CalibrationConfig = parse_json("calibration", &calibration)?;
                let analysis = layerfold_core::analysis::analyze(&model, &cfg, &ctx)?;
                serde_json::to_string(&analysis)
                    .map_err(|e| Failure { code: "E_INTERNAL", message: e.to_string() })
            },
            |_, s| Ok(s),
        ))
    }

    /// Zero-shot multiple-choice evaluation (METHODS.md §4.2), scored as lm-evaluation-harness
    /// scores it.
    #[napi(ts_return_type = "Promise<BindingEvalResult>")]
    pub fn evaluate(
        &self,
        options: Option<BindingEvalOptions>,
        #[napi(ts_arg_type = "(progress: BindingProgress) => void")] on_progress: Option<
            ProgressCallback,
        >,
        cancel: Option<&BindingCancelToken>,
    ) -> std::result::Result<AsyncTask<CoreTask<EvalResult, BindingEvalResult>>, napi::Error<Code>>
    {
        let model = self.get()?;
        let ctx = run_context(on_progress, cancel);
        let o = options.unwrap_or(BindingEvalOptions {
            tasks: None,
            limit: None,
            batch_size: None,
            data_dir: None,
        });
        let opts = EvalOptions {
            tasks: o.tasks,
            limit: o.limit.map(|v| v as usize),
            batch_size: o.batch_size.map(|v| v as usize),
            data_dir: o.data_dir.map(PathBuf::from),
        };
        Ok(CoreTask::new(move || Ok(evaluate(&model, &opts, &ctx)?), |_, r| Ok(eval_result(r))))
    }

    /// Greedy continuation of a prompt (text, or token ids as they are).
    #[napi(ts_return_type = "Promise<BindingGeneration>")]
    pub fn generate(
        &self,
        prompt: Either<String, Vec<u32>>,
        options: Option<BindingGenerateOptions>,
        #[napi(ts_arg_type = "(progress: BindingProgress) => void")] on_progress: Option<
            ProgressCallback,
        >,
        cancel: Option<&BindingCancelToken>,
    ) -> std::result::Result<AsyncTask<CoreTask<Generation, BindingGeneration>>, napi::Error<Code>>
    {
        let model = self.get()?;
        let ctx = run_context(on_progress, cancel);
        let o = options.unwrap_or_default();
        let defaults = GenerateOptions::default();
        let opts = GenerateOptions {
            max_tokens: o.max_tokens.map_or(defaults.max_tokens, |v| v as usize),
            top_k: o.top_k.map_or(defaults.top_k, |v| v as usize),
        };
        Ok(CoreTask::new(
            move || {
                let ids = match prompt {
                    Either::A(text) => encode_prompt(&model, &text)?,
                    Either::B(ids) => ids,
                };
                Ok(generate(&model, &ids, &opts, &ctx)?)
            },
            |_, g| {
                let prob = |(token, prob): (u32, f64)| BindingTokenProb { token, prob };
                Ok(BindingGeneration {
                    prompt_tokens: g.prompt_tokens,
                    steps: g
                        .steps
                        .into_iter()
                        .map(|s| BindingGenerateStep {
                            token: s.token,
                            prob: s.prob,
                            top: s.top.into_iter().map(prob).collect(),
                        })
                        .collect(),
                    text: g.text,
                })
            },
        ))
    }

    /// Frees the weights now (a running task keeps its own reference until it ends).
    #[napi]
    pub fn dispose(&mut self, env: Env) -> napi::Result<()> {
        self.model = None;
        if self.external_bytes != 0 {
            env.adjust_external_memory(-self.external_bytes)?;
            self.external_bytes = 0;
        }
        Ok(())
    }

    #[napi(getter)]
    pub fn disposed(&self) -> bool {
        self.model.is_none()
    }
}
