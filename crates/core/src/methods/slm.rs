//! SLM, sliding layer merging (`slm`; METHODS.md §3.3): windows grow downward from the top while
//! the merged model's output similarity to the original stays above `T`; a window that stops
//! passing is committed without its last layer. The last layer is never merged and windows never
//! overlap. The released code forgets to commit the window still open when the scan ends; this
//! implementation commits it.
//!
//! Windows are committed above the current one, so layers below `low` are original and a
//! candidate runs from `low` on the original's cached input of layer `low`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::calib::{CalibrationDefaults, CalibrationKind, CalibrationSet};
use crate::context::{RunContext, Stage};
use crate::error::Result;
use crate::methods::candidates::{similarity, Evaluation, StateCache};
use crate::methods::merge_rule::{collapse, MergeRule};
use crate::methods::{candidate, required, threshold, Goal, MethodOutput, Report, Step};
use crate::model::Model;

/// The reference: 10 sampled windows of 128 tokens.
pub const CALIBRATION: Option<CalibrationDefaults> =
    Some(CalibrationDefaults { kind: CalibrationKind::Sampled, seq_len: Some(128), n_samples: 10 });

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// How a window's weights combine: `rdsc` (paper), `top` (released code), `mean` (ours).
    pub merge: MergeRule,
    /// Run candidates from the window's slot on cached inputs (default true).
    pub prefix_cache: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self { merge: MergeRule::default(), prefix_cache: true }
    }
}

/// `(committed windows, low, high)` → S.
type Memo = HashMap<(Vec<(usize, usize)>, usize, usize), f64>;

struct Run {
    model: Model,
    steps: Vec<Step>,
}

fn commit(
    m: &mut Model,
    cfg: &Config,
    lo: usize,
    hi: usize,
    committed: &mut Vec<(usize, usize)>,
) -> Result<()> {
    let merged = collapse(cfg.merge, &super::read_layers(m, lo..=hi)?)?;
    m.replace_layers(lo, hi, merged)?;
    committed.push((lo, hi));
    Ok(())
}

/// Windows are `[low, high]` in positions of the model being built; positions `≤ high` are
/// original layers because every commit lies above.
fn merge_once(
    model: &Model,
    cfg: &Config,
    t: f64,
    cache: &StateCache,
    memo: &mut Memo,
    ctx: &RunContext,
) -> Result<Run> {
    let eval = Evaluation::from_flag(cfg.prefix_cache);
    let mut m = model.clone();
    let mut committed = Vec::new();
    let mut steps = Vec::new();
    let mut high = model.num_layers() as isize - 2;
    let mut low = high - 1;
    while low >= 0 {
        let (lo, hi) = (low as usize, high as usize);
        let key = (committed.clone(), lo, hi);
        let s = match memo.get(&key) {
            Some(&s) => s,
            None => {
                let merged = collapse(cfg.merge, &super::read_layers(&m, lo..=hi)?)?;
                let mut cand = m.lm.clone();
                cand.layers.splice(lo..=hi, [merged.into()]);
                let s = similarity(&cand, lo, cache, eval, ctx)?;
                memo.insert(key, s);
                ctx.report(Stage::Score, memo.len() as u64, 0);
                s
            }
        };
        let scored = candidate(&m, &(lo..=hi).collect::<Vec<_>>(), s, s > t);
        let decision;
        if s > t {
            decision = format!("S = {s:.4} > T = {t:.4}: grow the window to {lo}..={hi}");
            low -= 1;
        } else if low + 1 != high {
            decision = format!("S = {s:.4} ≤ T = {t:.4}: commit {}..={hi} into {}", lo + 1, lo + 1);
            commit(&mut m, cfg, lo + 1, hi, &mut committed)?;
            high = low;
            low = high - 1;
        } else {
            decision = format!("S = {s:.4} ≤ T = {t:.4}: keep layer {hi}, slide down");
            high -= 1;
            low -= 1;
        }
        steps.push(Step::new(vec![scored], decision));
    }
    if high > low + 1 {
        let (lo, hi) = ((low + 1) as usize, high as usize);
        steps.push(Step {
            candidates: vec![],
            details: None,
            decision: format!("end of the scan: commit the open window {lo}..={hi}"),
        });
        commit(&mut m, cfg, lo, hi, &mut committed)?;
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
    let cache = StateCache::build(model, required(calib)?, ctx)?;
    let mut memo = Memo::new();
    let mut report = Report::new("output similarity S to the original (mean cosine of vec(ĥ))");
    report.warnings.extend(cache.note());
    threshold::run_for_goal(model, goal, report, |t| {
        let run = merge_once(model, cfg, t, &cache, &mut memo, ctx)?;
        Ok((run.model, run.steps))
    })
}
