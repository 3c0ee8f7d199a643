//! Choosing LaCo's or SLM's threshold `T` for a layer-count target (METHODS.md §3.2, §3.3 **(ours)**):
//! bisect `T` assuming fewer layers for a lower `T`; where that assumption fails (SLM's count is
//! not monotone in `T`) scan the neighbourhood of the last bracket; keep the closest count and say
//! whether it is exact.

use crate::error::Result;
use crate::methods::{Goal, MethodOutput, Report, Step, ThresholdSearch};
use crate::model::Model;

/// Runs a threshold method (`once(T)` → pruned model and its steps) for `goal`: at the given
/// threshold, or at the one [`search`] finds for a layer target, recorded in the report.
pub fn run_for_goal(
    model: &Model,
    goal: Goal,
    mut report: Report,
    mut once: impl FnMut(f64) -> Result<(Model, Vec<Step>)>,
) -> Result<MethodOutput> {
    let t = match goal {
        Goal::Threshold(t) => t,
        Goal::Remove(k) => {
            let target = model.num_layers() - k;
            let found = search(target, |t| Ok(once(t)?.0.num_layers()))?;
            if !found.exact {
                report.warnings.push(format!(
                    "no threshold gives {target} layers; the closest, {} layers, came from T = {:.4}",
                    found.layers, found.threshold
                ));
            }
            let t = found.threshold;
            report.threshold = Some(found);
            t
        }
    };
    let (pruned, steps) = once(t)?;
    report.steps = steps;
    Ok(MethodOutput { model: pruned, report })
}

/// Bisection steps: brackets `[−1, 1]` down to about 1e-3.
const BISECTIONS: usize = 11;
/// Points scanned on each side of the final bracket, `SCAN_STEP` apart.
const SCAN_POINTS: usize = 8;
const SCAN_STEP: f64 = 0.0025;

/// Finds `T` whose run leaves `target` layers; `layers_at(T)` runs the method.
pub fn search(
    target: usize,
    mut layers_at: impl FnMut(f64) -> Result<usize>,
) -> Result<ThresholdSearch> {
    let mut tried: Vec<(f64, usize)> = Vec::new();
    let mut eval = |t: f64, tried: &mut Vec<(f64, usize)>| -> Result<usize> {
        if let Some(&(_, n)) = tried.iter().find(|(u, _)| *u == t) {
            return Ok(n);
        }
        let n = layers_at(t)?;
        tried.push((t, n));
        Ok(n)
    };
    let done = |tried: &[(f64, usize)]| tried.iter().any(|&(_, n)| n == target);
    // A lower T accepts more merges, hence fewer layers.
    let (mut lo, mut hi) = (-1.0f64, 1.0f64);
    for t in [lo, hi] {
        eval(t, &mut tried)?;
    }
    for _ in 0..BISECTIONS {
        if done(&tried) {
            break;
        }
        let mid = (lo + hi) / 2.0;
        if eval(mid, &mut tried)? > target {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    if !done(&tried) {
        let centre = (lo + hi) / 2.0;
        for k in 1..=SCAN_POINTS {
            for t in [centre - k as f64 * SCAN_STEP, centre + k as f64 * SCAN_STEP] {
                if !done(&tried) && (-1.0..=1.0).contains(&t) {
                    eval(t, &mut tried)?;
                }
            }
        }
    }
    // Closest count; among equals, the first tried.
    let &(threshold, layers) = tried
        .iter()
        .min_by_key(|&&(_, n)| n.abs_diff(target))
        .expect("at least the two end points were tried");
    Ok(ThresholdSearch { target_layers: target, threshold, layers, exact: layers == target, tried })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bisects_a_monotone_count() {
        // layers = 30 − round(20·(1 − T)/2): T = 0.1 gives 21.
        let s = search(21, |t| Ok(30 - ((1.0 - t) * 10.0).round() as usize)).unwrap();
        assert!(s.exact);
        assert_eq!(s.layers, 21);
        assert!(s.tried.len() < 15);
    }

    #[test]
    fn scans_when_the_count_is_not_monotone() {
        // The target count exists only in a narrow band the bisection steps over.
        let s = search(24, |t| {
            Ok(if (0.700..0.705).contains(&t) {
                24
            } else if t < 0.7 {
                23
            } else {
                25
            })
        })
        .unwrap();
        assert!(s.exact, "{s:?}");
        // An unreachable target: the closest count is kept and not claimed exact.
        let s = search(10, |t| Ok(if t < 0.0 { 12 } else { 20 })).unwrap();
        assert!(!s.exact);
        assert_eq!(s.layers, 12);
    }
}
