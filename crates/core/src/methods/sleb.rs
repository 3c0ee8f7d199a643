//! SLEB (`sleb`; METHODS.md §3.1): `k` greedy rounds; in each, every remaining layer is scored by
//! the calibration mean NLL of the model with that layer skipped, and the argmin is removed.
//!
//! Skipping layer `j` leaves layers `0..j` unchanged, so candidates run from `j` on the input of
//! layer `j`, which is advanced one layer at a time: a round costs about `L²/2` layer passes
//! instead of `L²` (`prefixCache: false` runs each candidate from the embeddings, for benchmarks).

use serde::{Deserialize, Serialize};

use crate::calib::{CalibrationDefaults, CalibrationKind, CalibrationSet};
use crate::context::{RunContext, Stage};
use crate::error::Result;
use crate::eval::nll::nll_sum;
use crate::methods::candidates::Evaluation;
use crate::methods::{batch_size_for, candidate, required, Goal, MethodOutput, Report, Step};
use crate::model::decoder::NoObserver;
use crate::model::Model;

/// The reference's calibration: random windows of the training text.
pub const CALIBRATION: Option<CalibrationDefaults> =
    Some(CalibrationDefaults { kind: CalibrationKind::Sampled, seq_len: None, n_samples: 128 });

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Run candidates from the skipped layer on cached inputs (default true).
    pub prefix_cache: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self { prefix_cache: true }
    }
}

/// Mean NLL of `model` with each layer skipped in turn.
fn skip_scores(
    model: &Model,
    calib: &CalibrationSet,
    eval: Evaluation,
    ctx: &RunContext,
    progress: (u64, u64),
) -> Result<Vec<f64>> {
    let n = model.num_layers();
    let (mut sums, mut count) = (vec![0f64; n], 0usize);
    let check = || ctx.check_cancelled();
    let batches = calib.batches(batch_size_for(calib), model.lm.device())?;
    for (b, batch) in batches.iter().enumerate() {
        let fctx = model.lm.context(&model.config, batch)?;
        let mut h = model.lm.embed(batch)?;
        #[allow(clippy::needless_range_loop)] // j indexes layers, candidates and sums alike
        for j in 0..n {
            let mut skipped = model.lm.clone();
            skipped.layers.remove(j);
            let out = match eval {
                Evaluation::CachedPrefix => {
                    skipped.forward_from(j, h.clone(), &fctx, &mut NoObserver, &check)?
                }
                Evaluation::FullForward => skipped.forward_from(
                    0,
                    skipped.embed(batch)?,
                    &fctx,
                    &mut NoObserver,
                    &check,
                )?,
            };
            let (s, c) = nll_sum(&model.lm, &out, batch)?;
            sums[j] += s;
            if j == 0 {
                count += c;
            }
            if eval == Evaluation::CachedPrefix {
                h = model.lm.layers[j].get()?.forward(j, &h, &fctx, &mut NoObserver)?;
            }
            let done = progress.0 + (b * n + j + 1) as u64;
            ctx.report(Stage::Score, done, progress.1);
        }
    }
    Ok(sums.into_iter().map(|s| s / count.max(1) as f64).collect())
}

pub fn run(
    model: &Model,
    calib: Option<&CalibrationSet>,
    cfg: &Config,
    goal: Goal,
    ctx: &RunContext,
) -> Result<MethodOutput> {
    let Goal::Remove(k) = goal else {
        unreachable!("sleb takes no threshold (checked by the registry)")
    };
    let calib = required(calib)?;
    let eval = Evaluation::from_flag(cfg.prefix_cache);
    let batches = calib.samples.len().div_ceil(batch_size_for(calib)) as u64;
    let per_round = |r: usize| (model.num_layers() - r) as u64 * batches;
    let total: u64 = (0..k).map(per_round).sum();
    let mut current = model.clone();
    let mut report = Report::new("calibration mean NLL with the layer skipped");
    let mut done = 0u64;
    for round in 0..k {
        let scores = skip_scores(&current, calib, eval, ctx, (done, total))?;
        done += per_round(round);
        let best = (0..scores.len())
            .min_by(|&a, &b| scores[a].total_cmp(&scores[b]))
            .expect("a layer remains");
        report.steps.push(Step {
            candidates: (0..scores.len())
                .map(|j| candidate(&current, &[j], scores[j], j == best))
                .collect(),
            details: None,
            decision: format!(
                "round {}: remove layer {best} (original {:?}), NLL {:.4}",
                round + 1,
                current.origins[best].layers(),
                scores[best]
            ),
        });
        current.remove_layers(&[best]);
    }
    Ok(MethodOutput { model: current, report })
}
