//! `compare`: the dense model and each method at one target, measured the same way: perplexity
//! on one text (METHODS.md §4.1) and the zero-shot tasks (§4.2), with the prune time of each.
//! Every method gets the same target, calibration settings and evaluation options, so the rows
//! differ only by the method.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::calib::text::TextSource;
use crate::calib::CalibrationConfig;
use crate::context::RunContext;
use crate::error::{Error, Result};
use crate::eval::multiple_choice::{evaluate, EvalOptions};
use crate::eval::perplexity::{perplexity, PerplexityOptions};
use crate::methods::{self, PruneRequest, Target};
use crate::model::origin::Origin;
use crate::model::save::{save, SaveOptions};
use crate::model::Model;

/// The name of the unpruned model's row.
pub const DENSE: &str = "dense";

/// What to compare. Unset fields take the defaults of `prune` and `evaluate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompareRequest {
    /// Method ids, in the order of the rows.
    pub methods: Vec<String>,
    pub target: Target,
    /// Every method's calibration text and settings (a method's defaults fill unset fields).
    #[serde(default)]
    pub calibration: CalibrationConfig,
    /// Options of a method, by method id. A `calibration` among them replaces the shared
    /// settings for that method (its file or text defaults to the shared one): `{}` gives the
    /// method its own defaults.
    #[serde(default)]
    pub options: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub eval: EvalOptions,
    /// The perplexity text; `None` leaves the column out.
    #[serde(default)]
    pub ppl_data: Option<PathBuf>,
    /// Perplexity windows (the first ones). Default 40.
    #[serde(default)]
    pub ppl_windows: Option<usize>,
    /// Tokens per perplexity window. Default `min(512, context)`.
    #[serde(default)]
    pub ppl_seq_len: Option<usize>,
    /// Save each pruned model as a Hugging Face folder `<saveDir>/<method>`.
    #[serde(default)]
    pub save_dir: Option<PathBuf>,
    /// Heal every pruned model with the same distillation run (same steps, tokens and options,
    /// so the comparison is fair): each method then gives a second row, `<method>+distill`.
    #[serde(default)]
    pub distill: Option<crate::distill::DistillRequest>,
}

/// One task's reported metric in a row.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskScore {
    pub task: String,
    /// `acc` or `acc_norm` (METHODS.md §4.2).
    pub metric: String,
    /// × 100.
    pub value: f64,
}

/// One model of the comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CompareRow {
    /// A method id, or `dense`.
    pub method: String,
    pub layers: usize,
    pub parameters: usize,
    pub ppl: Option<f64>,
    pub tasks: Vec<TaskScore>,
    /// Mean of the task values (× 100).
    pub average: f64,
    /// `average` as a percentage of the dense model's.
    pub retained: f64,
    /// Seconds the method took (0 for the dense model).
    pub prune_seconds: f64,
    /// Seconds the distillation took (`<method>+distill` rows).
    pub distill_seconds: Option<f64>,
    /// Seconds of perplexity and tasks.
    pub eval_seconds: f64,
    /// The merge record (dense: every layer once).
    pub record: Vec<Origin>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CompareResult {
    pub rows: Vec<CompareRow>,
    pub seconds: f64,
}

/// Runs the comparison on `model` (which is not modified). Methods that read the same
/// calibration set share one forward pass over it (`SharedStates`).
pub fn compare(model: &Model, req: &CompareRequest, ctx: &RunContext) -> Result<CompareResult> {
    let start = Instant::now();
    let ctx = &ctx.sharing_states(model);
    if req.methods.is_empty() {
        return Err(Error::config("methods", "name at least one method"));
    }
    if req.ppl_windows == Some(0) {
        return Err(Error::config("pplWindows", "must be at least 1"));
    }
    if let Some(extra) = req.options.keys().find(|m| !req.methods.contains(m)) {
        return Err(Error::config(
            "options",
            format!("`{extra}` is not one of the methods compared"),
        ));
    }
    // Every method, option and target is checked before the first forward pass.
    // One distillation request for every method, each with its own checkpoint folder; the
    // perplexity text is held out of the training text. Checked before any work.
    let distill = match &req.distill {
        Some(d) => {
            let d = crate::distill::DistillRequest {
                held_out: d.held_out.clone().or_else(|| req.ppl_data.clone()),
                ..d.clone()
            };
            // The training text is cut and checked once; only the checkpoint folder differs.
            let prepared = d.prepare(model)?;
            let per_method = req
                .methods
                .iter()
                .map(|id| prepared.with_checkpoint_subdir(id))
                .collect::<Result<Vec<_>>>()?;
            Some((d, per_method))
        }
        None => None,
    };
    let mut requests = Vec::with_capacity(req.methods.len());
    for id in &req.methods {
        let m = methods::find(id)?;
        let (options, calibration) = method_options(req, id)?;
        (m.check)(&options)?;
        req.target.resolve(model, m.accepts_threshold, m.id)?;
        requests.push(PruneRequest {
            method: id.clone(),
            options,
            target: req.target.clone(),
            calibration,
            distill: None,
        });
    }
    let ppl_opts = PerplexityOptions {
        seq_len: Some(req.ppl_seq_len.unwrap_or(model.max_seq_len().min(512))),
        max_windows: Some(req.ppl_windows.unwrap_or(40)),
        batch_size: None,
    };
    let measure = |m: &Model, method: &str, prune_seconds: f64, warnings: Vec<String>| {
        let started = Instant::now();
        let mut warnings = warnings;
        let ppl = match &req.ppl_data {
            Some(file) => {
                let r = perplexity(m, &TextSource::File(file.clone()), &ppl_opts, ctx)?;
                warnings.extend(r.warnings);
                Some(r.ppl).filter(|p| p.is_finite())
            }
            None => None,
        };
        let eval = evaluate(m, &req.eval, ctx)?;
        let tasks = eval
            .tasks
            .iter()
            .map(|(name, t)| TaskScore {
                task: name.clone(),
                metric: t.metric.as_str().to_string(),
                value: t.value * 100.0,
            })
            .collect();
        Ok::<_, Error>(CompareRow {
            method: method.to_string(),
            layers: m.num_layers(),
            parameters: m.num_parameters(),
            ppl,
            tasks,
            average: eval.average,
            retained: 100.0,
            prune_seconds,
            distill_seconds: None,
            eval_seconds: started.elapsed().as_secs_f64(),
            record: m.origins.clone(),
            warnings,
        })
    };
    let mut rows = vec![measure(model, DENSE, 0.0, vec![])?];
    for (k, prune_req) in requests.iter().enumerate() {
        let id = &prune_req.method;
        let (pruned, summary) = methods::prune(model, prune_req, ctx)?;
        if let Some(dir) = &req.save_dir {
            save(&pruned, &dir.join(id), &SaveOptions::default(), ctx)?;
        }
        rows.push(measure(&pruned, id, summary.seconds, summary.report.warnings.clone())?);
        if let Some((d, prepared)) = distill.as_ref().map(|(d, all)| (d, &all[k])) {
            let started = Instant::now();
            let healed = crate::distill::run_prepared(&pruned, model, d, prepared, ctx)?;
            let seconds = started.elapsed().as_secs_f64();
            let name = format!("{id}+distill");
            if let Some(dir) = &req.save_dir {
                save(&healed, &dir.join(&name), &SaveOptions::default(), ctx)?;
            }
            let mut warnings = summary.report.warnings.clone();
            warnings.extend(prepared.set.warnings.iter().cloned());
            let mut row = measure(&healed, &name, summary.seconds, warnings)?;
            row.distill_seconds = Some(seconds);
            rows.push(row);
        }
    }
    let dense = rows[0].average;
    for row in &mut rows {
        row.retained = if dense > 0.0 { 100.0 * row.average / dense } else { f64::NAN };
    }
    Ok(CompareResult { rows, seconds: start.elapsed().as_secs_f64() })
}

/// A method's own options and its calibration settings (see [`CompareRequest::options`]).
fn method_options(
    req: &CompareRequest,
    id: &str,
) -> Result<(serde_json::Value, CalibrationConfig)> {
    let Some(serde_json::Value::Object(options)) = req.options.get(id) else {
        let options = req.options.get(id).cloned().unwrap_or(serde_json::Value::Null);
        return Ok((options, req.calibration.clone()));
    };
    let mut options = options.clone();
    let calibration = match options.remove("calibration") {
        None => req.calibration.clone(),
        Some(own) => {
            let mut own: CalibrationConfig = serde_json::from_value(own)
                .map_err(|e| Error::config(format!("options.{id}.calibration"), e.to_string()))?;
            if own.file.is_none() && own.text.is_none() {
                own.file.clone_from(&req.calibration.file);
                own.text.clone_from(&req.calibration.text);
            }
            own
        }
    };
    Ok((serde_json::Value::Object(options), calibration))
}
