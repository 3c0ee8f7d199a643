//! Depth-compression methods (METHODS.md §3), one file each, and the registry that maps a method
//! id to its options, calibration defaults and `run`.
//!
//! Every method returns the pruned model (whose `origins` are the merge record) and a [`Report`]:
//! per step, the candidates scored, their scores and the decision.

pub mod candidates;
pub mod come;
pub mod come_p;
pub mod concat;
pub mod drop_angular;
pub mod drop_bi;
pub mod drop_last;
pub mod laco;
pub mod merge_rule;
pub mod sleb;
pub mod slm;
pub mod threshold;

use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::calib::{CalibrationConfig, CalibrationDefaults, CalibrationSet, CalibrationSummary};
use crate::context::{RunContext, Stage};
use crate::error::{Error, Result};
use crate::model::decoder::Observer;
use crate::model::Model;

/// How much to remove. Exactly one field is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct Target {
    /// Layers to remove.
    pub remove_layers: Option<usize>,
    /// Fraction of the model's parameters to remove, in (0, 1), converted to a layer count by the
    /// parameters of one decoder layer, rounded to the nearest count.
    pub ratio: Option<f64>,
    /// LaCo/SLM only: the similarity threshold `T`.
    pub threshold: Option<f64>,
}

/// A target resolved against a model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// Remove this many layers.
    Remove(usize),
    /// Run with this threshold (LaCo, SLM).
    Threshold(f64),
}

impl Target {
    pub fn resolve(&self, model: &Model, accepts_threshold: bool, method: &str) -> Result<Goal> {
        let layers = model.num_layers();
        let set = [self.remove_layers.is_some(), self.ratio.is_some(), self.threshold.is_some()];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(Error::config(
                "target",
                "give exactly one of removeLayers, ratio or threshold",
            ));
        }
        let remove = if let Some(t) = self.threshold {
            if !accepts_threshold {
                return Err(Error::config(
                    "target.threshold",
                    format!("{method} takes removeLayers or ratio"),
                ));
            }
            if !(-1.0..=1.0).contains(&t) {
                return Err(Error::config(
                    "target.threshold",
                    format!("{t} is outside [-1, 1] (a cosine)"),
                ));
            }
            return Ok(Goal::Threshold(t));
        } else if let Some(r) = self.ratio {
            if !(r > 0.0 && r < 1.0) {
                return Err(Error::config("target.ratio", format!("{r} is outside (0, 1)")));
            }
            let per_layer = model.config.layer_parameters() as f64;
            let k = (r * model.num_parameters() as f64 / per_layer).round() as usize;
            if k == 0 {
                return Err(Error::config(
                    "target.ratio",
                    format!(
                        "{r} of the parameters is less than half a layer ({per_layer} parameters)"
                    ),
                ));
            }
            k
        } else {
            self.remove_layers.expect("exactly one target field is set")
        };
        if remove == 0 {
            return Err(Error::config("target.removeLayers", "must be at least 1"));
        }
        if remove >= layers {
            return Err(Error::config(
                "target",
                format!("removing {remove} layers of a {layers}-layer model leaves none: the target is larger than the model"),
            ));
        }
        Ok(Goal::Remove(remove))
    }
}

/// What `prune` is asked to do: the method id and its options (camelCase JSON), the target, and
/// the calibration data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PruneRequest {
    pub method: String,
    #[serde(default)]
    pub options: serde_json::Value,
    pub target: Target,
    #[serde(default)]
    pub calibration: CalibrationConfig,
    /// Heal the pruned model toward the input model afterwards (METHODS.md §3.5).
    #[serde(default)]
    pub distill: Option<crate::distill::DistillRequest>,
}

/// One scored candidate of a step. `layers` are positions in the model at that step; `original`
/// the layers as loaded that they cover.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct Candidate {
    pub layers: Vec<usize>,
    pub original: Vec<usize>,
    /// A non-finite score (a candidate ruled out) is written as `null` in JSON.
    #[cfg_attr(test, ts(type = "number | null"))]
    pub score: f64,
    pub chosen: bool,
}

/// One decision of a method.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct Step {
    pub candidates: Vec<Candidate>,
    pub decision: String,
    /// Method-specific numbers behind the decision (CoMe: ratios, channels kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub details: Option<serde_json::Value>,
}

impl Step {
    pub fn new(candidates: Vec<Candidate>, decision: String) -> Self {
        Self { candidates, decision, details: None }
    }
}

/// How LaCo/SLM found a threshold for a layer-count target.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct ThresholdSearch {
    pub target_layers: usize,
    pub threshold: f64,
    pub layers: usize,
    pub exact: bool,
    /// Every `(threshold, layers)` tried, in order.
    pub tried: Vec<(f64, usize)>,
}

/// What a method did and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct Report {
    /// What the candidate scores are (e.g. "block influence", "calibration NLL").
    pub score: String,
    pub steps: Vec<Step>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub threshold: Option<ThresholdSearch>,
    pub warnings: Vec<String>,
    /// Seconds spent per stage, where the method measures them (CoMe: calibrate, score, merge).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[cfg_attr(test, ts(optional, as = "Option<std::collections::BTreeMap<String, f64>>"))]
    pub timings: std::collections::BTreeMap<String, f64>,
}

impl Report {
    pub fn new(score: &str) -> Self {
        Self {
            score: score.into(),
            steps: Vec::new(),
            threshold: None,
            warnings: Vec::new(),
            timings: Default::default(),
        }
    }

    /// Adds the time since `since` to `stage`.
    pub fn time(&mut self, stage: &str, since: Instant) {
        *self.timings.entry(stage.to_string()).or_default() += since.elapsed().as_secs_f64();
    }
}

/// A method's result.
pub struct MethodOutput {
    pub model: Model,
    pub report: Report,
}

/// Everything `prune` records, saved as `layerfold.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct PruneSummary {
    pub layerfold: &'static str,
    pub method: String,
    /// The method's options with defaults filled in.
    pub options: serde_json::Value,
    pub target: Target,
    pub layers_before: usize,
    pub layers_after: usize,
    pub parameters_before: usize,
    pub parameters_after: usize,
    /// For each layer of the result, the original layers it came from (0-based; a tree).
    pub record: Vec<crate::model::origin::Origin>,
    pub calibration: Option<CalibrationSummary>,
    pub report: Report,
    pub seconds: f64,
    /// The distillation run that healed the result, when one was asked for: teacher, training
    /// text, options, report (as under `distill` in `layerfold.json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(type = "unknown"))]
    pub distill: Option<serde_json::Value>,
}

/// A registry entry.
pub struct Method {
    pub id: &'static str,
    /// Calibration defaults; `None` for methods that use no data.
    pub calibration: Option<CalibrationDefaults>,
    pub accepts_threshold: bool,
    /// The options with every default, as JSON.
    pub defaults: fn() -> serde_json::Value,
    /// Parses options (unknown keys are errors) and returns them with defaults filled in.
    pub check: fn(&serde_json::Value) -> Result<serde_json::Value>,
    run: fn(
        &Model,
        &serde_json::Value,
        Option<&CalibrationSet>,
        Goal,
        &RunContext,
    ) -> Result<MethodOutput>,
}

fn parse<C: DeserializeOwned + Default>(options: &serde_json::Value) -> Result<C> {
    if options.is_null() {
        return Ok(C::default());
    }
    if !options.is_object() {
        return Err(Error::config("options", "must be an object"));
    }
    serde_json::from_value(options.clone()).map_err(|e| Error::config("options", e.to_string()))
}

fn check<C: DeserializeOwned + Serialize + Default>(
    options: &serde_json::Value,
) -> Result<serde_json::Value> {
    serde_json::to_value(parse::<C>(options)?).map_err(|e| Error::Internal(e.to_string()))
}

fn defaults_of<C: Serialize + Default>() -> serde_json::Value {
    serde_json::to_value(C::default()).expect("method options serialise")
}

macro_rules! method {
    ($module:ident, $id:literal, threshold: $thr:expr) => {
        Method {
            id: $id,
            calibration: $module::CALIBRATION,
            accepts_threshold: $thr,
            defaults: defaults_of::<$module::Config>,
            check: check::<$module::Config>,
            run: |model, options, calib, goal, ctx| {
                $module::run(model, calib, &parse(options)?, goal, ctx)
            },
        }
    };
}

/// Every method, by METHODS.md id.
pub static METHODS: &[Method] = &[
    method!(drop_bi, "drop-bi", threshold: false),
    method!(drop_angular, "drop-angular", threshold: false),
    method!(drop_last, "drop-last", threshold: false),
    method!(sleb, "sleb", threshold: false),
    method!(laco, "laco", threshold: true),
    method!(slm, "slm", threshold: true),
    method!(come, "come", threshold: false),
    method!(come_p, "come-p", threshold: false),
];

pub fn find(id: &str) -> Result<&'static Method> {
    METHODS.iter().find(|m| m.id == id).ok_or_else(|| {
        let ids: Vec<_> = METHODS.iter().map(|m| m.id).collect();
        Error::config("method", format!("`{id}` is not one of {}", ids.join(", ")))
    })
}

/// Runs `req` on `model` (which is not modified) and returns the pruned model, whose
/// `provenance` holds the [`PruneSummary`].
pub fn prune(model: &Model, req: &PruneRequest, ctx: &RunContext) -> Result<(Model, PruneSummary)> {
    let started = Instant::now();
    let m = find(&req.method)?;
    // Options and target are checked before any calibration work.
    let options = (m.check)(&req.options)?;
    let goal = req.target.resolve(model, m.accepts_threshold, m.id)?;
    // The distillation's options and training text are checked before any pruning work.
    let distill = req.distill.as_ref().map(|d| d.prepare(model)).transpose()?;
    let calib = match m.calibration {
        Some(defaults) => {
            ctx.report(Stage::Tokenize, 0, 1);
            let set = CalibrationSet::build(
                &model.tokenizer,
                model.max_seq_len(),
                &req.calibration,
                defaults,
            )?;
            ctx.report(Stage::Tokenize, 1, 1);
            Some(set)
        }
        None => None,
    };
    let mut out = (m.run)(model, &req.options, calib.as_ref(), goal, ctx)?;
    if let Some(c) = &calib {
        out.report.warnings.extend(c.warnings.iter().cloned());
    }
    let summary = PruneSummary {
        layerfold: env!("CARGO_PKG_VERSION"),
        method: m.id.to_string(),
        options,
        target: req.target.clone(),
        layers_before: model.num_layers(),
        layers_after: out.model.num_layers(),
        parameters_before: model.num_parameters(),
        parameters_after: out.model.num_parameters(),
        record: out.model.origins.clone(),
        calibration: calib.map(|c| c.summary),
        report: out.report,
        seconds: started.elapsed().as_secs_f64(),
        distill: None,
    };
    let mut pruned = out.model;
    if m.calibration.is_some() {
        pruned.inputs.extend(req.calibration.file.iter().cloned());
    }
    pruned.provenance =
        Some(serde_json::to_value(&summary).map_err(|e| Error::Internal(e.to_string()))?);
    let (Some(d), Some(prepared)) = (&req.distill, &distill) else { return Ok((pruned, summary)) };
    // The teacher is the model just pruned; the record goes into the summary as into the file.
    let healed = crate::distill::run_prepared(&pruned, model, d, prepared, ctx)?;
    let mut summary = summary;
    summary.distill = healed.provenance.as_ref().map(|p| p["distill"].clone());
    Ok((healed, summary))
}

/// Right-padded batches of about 4096 tokens: one forward pass each.
pub(crate) fn batch_size_for(calib: &CalibrationSet) -> usize {
    (4096 / calib.summary.seq_len.max(1)).max(1)
}

/// One pass of the model over the calibration set, feeding `obs`. Within a run that shares
/// states (`RunContext::shared_states`), an observer of hidden states only is fed from the
/// shared states instead, computing them if no method has yet.
pub(crate) fn calibration_pass(
    model: &Model,
    calib: &CalibrationSet,
    obs: &mut dyn Observer,
    ctx: &RunContext,
) -> Result<()> {
    if ctx.shared_states().is_some_and(|s| s.shares(model)) && !obs.reads_layer_internals() {
        candidates::StateCache::build_with(model, calib, ctx, obs)?;
        return Ok(());
    }
    forward_pass(model, calib, obs, ctx)
}

/// A forward pass of the model over the calibration set, feeding `obs`.
pub(crate) fn forward_pass(
    model: &Model,
    calib: &CalibrationSet,
    obs: &mut dyn Observer,
    ctx: &RunContext,
) -> Result<()> {
    let batches = calib.batches(batch_size_for(calib), model.lm.device())?;
    ctx.report(Stage::Calibrate, 0, batches.len() as u64);
    let check = || ctx.check_cancelled();
    let ctxs =
        batches.iter().map(|b| model.lm.context(&model.config, b)).collect::<Result<Vec<_>>>()?;
    let runs = ctxs.iter().zip(&batches).map(|(c, b)| Ok((c, model.lm.embed(b)?)));
    model.lm.forward_runs(0, runs, obs, &mut |_, _| Ok(()), &check, &|p| {
        let (done, of) = p.fraction();
        ctx.report(Stage::Calibrate, done, of)
    })
}

/// The layers at `indices` (current positions), read: a streamed model builds each from its
/// checkpoint.
pub(crate) fn read_layers(
    model: &Model,
    indices: impl IntoIterator<Item = usize>,
) -> Result<Vec<std::borrow::Cow<'_, crate::model::decoder::DecoderLayer>>> {
    indices.into_iter().map(|i| model.lm.layers[i].get()).collect()
}

/// The candidate for removing `layers` (current positions) from `model`.
pub(crate) fn candidate(model: &Model, layers: &[usize], score: f64, chosen: bool) -> Candidate {
    let original = layers.iter().flat_map(|&i| model.origins[i].layers()).collect();
    Candidate { layers: layers.to_vec(), original, score, chosen }
}

/// The calibration set a data-driven method was given.
pub(crate) fn required(calib: Option<&CalibrationSet>) -> Result<&CalibrationSet> {
    calib.ok_or_else(|| Error::Internal("this method needs calibration data".into()))
}
