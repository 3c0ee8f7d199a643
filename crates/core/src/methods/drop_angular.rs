//! Angular block drop (`drop-angular`; Gromov et al.; METHODS.md §3.1): remove the block of `k`
//! consecutive layers `ℓ*…ℓ*+k−1` with `ℓ* = argmin_ℓ D(ℓ, k)` over `ℓ ∈ [0, L−k]`.

use serde::{Deserialize, Serialize};

use crate::calib::{CalibrationDefaults, CalibrationSet};
use crate::context::RunContext;
use crate::error::Result;
use crate::methods::{calibration_pass, candidate, required, Goal, MethodOutput, Report, Step};
use crate::model::Model;
use crate::score::angular::LastTokenStates;

pub const CALIBRATION: Option<CalibrationDefaults> = Some(CalibrationDefaults::GENERIC);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {}

pub fn run(
    model: &Model,
    calib: Option<&CalibrationSet>,
    _: &Config,
    goal: Goal,
    ctx: &RunContext,
) -> Result<MethodOutput> {
    let Goal::Remove(k) = goal else {
        unreachable!("drop-angular takes no threshold (checked by the registry)")
    };
    let n = model.num_layers();
    let mut states = LastTokenStates::new(n);
    calibration_pass(model, required(calib)?, &mut states, ctx)?;
    let distances: Vec<f64> = (0..=n - k).map(|l| states.distance(l, k)).collect();
    let best = (0..distances.len())
        .min_by(|&a, &b| distances[a].total_cmp(&distances[b]))
        .expect("k < L leaves a block");
    let removed: Vec<usize> = (best..best + k).collect();
    let mut report =
        Report::new("angular distance D(ℓ, k) of the block's input and output (last token)");
    report.steps.push(Step {
        candidates: distances
            .iter()
            .enumerate()
            .map(|(l, &d)| candidate(model, &(l..l + k).collect::<Vec<_>>(), d, l == best))
            .collect(),
        details: None,
        decision: format!("remove layers {}..={} (ℓ* = {best})", best, best + k - 1),
    });
    let mut pruned = model.clone();
    pruned.remove_layers(&removed);
    Ok(MethodOutput { model: pruned, report })
}
