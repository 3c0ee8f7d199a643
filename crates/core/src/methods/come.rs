//! CoMe (`come`; METHODS.md §3.4): progressive concatenation-based merging of adjacent layers by
//! channel sensitivity. Each step scores the current model on the calibration set (CoMe's BI,
//! channel sensitivity, last-token states), picks the adjacent pair whose block changes the state
//! least (`D(a, 2)`, CoMe's clamped sum), and merges it by [`concat_layers`] with budgets from the
//! pair's BI ratio. The model's `origins` record the merges as a tree.
//!
//! After a merge at `a` the layers below `a` and their inputs are unchanged, so the next scoring
//! pass runs only from `a` on the cached input of layer `a`, and the statistics of the layers below
//! are kept (`prefixCache: false` re-runs the whole model each step). Of the last layer that pass
//! needs only the last-token output (the skip score's `ĥ[T]`), so it runs that layer for one query
//! per sequence; its BI and channel statistics are computed only if its pair is chosen.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::Tensor;

use serde::{Deserialize, Serialize};

use crate::calib::{CalibrationDefaults, CalibrationKind, CalibrationSet};
use crate::context::{RunContext, Stage};
use crate::error::{Error, Result};
use crate::eval::nll::nll_sum;
use crate::methods::candidates::{Recorder, StateCache};
use crate::methods::concat::{concat_layers, plan, ConcatMerge, GqaLayout, MergePlan};
use crate::methods::{candidate, required, Goal, MethodOutput, Report, Step};
use crate::model::decoder::{NoObserver, Observer, Observers, TokenMask};
use crate::model::stream::{LayerSlot, TensorShape};
use crate::model::Model;
use crate::score::angular::LastTokenStates;
use crate::score::bi::{BlockInfluence, LastState};
use crate::score::channel_sensitivity::ChannelActivity;

/// The reference: 256 rows of WikiText-2 train, chunked at 2048.
pub const CALIBRATION: Option<CalibrationDefaults> =
    Some(CalibrationDefaults { kind: CalibrationKind::Chunked, seq_len: None, n_samples: 256 });

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Never merge a layer that is already a merge (as published). Default true.
    pub no_repeat: bool,
    /// `grouped` (GQA-correct, default) or `tiled` (the released code's layout).
    pub gqa_layout: GqaLayout,
    /// Re-score only from the merged layer on cached inputs. Default true.
    pub prefix_cache: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self { no_repeat: true, gqa_layout: GqaLayout::default(), prefix_cache: true }
    }
}

/// How a merge's ratio `r_a` is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RatioChoice {
    /// `r_a = BI_a / (BI_a + BI_b)` (CoMe).
    BlockInfluence,
    /// The `r ∈ {0, 1/g, …, 1}` with the lowest calibration loss (CoMe-P).
    Search { grid: usize },
}

/// The statistics of a scoring pass: what the next merge decision needs.
struct Scores {
    bi: BlockInfluence,
    activity: ChannelActivity,
    last: LastTokenStates,
    /// Whether `bi` and `activity` hold the last layer's (a pass that ran it at the last tokens
    /// only leaves them out).
    last_layer_stats: bool,
}

impl Scores {
    fn new(n_layers: usize) -> Self {
        Self {
            bi: BlockInfluence::new(n_layers, LastState::PostNorm),
            activity: ChannelActivity::new(n_layers),
            last: LastTokenStates::new(n_layers),
            last_layer_stats: true,
        }
    }

    fn splice(&mut self, from: usize, fresh: Scores) {
        self.bi.splice(from, fresh.bi);
        self.activity.splice(from, fresh.activity);
        self.last.splice(from, fresh.last);
        self.last_layer_stats = fresh.last_layer_stats;
    }
}

/// How a re-scoring pass runs the last layer.
#[derive(Clone, Copy, PartialEq)]
enum LastLayer {
    /// On every token, with its statistics, refreshing the cached `ĥ`.
    Whole,
    /// At each sequence's last token only: the skip scores, no BI or channel statistics of the
    /// last layer, no cached `ĥ`.
    LastToken,
}

/// Feeds `inner` a pass of every layer but the last except its final state (the final norm of
/// `h_{L−1}`, not `ĥ`), and keeps each batch's `h_{L−1}`.
struct AllButLast<'a> {
    inner: &'a mut dyn Observer,
    last: usize,
    inputs: HashMap<usize, Tensor>,
}

impl Observer for AllButLast<'_> {
    fn hidden_state(&mut self, i: usize, h: &Tensor, t: &TokenMask) -> crate::error::Result<()> {
        if i == self.last {
            self.inputs.insert(t.batch, h.clone());
        }
        self.inner.hidden_state(i, h, t)
    }
    fn down_proj_input(&mut self, l: usize, a: &Tensor, t: &TokenMask) -> crate::error::Result<()> {
        self.inner.down_proj_input(l, a, t)
    }
    fn o_proj_input(&mut self, l: usize, o: &Tensor, t: &TokenMask) -> crate::error::Result<()> {
        self.inner.o_proj_input(l, o, t)
    }
}

/// Runs the current model from the cache's checkpoint at or below layer `from` on every cached
/// batch, refreshing the cached states from there on. Returns that checkpoint and the statistics
/// of the re-run layers (those below `from` recomputed unchanged).
fn rescore_from(
    model: &Model,
    cache: &mut StateCache,
    from: usize,
    last_layer: LastLayer,
    ctx: &RunContext,
) -> Result<(usize, Scores)> {
    let n = model.num_layers();
    let mut fresh = Scores::new(n);
    let check = || ctx.check_cancelled();
    let start = cache.batches[0].start(from).0;
    for cb in &mut cache.batches {
        cb.forget_above(start);
    }
    let (start, runs) = cache.starts(from);
    let progress = |p: crate::model::decoder::Progress| {
        let (done, of) = p.fraction();
        ctx.report(Stage::Score, done, of)
    };
    let mut obs = Observers(vec![&mut fresh.bi, &mut fresh.activity, &mut fresh.last]);
    let mut rec = Recorder::new(cache.stride, &mut obs);
    let runs = runs.into_iter().map(Ok);
    let last_inputs = match last_layer {
        LastLayer::Whole => {
            model.lm.forward_runs(start, runs, &mut rec, &mut |_, _| Ok(()), &check, &progress)?;
            None
        }
        LastLayer::LastToken => {
            let mut body = model.lm.clone();
            body.layers.truncate(n - 1);
            let mut all_but_last =
                AllButLast { inner: &mut rec, last: n - 1, inputs: HashMap::new() };
            body.forward_runs(
                start,
                runs,
                &mut all_but_last,
                &mut |_, _| Ok(()),
                &check,
                &progress,
            )?;
            Some(all_but_last.inputs)
        }
    };
    for cb in &mut cache.batches {
        cb.refresh(start, &mut rec);
    }
    if let Some(mut inputs) = last_inputs {
        let layer = model.lm.layers[n - 1].get()?;
        // Batch by batch in pass order, as the other states were observed.
        for cb in &cache.batches {
            let h = inputs
                .remove(&cb.ctx.tokens.batch)
                .expect("the pass reported every batch's h_{L-1}");
            let out = layer.forward_last_token(&h, &cb.ctx)?;
            let h_hat = cb.ctx.mode.rms_norm(&model.lm.norm, &out)?;
            fresh.last.final_state(&h_hat, &cb.ctx.tokens.last_tokens())?;
        }
        fresh.last_layer_stats = false;
    }
    Ok((start, fresh))
}

/// Mean calibration NLL of `model` (whose layers below `from` equal the cached model's).
fn calibration_loss(
    model: &Model,
    cache: &StateCache,
    from: usize,
    ctx: &RunContext,
) -> Result<f64> {
    let check = || ctx.check_cancelled();
    let (mut sum, mut count) = (0f64, 0usize);
    let (start, runs) = cache.starts(from);
    let mut add = |k: usize, h: candle_core::Tensor| -> Result<()> {
        let (s, c) = nll_sum(&model.lm, &h, &cache.batches[k].batch)?;
        sum += s;
        count += c;
        Ok(())
    };
    model.lm.forward_runs(
        start,
        runs.into_iter().map(Ok),
        &mut NoObserver,
        &mut add,
        &check,
        &|_| {},
    )?;
    Ok(sum / count.max(1) as f64)
}

/// The progressive loop shared by `come` and `come-p`.
pub(crate) fn progressive(
    model: &Model,
    calib: &CalibrationSet,
    cfg: &Config,
    choice: RatioChoice,
    remove: usize,
    ctx: &RunContext,
) -> Result<MethodOutput> {
    let target = model.num_layers() - remove;
    let mut m = model.clone();
    let mut report = Report::new("skip score D(a, 2): CoMe's angular distance of h_a and h_{a+2} (last token, clamped, summed)");
    let mut scores = Scores::new(m.num_layers());
    // The first pass: every layer, caching the checkpoint layers' inputs.
    let started = Instant::now();
    let mut cache = StateCache::build_with(
        model,
        calib,
        ctx,
        &mut Observers(vec![&mut scores.bi, &mut scores.activity, &mut scores.last]),
    )?;
    report.warnings.extend(cache.note());
    report.time("calibrate", started);
    let mut step = 0;
    while m.num_layers() > target {
        ctx.check_cancelled()?;
        let started = Instant::now();
        let n = m.num_layers();
        let mut skip: Vec<f64> = (0..n - 1).map(|a| scores.last.come_distance(a, 2)).collect();
        let blocked = |a: usize| m.origins[a].is_merged() || m.origins[a + 1].is_merged();
        if cfg.no_repeat {
            if (0..n - 1).all(blocked) {
                report.warnings.push(format!(
                    "step {}: every adjacent pair holds a merged layer; noRepeat lifted for the remaining merges",
                    step + 1
                ));
            } else {
                for (a, s) in skip.iter_mut().enumerate() {
                    if blocked(a) {
                        *s = f64::INFINITY;
                    }
                }
            }
        }
        let a = (0..n - 1)
            .min_by(|&x, &y| skip[x].total_cmp(&skip[y]))
            .expect("at least two layers remain");
        if a + 1 == n - 1 && !scores.last_layer_stats {
            // The pair holds the last layer, whose statistics the last re-scoring left out.
            let (start, fresh) = rescore_from(&m, &mut cache, n - 1, LastLayer::Whole, ctx)?;
            scores.splice(start, fresh);
        }
        let bi = scores.bi.come_sum();
        let (bi_a, bi_b) = (bi[a], bi[a + 1]);
        let ratio = if bi_a + bi_b > 0.0 { bi_a / (bi_a + bi_b) } else { 0.5 };
        // The two weights the sensitivities read, not the whole layers (a streamed model reads
        // only these from its checkpoint).
        let (slot_a, slot_b) = (&m.lm.layers[a], &m.lm.layers[a + 1]);
        let sensitivity = |i: usize, slot: &LayerSlot| {
            let (down, o) =
                (slot.tensor("mlp.down_proj.weight")?, slot.tensor("self_attn.o_proj.weight")?);
            scores.activity.sensitivity_from(i, &down, &o, slot.head_shape().kv_heads)
        };
        let (sa, sb) = (sensitivity(a, slot_a)?, sensitivity(a + 1, slot_b)?);
        let merge_for = |r: f64| -> Result<(MergePlan, ConcatMerge)> {
            let p = plan(r, &sa.ffn, &sb.ffn, &sa.kv_groups, &sb.kv_groups);
            let merge =
                ConcatMerge::new(slot_a.head_shape(), slot_b.head_shape(), &p, cfg.gqa_layout)?;
            Ok((p, merge))
        };
        report.time("score", started);
        let started = Instant::now();
        let mut losses = Vec::new();
        let (chosen_plan, merge) = match choice {
            RatioChoice::BlockInfluence => merge_for(ratio)?,
            RatioChoice::Search { grid } => {
                // Read once for every ratio tried (a streamed model builds a layer on each read).
                let (layer_a, layer_b) = (slot_a.get()?, slot_b.get()?);
                let mut best: Option<(f64, MergePlan, ConcatMerge)> = None;
                for k in 0..=grid {
                    let r = k as f64 / grid as f64;
                    let (p, merge) = merge_for(r)?;
                    let layer = concat_layers(&layer_a, &layer_b, &p, cfg.gqa_layout)?;
                    // A trial model: its merged layer stays in memory, whatever the model.
                    let mut trial = m.clone();
                    trial.lm.layers.splice(a..=a + 1, [layer.into()]);
                    let loss = calibration_loss(&trial, &cache, a, ctx)?;
                    losses.push((r, loss));
                    ctx.report(Stage::Score, k as u64 + 1, grid as u64 + 1);
                    // A non-finite loss (a ratio that breaks the model) is recorded, never kept.
                    if loss.is_finite() && best.as_ref().is_none_or(|(l, _, _)| loss < *l) {
                        best = Some((loss, p, merge));
                    }
                }
                let (_, p, merge) = best.ok_or_else(|| {
                    Error::Internal(format!(
                        "CoMe-P: every ratio gave a non-finite calibration loss at layers {a}, {}",
                        a + 1
                    ))
                })?;
                (p, merge)
            }
        };
        let originals = (m.origins[a].layers(), m.origins[a + 1].layers());
        report.steps.push(Step {
            candidates: (0..n - 1).map(|x| candidate(&m, &[x, x + 1], skip[x], x == a)).collect(),
            decision: format!(
                "merge layers {a} and {} (original {:?} + {:?}): BI {bi_a:.4} / {bi_b:.4}, r_a = {:.4}{}; FFN keeps {} + {} channels, KV groups {:?} + {:?}",
                a + 1,
                originals.0,
                originals.1,
                chosen_plan.ratio,
                if losses.is_empty() { String::new() } else { format!(" (lowest calibration NLL of {} ratios)", losses.len()) },
                chosen_plan.ffn_a.len(),
                chosen_plan.ffn_b.len(),
                chosen_plan.kv_a,
                chosen_plan.kv_b,
            ),
            details: Some(serde_json::json!({
                "pair": [a, a + 1],
                "blockInfluence": [bi_a, bi_b],
                "biRatio": ratio,
                "ratio": chosen_plan.ratio,
                "ffnKept": [chosen_plan.ffn_a.len(), chosen_plan.ffn_b.len()],
                "kvGroupsKept": [chosen_plan.kv_a, chosen_plan.kv_b],
                "ratioLosses": losses,
            })),
        });
        // Tensor by tensor from the two layers' same-named tensors: a streamed model writes each
        // to the merged layer's file as it is made.
        let (slot_a, slot_b) = (m.lm.layers[a].clone(), m.lm.layers[a + 1].clone());
        let shapes = slot_a
            .shapes()
            .into_iter()
            .map(|t| Ok(TensorShape { shape: merge.shape(&t.name, &t.shape)?, name: t.name }))
            .collect::<Result<Vec<_>>>()?;
        let make = |name: &str| merge.tensor(name, &slot_a.tensor(name)?, &slot_b.tensor(name)?);
        m.replace_layers_made(a, a + 1, shapes, &make)?;
        // CoMe-P's ratio trials are scoring passes, but they are part of building this merge.
        report.time("merge", started);
        step += 1;
        ctx.report(Stage::Merge, step as u64, remove as u64);
        let started = Instant::now();
        if m.num_layers() > target {
            if cfg.prefix_cache {
                let (start, fresh) = rescore_from(&m, &mut cache, a, LastLayer::LastToken, ctx)?;
                scores.splice(start, fresh);
            } else {
                scores = Scores::new(m.num_layers());
                cache = StateCache::build_with(
                    &m,
                    calib,
                    ctx,
                    &mut Observers(vec![&mut scores.bi, &mut scores.activity, &mut scores.last]),
                )?;
            }
        }
        report.time("score", started);
    }
    Ok(MethodOutput { model: m, report })
}

pub fn run(
    model: &Model,
    calib: Option<&CalibrationSet>,
    cfg: &Config,
    goal: Goal,
    ctx: &RunContext,
) -> Result<MethodOutput> {
    let Goal::Remove(k) = goal else {
        unreachable!("come takes no threshold (checked by the registry)")
    };
    progressive(model, required(calib)?, cfg, RatioChoice::BlockInfluence, k, ctx)
}
