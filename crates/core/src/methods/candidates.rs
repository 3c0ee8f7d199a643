//! Scoring candidate models without a full forward pass each (METHODS.md §3): a candidate that
//! differs from the original only from layer `k` on is run from `k`, on the original's cached
//! input of layer `k`.

use std::collections::HashMap;

use candle_core::Tensor;

use crate::calib::CalibrationSet;
use crate::context::{RunContext, Stage};
use crate::error::Result;
use crate::model::decoder::{
    CausalLm, ForwardContext, NoObserver, Observer, TokenBatch, TokenMask,
};
use crate::model::stream::WeightId;
use crate::model::Model;
use crate::score::output_similarity::sample_similarities;

/// One calibration batch with the original model's states: the input of every checkpoint layer
/// (see [`StateCache`]) and the post-norm output `ĥ`.
#[derive(Clone)]
pub struct CachedBatch {
    pub batch: TokenBatch,
    pub ctx: ForwardContext,
    /// `inputs[i]`: the input of layer `i` (`h_0…h_L`) where `i` is a checkpoint, else `None`.
    inputs: Vec<Option<Tensor>>,
    /// `None` once a pass that ran the last layer at the last tokens only refreshed the states
    /// (CoMe's re-scoring, which never reads it).
    output: Option<Tensor>,
}

impl CachedBatch {
    /// The checkpoint at or below `layer` and its input. A model that equals the cached one below
    /// `layer` runs from there; the layers between the checkpoint and `layer` are recomputed.
    pub fn start(&self, layer: usize) -> (usize, Tensor) {
        (0..=layer)
            .rev()
            .find_map(|i| self.inputs.get(i).cloned().flatten().map(|h| (i, h)))
            .expect("layer 0's input is always kept")
    }

    /// Drops the cached inputs above checkpoint `start`, which a pass from there recomputes: the
    /// old and the new states of the re-run layers are then never held together.
    pub(crate) fn forget_above(&mut self, start: usize) {
        self.inputs.truncate(start + 1);
    }

    /// Replaces the states from layer `from` on with those this batch's pass from there left
    /// in `rec` (no `ĥ` when the pass reported none).
    pub(crate) fn refresh(&mut self, from: usize, rec: &mut Recorder) {
        let Recorded { inputs, output } = rec.take(self.ctx.tokens.batch);
        self.inputs.truncate(from);
        self.inputs.extend(inputs);
        self.output = output;
    }

    /// `ĥ` of the cached model.
    pub fn output(&self) -> &Tensor {
        self.output.as_ref().expect("the cached ĥ is read only from caches of whole passes")
    }
}

/// The original model's states on a calibration set, computed once.
///
/// Keeping every layer's input costs `(L + 1) · tokens · d` values (37 GB for SmolLM2 in f32 on the
/// CoMe reference's 256 × 2048 tokens), so when that exceeds [`RunContext::state_cache_budget`]
/// only every `stride`-th
/// layer's input is kept and a run "from layer k" starts at the checkpoint below `k`: at most
/// `stride − 1` layers recomputed per candidate, with results identical to the full cache.
#[derive(Clone)]
pub struct StateCache {
    pub batches: Vec<CachedBatch>,
    pub stride: usize,
}

/// The identity of a model's weights: a merged or removed layer changes it.
fn weight_ids(model: &Model) -> Vec<WeightId> {
    let lm = &model.lm;
    let mut ids =
        vec![WeightId::Tensor(lm.embed_tokens.id()), WeightId::Tensor(lm.norm.weight.id())];
    ids.extend(lm.lm_head.as_ref().map(|h| WeightId::Tensor(h.id())));
    for layer in &lm.layers {
        ids.extend(layer.weight_ids());
    }
    ids
}

/// The calibration states of one model shared by the methods run on it (`compare`): the first
/// method that needs the model's states on a calibration set computes them, and every later one
/// that reads the same set reuses them, so the methods share one forward pass. Results are
/// identical to separate passes: the same tensors in the same order. States of other models (a
/// method's intermediate ones) are not kept.
pub struct SharedStates {
    model: Vec<WeightId>,
    entries: std::sync::Mutex<Vec<SharedEntry>>,
}

/// The states of one calibration set, by its samples.
type SharedEntry = (Vec<Vec<u32>>, std::sync::Arc<StateCache>);

impl SharedStates {
    pub fn new(model: &Model) -> Self {
        Self { model: weight_ids(model), entries: Default::default() }
    }

    pub(crate) fn shares(&self, model: &Model) -> bool {
        weight_ids(model) == self.model
    }

    fn get(&self, calib: &CalibrationSet) -> Option<std::sync::Arc<StateCache>> {
        let entries = self.entries.lock().ok()?;
        entries.iter().find(|(k, _)| *k == calib.samples).map(|(_, c)| c.clone())
    }

    fn put(&self, calib: &CalibrationSet, cache: &StateCache) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.push((calib.samples.clone(), std::sync::Arc::new(cache.clone())));
        }
    }

    /// The forward passes computed and kept for sharing.
    pub fn passes(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }
}

/// Keeps the input of every checkpoint layer a pass runs (and its final state), per batch,
/// feeding `inner`.
pub(crate) struct Recorder<'a> {
    pub stride: usize,
    runs: HashMap<usize, Recorded>,
    pub inner: &'a mut dyn Observer,
}

/// What a [`Recorder`] kept of one batch: the inputs of the layers from where its pass started
/// (`None` off the checkpoints) and `ĥ`.
#[derive(Default)]
pub(crate) struct Recorded {
    pub inputs: Vec<Option<Tensor>>,
    pub output: Option<Tensor>,
}

impl<'a> Recorder<'a> {
    pub fn new(stride: usize, inner: &'a mut dyn Observer) -> Self {
        Self { stride, runs: HashMap::new(), inner }
    }

    /// What was kept of batch `index` ([`TokenMask::batch`]).
    pub fn take(&mut self, index: usize) -> Recorded {
        self.runs.remove(&index).unwrap_or_default()
    }
}

impl Observer for Recorder<'_> {
    fn hidden_state(&mut self, i: usize, h: &Tensor, t: &TokenMask) -> Result<()> {
        let kept = i.is_multiple_of(self.stride).then(|| h.clone());
        self.runs.entry(t.batch).or_default().inputs.push(kept);
        self.inner.hidden_state(i, h, t)
    }
    fn final_state(&mut self, h: &Tensor, t: &TokenMask) -> Result<()> {
        self.runs.entry(t.batch).or_default().output = Some(h.clone());
        self.inner.final_state(h, t)
    }
    fn down_proj_input(&mut self, l: usize, a: &Tensor, t: &TokenMask) -> Result<()> {
        self.inner.down_proj_input(l, a, t)
    }
    fn o_proj_input(&mut self, l: usize, o: &Tensor, t: &TokenMask) -> Result<()> {
        self.inner.o_proj_input(l, o, t)
    }
}

/// The smallest stride whose checkpoints (`h_0, h_s, h_2s, …`) fit `budget`.
fn stride_for(layer_inputs: usize, bytes_per_input: usize, budget: usize) -> usize {
    (1..layer_inputs.max(1))
        .find(|s| layer_inputs.div_ceil(*s) * bytes_per_input <= budget)
        .unwrap_or(layer_inputs.max(1))
}

impl StateCache {
    /// One pass of `model` over `calib` keeping the input of every checkpoint layer.
    pub fn build(model: &Model, calib: &CalibrationSet, ctx: &RunContext) -> Result<Self> {
        Self::build_with(model, calib, ctx, &mut NoObserver)
    }

    /// [`build`](Self::build), feeding `obs` during the same pass. With the run's
    /// [`SharedStates`] (`RunContext::shared_states`), states already computed for this model and
    /// set are reused: `obs` is then fed by replaying them, or by a pass of its own when it reads
    /// inside the layers.
    pub fn build_with(
        model: &Model,
        calib: &CalibrationSet,
        ctx: &RunContext,
        obs: &mut dyn Observer,
    ) -> Result<Self> {
        let Some(shared) = ctx.shared_states().filter(|s| s.shares(model)) else {
            return Self::compute(model, calib, ctx, obs);
        };
        if let Some(hit) = shared.get(calib) {
            // `replay` runs only for observers of hidden states, and feeds nothing when only
            // checkpoints are cached.
            if obs.reads_layer_internals() || !hit.replay(obs)? {
                super::forward_pass(model, calib, obs, ctx)?;
            }
            return Ok((*hit).clone());
        }
        let cache = Self::compute(model, calib, ctx, obs)?;
        shared.put(calib, &cache);
        Ok(cache)
    }

    /// Feeds `obs` the cached hidden and final states, batch by batch, as a pass would; `false`
    /// (nothing fed) when only checkpoints are cached.
    fn replay(&self, obs: &mut dyn Observer) -> Result<bool> {
        if self.stride != 1 {
            return Ok(false);
        }
        for b in &self.batches {
            for (i, h) in b.inputs.iter().enumerate() {
                obs.hidden_state(
                    i,
                    h.as_ref().expect("stride 1 keeps every input"),
                    &b.ctx.tokens,
                )?;
            }
            obs.final_state(b.output(), &b.ctx.tokens)?;
        }
        Ok(true)
    }

    /// A pass of `model` over `calib` keeping the checkpoint inputs, feeding `obs`.
    fn compute(
        model: &Model,
        calib: &CalibrationSet,
        ctx: &RunContext,
        obs: &mut dyn Observer,
    ) -> Result<Self> {
        let batches = calib.batches(super::batch_size_for(calib), model.lm.device())?;
        let total = batches.len() as u64;
        let check = || ctx.check_cancelled();
        let tokens: usize = batches.iter().map(|b| b.ids.elem_count()).sum();
        let bytes_per_token = model.config.hidden_size * model.lm.dtype().size_in_bytes();
        let stride =
            stride_for(model.num_layers() + 1, tokens * bytes_per_token, ctx.state_cache_budget());
        ctx.report(Stage::Calibrate, 0, total);
        let ctxs = batches
            .iter()
            .map(|b| model.lm.context(&model.config, b))
            .collect::<Result<Vec<_>>>()?;
        let mut rec = Recorder::new(stride, &mut *obs);
        model.lm.forward_runs(
            0,
            ctxs.iter().zip(&batches).map(|(c, b)| Ok((c, model.lm.embed(b)?))),
            &mut rec,
            &mut |_, _| Ok(()),
            &check,
            &|p| {
                let (done, of) = p.fraction();
                ctx.report(Stage::Calibrate, done, of)
            },
        )?;
        let out = batches
            .into_iter()
            .zip(ctxs)
            .map(|(batch, fctx)| {
                let Recorded { inputs, output } = rec.take(fctx.tokens.batch);
                CachedBatch { batch, ctx: fctx, inputs, output }
            })
            .collect();
        Ok(Self { batches: out, stride })
    }

    /// The checkpoint at or below `layer` (the same for every batch) and each batch's context and
    /// input there: the runs of [`CausalLm::forward_runs`] from that checkpoint.
    pub fn starts(&self, layer: usize) -> (usize, Vec<(&ForwardContext, Tensor)>) {
        let mut start = 0;
        let runs = self
            .batches
            .iter()
            .map(|cb| {
                let h;
                (start, h) = cb.start(layer);
                (&cb.ctx, h)
            })
            .collect();
        (start, runs)
    }

    /// A note for the report when the cache keeps only checkpoints.
    pub fn note(&self) -> Option<String> {
        (self.stride > 1).then(|| {
            format!(
                "state cache: every layer's input would exceed the memory budget (LAYERFOLD_STATE_CACHE_BYTES or half the available memory); keeping the inputs of layers 0, {k}, {}, …, so candidate runs recompute up to {} layers",
                2 * self.stride,
                self.stride - 1,
                k = self.stride
            )
        })
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
    let mut compare = |k: usize, out: Tensor| -> Result<()> {
        let cb = &cache.batches[k];
        sims.extend(sample_similarities(cb.output(), &out, &cb.ctx.tokens)?);
        Ok(())
    };
    let none = &|_| {};
    match eval {
        Evaluation::CachedPrefix => {
            let (start, runs) = cache.starts(from);
            let runs = runs.into_iter().map(Ok);
            candidate.forward_runs(start, runs, &mut NoObserver, &mut compare, &check, none)?
        }
        Evaluation::FullForward => {
            let runs = cache.batches.iter().map(|cb| Ok((&cb.ctx, candidate.embed(&cb.batch)?)));
            candidate.forward_runs(0, runs, &mut NoObserver, &mut compare, &check, none)?
        }
    }
    Ok(sims.iter().sum::<f64>() / sims.len().max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::stride_for;

    #[test]
    fn stride_keeps_the_checkpoints_within_the_budget() {
        assert_eq!(stride_for(31, 10, 310), 1);
        assert_eq!(stride_for(31, 10, 309), 2); // 16 checkpoints
        assert_eq!(stride_for(31, 10, 160), 2);
        assert_eq!(stride_for(31, 10, 159), 3); // 11 checkpoints
        assert_eq!(stride_for(31, 10, 0), 31); // h_0 alone: every run starts at the embeddings
    }
}
