//! The distillation loss of METHODS.md §3.5 for one batch:
//! `α·τ²·KL(softmax(z_T/τ) ‖ softmax(z_S/τ))` (mean over positions)
//! `+ β·Σ_k ‖h^S_{k+1} − h^T_{e(k)+1}‖² / ‖h^T_{e(k)+1}‖²` (mean over positions), where `e(k)` is
//! the last original layer of student layer `k`'s group in the merge record (after a dropped
//! block, the block's last layer: see `distill::stands_for`).
//!
//! The logits never exist for the whole batch: the LM head runs chunk by chunk on a detached copy
//! of the student's final state, each chunk's KL gradient (kernels' `kl_div_grad`) is taken back
//! through the head at once, and the graph sees only `Σ ĥ_S ⊙ ∂loss/∂ĥ_S`, whose gradient is the
//! KL's. The teacher runs without a graph.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::eval::nll::LOGIT_ROWS;
use crate::model::config::Config;
use crate::model::decoder::{CausalLm, Mode, NoObserver, Observer, TokenBatch, TokenMask};

/// The weights of the two terms and the temperature.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LossWeights {
    pub alpha: f64,
    pub beta: f64,
    pub temperature: f64,
}

/// One batch's loss and its two terms, per position.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct LossParts {
    pub loss: f64,
    /// `τ²·KL`, mean over positions.
    pub kl: f64,
    /// The sum over student layers of the normalised hidden-state MSE, each a mean over positions.
    pub mse: f64,
}

impl std::ops::Add for LossParts {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self { loss: self.loss + o.loss, kl: self.kl + o.kl, mse: self.mse + o.mse }
    }
}

impl std::ops::Div<f64> for LossParts {
    type Output = Self;
    fn div(self, k: f64) -> Self {
        Self { loss: self.loss / k, kl: self.kl / k, mse: self.mse / k }
    }
}

/// Keeps the hidden states `h_i` of the wanted `i`.
struct States {
    wanted: Vec<usize>,
    got: Vec<Option<Tensor>>,
}

impl States {
    fn new(wanted: Vec<usize>) -> Self {
        let got = vec![None; wanted.len()];
        Self { wanted, got }
    }

    /// The kept states as `[n, d]` rows, in the order they were asked for.
    fn rows(self) -> Result<Vec<Tensor>> {
        self.states()?.iter().map(|h| Ok(h.flatten_to(1)?)).collect()
    }

    /// The kept states as the decoder gave them, in the order they were asked for.
    fn states(self) -> Result<Vec<Tensor>> {
        self.got
            .into_iter()
            .zip(self.wanted)
            .map(|(h, i)| h.ok_or_else(|| Error::Internal(format!("no hidden state h_{i}"))))
            .collect()
    }
}

impl Observer for States {
    fn hidden_state(&mut self, i: usize, h: &Tensor, _tokens: &TokenMask) -> Result<()> {
        for (k, &w) in self.wanted.iter().enumerate() {
            if w == i {
                self.got[k] = Some(h.clone());
            }
        }
        Ok(())
    }

    fn reads_layer_internals(&self) -> bool {
        false
    }
}

/// What the teacher gives for one batch: its final state and its states at the ends of the
/// student's groups, `[n, d]` each, without a graph.
pub struct TeacherTargets {
    final_state: Tensor,
    states: Vec<Tensor>,
}

/// Student layer `k`'s target is the teacher's `h_{ends[k]}`.
pub fn teacher_targets(
    teacher: &CausalLm,
    cfg: &Config,
    batch: &TokenBatch,
    ends: &[usize],
    check: &dyn Fn() -> Result<()>,
) -> Result<TeacherTargets> {
    let mut states = States::new(ends.to_vec());
    let h_hat = teacher.forward(cfg, batch, &mut states, check)?;
    Ok(TeacherTargets { final_state: h_hat.flatten_to(1)?.detach(), states: states.rows()? })
}

/// The loss of `batch` (no padding) and the gradient of every variable of `student`.
pub fn loss_and_grads(
    student: &CausalLm,
    teacher: &CausalLm,
    cfg: &Config,
    batch: &TokenBatch,
    targets: &TeacherTargets,
    w: LossWeights,
    check: &dyn Fn() -> Result<()>,
) -> Result<(LossParts, GradStore)> {
    if batch.lengths.iter().any(|&l| l != batch.seq_len()) {
        return Err(Error::Internal("distillation batches are not padded".into()));
    }
    let mut ctx = student.context(cfg, batch)?;
    ctx.mode = Mode::Train;
    let layers = student.layers.len();
    let mut states = States::new(if w.beta > 0.0 { (1..=layers).collect() } else { vec![] });
    let h_hat = student.forward_from(0, student.embed(batch)?, &ctx, &mut states, check)?;
    let h_hat = h_hat.flatten_to(1)?;
    let n = h_hat.dim(0)?;

    // KL, chunk by chunk over positions, its gradient taken back through the LM head.
    let detached = h_hat.detach();
    let head = student.lm_head_weight();
    let (mut kl_sum, mut grad_h) = (0f64, Vec::with_capacity(n.div_ceil(LOGIT_ROWS)));
    for start in (0..n).step_by(LOGIT_ROWS) {
        let len = LOGIT_ROWS.min(n - start);
        let z_s = student.logits(&detached.narrow(0, start, len)?)?;
        let z_t = teacher.logits(&targets.final_state.narrow(0, start, len)?)?;
        let rows = layerfold_kernels::kl_div(&z_s, &z_t, w.temperature)?;
        kl_sum += rows.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        let g = Tensor::full((w.alpha / n as f64) as f32, len, z_s.device())?;
        let g_z = layerfold_kernels::kl_div_grad(&z_s, &z_t, &g, w.temperature)?;
        grad_h.push(g_z.to_dtype(head.dtype())?.matmul(head)?);
    }
    let mut surrogate = (&h_hat * Tensor::cat(&grad_h, 0)?)?.sum_all()?;

    // The hidden-state terms, in the graph.
    let mut mse = 0f64;
    for (s, t) in states.rows()?.iter().zip(&targets.states) {
        let rows =
            layerfold_kernels::hidden_mse(&s.to_dtype(DType::F32)?, &t.to_dtype(DType::F32)?)?;
        let sum = rows.sum_all()?;
        mse += sum.to_dtype(DType::F64)?.to_scalar::<f64>()? / n as f64;
        surrogate = (surrogate + (sum * (w.beta / n as f64))?)?;
    }
    let kl = kl_sum / n as f64;
    let grads = surrogate.backward()?;
    Ok((LossParts { loss: w.alpha * kl + w.beta * mse, kl, mse }, grads))
}

/// A student layer that stands in for several original ones: layer `layer` should map the
/// teacher's `h_start` to its `h_end` (the input of the next student layer's group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct Span {
    pub layer: usize,
    pub start: usize,
    pub end: usize,
}

/// `mp`'s local loss of `batch`: the sum over `spans` of each layer's normalised MSE (mean over
/// positions) when it runs alone on the teacher's state, and the gradients. The layers are
/// independent, so one backward pass trains each on its own term.
pub fn local_loss_and_grads(
    student: &CausalLm,
    teacher: &CausalLm,
    cfg: &Config,
    batch: &TokenBatch,
    spans: &[Span],
    check: &dyn Fn() -> Result<()>,
) -> Result<(LossParts, GradStore)> {
    let wanted = spans.iter().flat_map(|s| [s.start, s.end]).collect();
    let mut states = States::new(wanted);
    teacher.forward(cfg, batch, &mut states, check)?;
    let states = states.states()?;
    let mut ctx = student.context(cfg, batch)?;
    ctx.mode = Mode::Train;
    let (mut total, mut mse) = (None::<Tensor>, 0f64);
    for (span, pair) in spans.iter().zip(states.chunks(2)) {
        check()?;
        let (input, target) = (pair[0].detach(), pair[1].detach().flatten_to(1)?);
        let out =
            student.layers[span.layer].get()?.forward(span.layer, &input, &ctx, &mut NoObserver)?;
        let rows = layerfold_kernels::hidden_mse(
            &out.flatten_to(1)?.to_dtype(DType::F32)?,
            &target.to_dtype(DType::F32)?,
        )?;
        let term = rows.mean_all()?;
        mse += term.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        total = Some(match total {
            Some(t) => (t + term)?,
            None => term,
        });
    }
    let total = total.ok_or_else(|| Error::Internal("mp's local phase has no layer".into()))?;
    Ok((LossParts { loss: mse, kl: 0.0, mse }, total.backward()?))
}
