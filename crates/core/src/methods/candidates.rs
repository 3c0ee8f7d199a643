//! Scoring candidate models without a full forward pass each (METHODS.md §3): a candidate that
//! differs from the original only from layer `k` on is run from `k`, on the original's cached
//! input of layer `k`.

use candle_core::Tensor;

use crate::calib::CalibrationSet;
use crate::context::{RunContext, Stage};
use crate::error::Result;
use crate::model::decoder::{
    CausalLm, ForwardContext, NoObserver, Observer, TokenBatch, TokenMask,
};
use crate::model::Model;
use crate::score::output_similarity::sample_similarities;

/// One calibration batch with the original model's states: the input of every layer
/// (`h_0…h_L`) and the post-norm output `ĥ`.
pub struct CachedBatch {
    pub batch: TokenBatch,
    pub ctx: ForwardContext,
    pub inputs: Vec<Tensor>,
    pub output: Tensor,
}

/// The original model's states on a calibration set, computed once.
pub struct StateCache {
    pub batches: Vec<CachedBatch>,
}

/// Keeps the input of every layer a pass runs (and its final state), feeding `inner` too.
pub(crate) struct Recorder<'a> {
    pub inputs: Vec<Tensor>,
    pub output: Option<Tensor>,
    pub inner: &'a mut dyn Observer,
}

impl Observer for Recorder<'_> {
    fn hidden_state(&mut self, i: usize, h: &Tensor, t: &TokenMask) -> Result<()> {
        self.inputs.push(h.clone());
        self.inner.hidden_state(i, h, t)
    }
    fn final_state(&mut self, h: &Tensor, t: &TokenMask) -> Result<()> {
        self.output = Some(h.clone());
        self.inner.final_state(h, t)
    }
    fn down_proj_input(&mut self, l: usize, a: &Tensor, t: &TokenMask) -> Result<()> {
        self.inner.down_proj_input(l, a, t)
    }
    fn o_proj_input(&mut self, l: usize, o: &Tensor, t: &TokenMask) -> Result<()> {
        self.inner.o_proj_input(l, o, t)
    }
}

impl StateCache {
    /// One pass of `model` over `calib` keeping every layer's input: `(L + 1) · tokens · d` values.
    pub fn build(model: &Model, calib: &CalibrationSet, ctx: &RunContext) -> Result<Self> {
        Self::build_with(model, calib, ctx, &mut NoObserver)
    }

    /// [`build`](Self::build), feeding `obs` during the same pass.
    pub fn build_with(
        model: &Model,
        calib: &CalibrationSet,
        ctx: &RunContext,
        obs: &mut dyn Observer,
    ) -> Result<Self> {
        let batches = calib.batches(super::batch_size_for(calib), model.lm.device())?;
        let total = batches.len() as u64;
        let check = || ctx.check_cancelled();
        let mut out = Vec::with_capacity(batches.len());
        ctx.report(Stage::Calibrate, 0, total);
        for (k, batch) in batches.into_iter().enumerate() {
            let fctx = model.lm.context(&model.config, &batch)?;
            let mut rec = Recorder { inputs: Vec::new(), output: None, inner: &mut *obs };
            model.lm.forward_from(0, model.lm.embed(&batch)?, &fctx, &mut rec, &check)?;
            let output = rec.output.expect("a forward pass reports its final state");
            out.push(CachedBatch { batch, ctx: fctx, inputs: rec.inputs, output });
            ctx.report(Stage::Calibrate, k as u64 + 1, total);
        }
        Ok(Self { batches: out })
    }
}

/// How candidates are run: from the first changed layer on cached inputs (the default), or from
/// the embeddings (kept for benchmarking the difference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evaluation {
    CachedPrefix,
    FullForward,
}

impl Evaluation {
    pub fn from_flag(prefix_cache: bool) -> Self {
        if prefix_cache {
            Self::CachedPrefix
        } else {
            Self::FullForward
        }
    }
}

/// `S(candidate)` (METHODS.md §2.3) against the cached original outputs. The candidate must equal
/// the original below layer `from`.
pub fn similarity(
    candidate: &CausalLm,
    from: usize,
    cache: &StateCache,
    eval: Evaluation,
    ctx: &RunContext,
) -> Result<f64> {
    let check = || ctx.check_cancelled();
    let mut sims = Vec::new();
    for cb in &cache.batches {
        let out = match eval {
            Evaluation::CachedPrefix => candidate.forward_from(
                from,
                cb.inputs[from].clone(),
                &cb.ctx,
                &mut NoObserver,
                &check,
            )?,
            Evaluation::FullForward => candidate.forward_from(
                0,
                candidate.embed(&cb.batch)?,
                &cb.ctx,
                &mut NoObserver,
                &check,
            )?,
        };
        sims.extend(sample_similarities(&cb.output, &out, &cb.ctx.tokens)?);
    }
    Ok(sims.iter().sum::<f64>() / sims.len().max(1) as f64)
}
