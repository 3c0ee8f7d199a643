//! CoMe-P (`come-p`; METHODS.md §3.4): CoMe whose merge ratio `r_a` is not taken from Block
//! Influence but chosen among `{0, 1/g, …, 1}` by the lowest calibration loss of the merged model
//! (each candidate runs from the merged layer on cached inputs).

use serde::{Deserialize, Serialize};

use crate::calib::{CalibrationDefaults, CalibrationSet};
use crate::context::RunContext;
use crate::error::{Error, Result};
use crate::methods::come::{self, progressive, RatioChoice};
use crate::methods::concat::GqaLayout;
use crate::methods::{required, Goal, MethodOutput};
use crate::model::Model;

pub const CALIBRATION: Option<CalibrationDefaults> = come::CALIBRATION;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// `g`: ratios tried are `k / g` for `k = 0..=g`. Default 20.
    pub grid: usize,
    /// As `come`. Default true.
    pub no_repeat: bool,
    /// As `come`. Default grouped.
    pub gqa_layout: GqaLayout,
    /// As `come`. Default true.
    pub prefix_cache: bool,
}

impl Default for Config {
    fn default() -> Self {
        let c = come::Config::default();
        Self {
            grid: 20,
            no_repeat: c.no_repeat,
            gqa_layout: c.gqa_layout,
            prefix_cache: c.prefix_cache,
        }
    }
}

pub fn run(
    model: &Model,
    calib: Option<&CalibrationSet>,
    cfg: &Config,
    goal: Goal,
    ctx: &RunContext,
) -> Result<MethodOutput> {
    let Goal::Remove(k) = goal else {
        unreachable!("come-p takes no threshold (checked by the registry)")
    };
    if cfg.grid == 0 {
        return Err(Error::config("grid", "must be at least 1"));
    }
    let base = come::Config {
        no_repeat: cfg.no_repeat,
        gqa_layout: cfg.gqa_layout,
        prefix_cache: cfg.prefix_cache,
    };
    let mut out = progressive(
        model,
        required(calib)?,
        &base,
        RatioChoice::Search { grid: cfg.grid },
        k,
        ctx,
    )?;
    out.report.score =
        format!("{} ; ratio by calibration NLL over a grid of {}", out.report.score, cfg.grid + 1);
    Ok(out)
}
