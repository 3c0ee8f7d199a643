//! ShortGPT (`drop-bi`; METHODS.md §3.1): compute Block Influence once on the original model and
//! remove the `k` layers with the lowest BI (not necessarily contiguous).

use serde::{Deserialize, Serialize};

use crate::calib::{CalibrationDefaults, CalibrationSet};
use crate::context::RunContext;
use crate::error::Result;
use crate::methods::{calibration_pass, candidate, required, Goal, MethodOutput, Report, Step};
use crate::model::Model;
use crate::score::bi::{BlockInfluence, LastState};

pub const CALIBRATION: Option<CalibrationDefaults> = Some(CalibrationDefaults::GENERIC);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// The state after the last layer: `post-norm` (HF's, default) or `pre-norm` (`h_L`).
    pub last_state: LastState,
}

/// The `k` layers with the lowest scores (ties: the earlier layer first), ascending by index.
pub(crate) fn lowest(scores: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    let mut chosen = order[..k].to_vec();
    chosen.sort_unstable();
    chosen
}

pub fn run(
    model: &Model,
    calib: Option<&CalibrationSet>,
    cfg: &Config,
    goal: Goal,
    ctx: &RunContext,
) -> Result<MethodOutput> {
    let Goal::Remove(k) = goal else {
        unreachable!("drop-bi takes no threshold (checked by the registry)")
    };
    let mut bi = BlockInfluence::new(model.num_layers(), cfg.last_state);
    calibration_pass(model, required(calib)?, &mut bi, ctx)?;
    let scores = bi.mean();
    let removed = lowest(&scores, k);
    let mut report = Report::new("block influence (mean 1 − cos over calibration tokens)");
    report.steps.push(Step {
        candidates: (0..scores.len())
            .map(|i| candidate(model, &[i], scores[i], removed.contains(&i)))
            .collect(),
        details: None,
        decision: format!("remove layers {removed:?}, the {k} with the lowest BI"),
    });
    let mut pruned = model.clone();
    pruned.remove_layers(&removed);
    Ok(MethodOutput { model: pruned, report })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_breaks_ties_by_index() {
        assert_eq!(lowest(&[0.3, 0.1, 0.1, 0.5, 0.0], 3), vec![1, 2, 4]);
    }
}
