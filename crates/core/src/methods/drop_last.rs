//! Reverse order (`drop-last`; METHODS.md §3.1): remove the `k` layers just before the last layer.
//! Uses no data.

use serde::{Deserialize, Serialize};

use crate::calib::{CalibrationDefaults, CalibrationSet};
use crate::context::RunContext;
use crate::error::Result;
use crate::methods::{candidate, Goal, MethodOutput, Report, Step};
use crate::model::Model;

pub const CALIBRATION: Option<CalibrationDefaults> = None;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {}

pub fn run(
    model: &Model,
    _: Option<&CalibrationSet>,
    _: &Config,
    goal: Goal,
    _: &RunContext,
) -> Result<MethodOutput> {
    let Goal::Remove(k) = goal else {
        unreachable!("drop-last takes no threshold (checked by the registry)")
    };
    let last = model.num_layers() - 1;
    let removed: Vec<usize> = (last - k..last).collect();
    let mut report = Report::new("none (fixed order)");
    report.steps.push(Step {
        candidates: vec![candidate(model, &removed, 0.0, true)],
        details: None,
        decision: format!("remove layers {removed:?}, the {k} before the last"),
    });
    let mut pruned = model.clone();
    pruned.remove_layers(&removed);
    Ok(MethodOutput { model: pruned, report })
}
