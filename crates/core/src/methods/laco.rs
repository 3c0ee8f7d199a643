//! LaCo, layer collapse (`laco`; METHODS.md §3.2): from the top down, collapse `C` adjacent layers
//! into the lowest slot of the window when the collapsed model's output similarity to the
//! original stays above `T`.
//!
//! Merges only ever happen at or above the current slot `l`, so the layers below `l` are the
//! original ones and a candidate runs from `l` on the original's cached input of layer `l`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::calib::{CalibrationDefaults, CalibrationKind, CalibrationSet};
use crate::context::{RunContext, Stage};
use crate::error::{Error, Result};
use crate::methods::candidates::{similarity, Evaluation, StateCache};
use crate::methods::merge_rule::{collapse, MergeRule};
use crate::methods::{candidate, required, threshold, Goal, MethodOutput, Report, Step};
use crate::model::Model;

/// The references use 5 short Wikipedia sentence prefixes.
pub const CALIBRATION: Option<CalibrationDefaults> =
    Some(CalibrationDefaults { kind: CalibrationKind::Sentences, seq_len: Some(64), n_samples: 5 });

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// How a window's weights combine: `rdsc` (paper), `top` (released code), `mean` (ours).
    pub merge: MergeRule,
    /// `C`: layers per merge (≥ 2). Default 4.
    pub layers_per_merge: usize,
    /// `L`: the lowest slot a merge may start at (0-based). Default 1.
    pub lowest_layer: usize,
    /// `H`: exclusive upper bound of the merge range. Default: the model's layer count.
    pub highest_layer: Option<usize>,
    /// `I`: slots skipped after an accepted merge (≥ 1). Default 2.
    pub interval: usize,
    /// Run candidates from the merged slot on cached inputs (default true).
    pub prefix_cache: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            merge: MergeRule::default(),
            layers_per_merge: 4,
            lowest_layer: 1,
            highest_layer: None,
            interval: 2,
            prefix_cache: true,
        }
    }
}

impl Config {
    /// Checks the options against an `n`-layer model: every range names layers the model has, and
    /// at least one window fits between `L` and `H`.
    pub fn check(&self, n: usize) -> Result<()> {
        let range = |field: &str, value: usize, lo: usize, hi: usize, why: &str| {
            if (lo..=hi).contains(&value) {
                Ok(())
            } else {
                Err(Error::config(
                    field,
                    format!("{value} is outside {lo}..={hi} for this {n}-layer model ({why})"),
                ))
            }
        };
        if n < 2 {
            return Err(Error::config(
                "method",
                format!("laco needs at least 2 layers; the model has {n}"),
            ));
        }
        range(
            "lowestLayer",
            self.lowest_layer,
            0,
            n - 2,
            "a merge needs the slot and a layer above it",
        )?;
        let high = self.highest_layer.unwrap_or(n);
        range(
            "highestLayer",
            high,
            self.lowest_layer + 2,
            n,
            "an exclusive bound above lowestLayer + 1",
        )?;
        range(
            "layersPerMerge",
            self.layers_per_merge,
            2,
            high - self.lowest_layer,
            "a window between lowestLayer and highestLayer",
        )?;
        range("interval", self.interval, 1, n, "slots skipped after a merge")
    }
}

/// `(accepted merges so far, slot, K)` → S: runs for different thresholds share their prefixes.
type Memo = HashMap<(Vec<(usize, usize)>, usize, usize), f64>;

struct Run {
    model: Model,
    steps: Vec<Step>,
}

fn collapse_once(
    model: &Model,
    cfg: &Config,
    t: f64,
    cache: &StateCache,
    memo: &mut Memo,
    ctx: &RunContext,
) -> Result<Run> {
    let n = model.num_layers();
    let c = cfg.layers_per_merge;
    let h = cfg.highest_layer.unwrap_or(n);
    let eval = Evaluation::from_flag(cfg.prefix_cache);
    let mut m = model.clone();
    let mut accepted: Vec<(usize, usize)> = Vec::new();
    let mut steps = Vec::new();
    let mut l = h as isize - c as isize;
    while l >= cfg.lowest_layer as isize {
        let slot = l as usize;
        let k = (c - 1).min(m.num_layers() - slot - 1);
        if k == 0 {
            l -= 1;
            continue;
        }
        let window: Vec<usize> = (slot..=slot + k).collect();
        let merged = collapse(cfg.merge, &super::read_layers(&m, window.iter().copied())?)?;
        let key = (accepted.clone(), slot, k);
        let s = match memo.get(&key) {
            Some(&s) => s,
            None => {
                let mut cand = m.lm.clone();
                cand.layers.splice(slot..=slot + k, [merged.clone().into()]);
                let s = similarity(&cand, slot, cache, eval, ctx)?;
                memo.insert(key, s);
                ctx.report(Stage::Score, memo.len() as u64, 0);
                s
            }
        };
        let accept = s > t;
        steps.push(Step {
            candidates: vec![candidate(&m, &window, s, accept)],
            details: None,
            decision: if accept {
                format!(
                    "S = {s:.4} > T = {t:.4}: collapse layers {slot}..={} into {slot}",
                    slot + k
                )
            } else {
                format!("S = {s:.4} ≤ T = {t:.4}: keep")
            },
        });
        if accept {
            m.replace_layers(slot, slot + k, merged)?;
            accepted.push((slot, k));
            l -= cfg.interval as isize;
            if l >= m.num_layers() as isize {
                l = m.num_layers() as isize - 1 - c as isize;
            }
        } else {
            l -= 1;
        }
    }
    Ok(Run { model: m, steps })
}

pub fn run(
    model: &Model,
    calib: Option<&CalibrationSet>,
    cfg: &Config,
    goal: Goal,
    ctx: &RunContext,
) -> Result<MethodOutput> {
    cfg.check(model.num_layers())?;
    let cache = StateCache::build(model, required(calib)?, ctx)?;
    let mut memo = Memo::new();
    let mut report = Report::new("output similarity S to the original (mean cosine of vec(ĥ))");
    report.warnings.extend(cache.note());
    threshold::run_for_goal(model, goal, report, |t| {
        let run = collapse_once(model, cfg, t, &cache, &mut memo, ctx)?;
        Ok((run.model, run.steps))
    })
}
