//! Zero-shot multiple-choice evaluation (METHODS.md §4.2) scored exactly as
//! lm-evaluation-harness 0.4 scores it: per example, the log-likelihood of every choice
//! (`eval::loglikelihood`), `acc` from their argmax and `acc_norm` from their argmax after dividing
//! by the choice's length in Unicode code points (ties go to the first choice, as `np.argmax`
//! does), and each metric's standard error as lm-eval's `mean_stderr` (sample standard deviation
//! over `sqrt(n)`).

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::context::{RunContext, Stage};
use crate::error::{Error, Result};
use crate::eval::loglikelihood::{encode_pair, score, Request};
use crate::eval::tasks::{Metric, Task, TASKS};
use crate::model::Model;

/// What to evaluate. Unset fields take the defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct EvalOptions {
    /// Registered task ids and `.jsonl` files. Default: the seven standard tasks.
    pub tasks: Option<Vec<String>>,
    /// The first `limit` examples of each task, in file order (lm-eval `--limit`). Default: all.
    pub limit: Option<usize>,
    /// Requests per forward pass. Default 32.
    pub batch_size: Option<usize>,
    /// The folder of the standard task files.
    pub data_dir: Option<PathBuf>,
}

/// One task's result. `stderr` is that of the reported `metric`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskResult {
    pub metric: Metric,
    pub value: f64,
    pub stderr: f64,
    pub n: usize,
    pub acc: f64,
    pub acc_stderr: f64,
    pub acc_norm: f64,
    pub acc_norm_stderr: f64,
}

/// One scored example, for `--log-samples`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    pub task: String,
    /// 0-based index of the example in its file.
    pub doc: usize,
    pub gold: usize,
    /// `loglik(continuation | context)` per choice, in nats.
    pub loglik: Vec<f64>,
    /// Whether each choice's continuation was the greedy one.
    pub greedy: Vec<bool>,
    pub pred: usize,
    pub pred_norm: usize,
}

/// The result of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EvalResult {
    /// In the order asked for.
    pub tasks: Vec<(String, TaskResult)>,
    /// Mean of the reported metrics × 100 (METHODS.md §4.2).
    pub average: f64,
    pub samples: Vec<Sample>,
    pub seconds: f64,
}

/// Index of the first maximum (`np.argmax`).
fn argmax(values: impl IntoIterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, v) in values.into_iter().enumerate() {
        if v > best.1 || i == 0 {
            best = (i, v);
        }
    }
    best.0
}

/// lm-eval's `mean_stderr`: sample standard deviation / sqrt(n); NaN below two values.
fn mean_stderr(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    if values.len() < 2 {
        return f64::NAN;
    }
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    var.sqrt() / n.sqrt()
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Evaluates `model` on the tasks of `opts` (METHODS.md §4.2).
pub fn evaluate(model: &Model, opts: &EvalOptions, ctx: &RunContext) -> Result<EvalResult> {
    let start = Instant::now();
    if opts.limit == Some(0) {
        return Err(Error::config("limit", "must be at least 1"));
    }
    let batch_size = match opts.batch_size {
        Some(0) => return Err(Error::config("batchSize", "must be at least 1")),
        b => b.unwrap_or(32),
    };
    let names: Vec<String> = match &opts.tasks {
        Some(t) if t.is_empty() => return Err(Error::config("tasks", "name at least one task")),
        Some(t) => t.clone(),
        None => TASKS.iter().map(|t| t.id.to_string()).collect(),
    };
    // Every task is found and read before the first forward pass.
    let mut tasks = Vec::new();
    for name in &names {
        let task = Task::resolve(name, opts.data_dir.as_deref())?;
        let mut examples = task.examples()?;
        if let Some(limit) = opts.limit {
            examples.truncate(limit);
        }
        tasks.push((task, examples));
    }
    ctx.report(Stage::Tokenize, 0, tasks.len() as u64);
    let mut requests: Vec<Request> = Vec::new();
    let mut spans = Vec::new();
    for (k, (_, examples)) in tasks.iter().enumerate() {
        ctx.check_cancelled()?;
        for ex in examples {
            let first = requests.len();
            for (context, continuation) in ex.requests() {
                requests.push(encode_pair(&model.tokenizer, &context, &continuation)?);
            }
            spans.push(first..requests.len());
        }
        ctx.report(Stage::Tokenize, k as u64 + 1, tasks.len() as u64);
    }
    let scored = score(model, &requests, &spans, batch_size, ctx, (0, requests.len() as u64))?;
    let mut spans = spans.into_iter();
    let mut results = Vec::new();
    let mut samples = Vec::new();
    for (task, examples) in &tasks {
        let (mut acc, mut acc_norm) = (Vec::new(), Vec::new());
        for (doc, ex) in examples.iter().enumerate() {
            let span = spans.next().expect("one span per example");
            let lls: Vec<f64> = scored[span.clone()].iter().map(|s| s.loglik).collect();
            let pred = argmax(lls.iter().copied());
            let lengths = ex.choice_texts().iter().map(|c| c.chars().count() as f64);
            let pred_norm = argmax(lls.iter().zip(lengths).map(|(ll, len)| ll / len));
            acc.push(f64::from(u8::from(pred == ex.gold())));
            acc_norm.push(f64::from(u8::from(pred_norm == ex.gold())));
            samples.push(Sample {
                task: task.name.clone(),
                doc,
                gold: ex.gold(),
                loglik: lls,
                greedy: scored[span].iter().map(|s| s.greedy).collect(),
                pred,
                pred_norm,
            });
        }
        let r = TaskResult {
            metric: task.metric,
            value: 0.0,
            stderr: 0.0,
            n: examples.len(),
            acc: mean(&acc),
            acc_stderr: mean_stderr(&acc),
            acc_norm: mean(&acc_norm),
            acc_norm_stderr: mean_stderr(&acc_norm),
        };
        let (value, stderr) = match task.metric {
            Metric::Acc => (r.acc, r.acc_stderr),
            Metric::AccNorm => (r.acc_norm, r.acc_norm_stderr),
        };
        results.push((task.name.clone(), TaskResult { value, stderr, ..r }));
    }
    let average = 100.0 * results.iter().map(|(_, r)| r.value).sum::<f64>() / results.len() as f64;
    Ok(EvalResult { tasks: results, average, samples, seconds: start.elapsed().as_secs_f64() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax([1.0, 3.0, 3.0]), 1);
        assert_eq!(argmax([-5.0, -7.0]), 0);
        assert_eq!(argmax([f64::NEG_INFINITY, f64::NEG_INFINITY]), 0);
    }

    #[test]
    fn stderr_is_lm_evals_mean_stderr() {
        // acc over [1, 0, 1, 1]: sample sd = 0.5, / sqrt(4).
        assert!((mean_stderr(&[1.0, 0.0, 1.0, 1.0]) - 0.25).abs() < 1e-12);
        assert!(mean_stderr(&[1.0]).is_nan());
    }
}
