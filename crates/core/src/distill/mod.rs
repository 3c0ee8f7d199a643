//! Hierarchical distillation (METHODS.md §3.5): the pruned model (student) is trained toward the
//! original (teacher), logits and, through the merge record, the hidden state at the end of each
//! student layer's group. This is the `sp` schedule (once, after pruning) on the CPU in f32.

pub mod loss;
pub mod optim;
pub mod trainable;

use std::time::Instant;

use candle_core::backprop::GradStore;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::calib::{CalibrationConfig, CalibrationDefaults, CalibrationKind, CalibrationSet};
use crate::context::{RunContext, Stage};
use crate::error::{Error, Result};
use crate::model::decoder::TokenBatch;
use crate::Model;
use loss::{loss_and_grads, teacher_targets, LossParts, LossWeights};
use optim::{accumulate, clip_grad_norm, learning_rate, scale_grads, AdamW, AdamWParams};
use trainable::Student;
pub use trainable::Trainable;

/// A distillation run. Every field is set; [`Default`] gives the project's defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DistillOptions {
    /// Optimizer steps.
    pub steps: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps before the cosine decay.
    pub warmup_steps: usize,
    pub weight_decay: f64,
    /// Global gradient-norm clipping threshold.
    pub max_grad_norm: f64,
    pub loss: LossWeights,
    /// Training windows per micro-batch.
    pub batch_size: usize,
    /// Micro-batches whose gradients are summed into one step.
    pub accumulation: usize,
    pub trainable: Trainable,
    /// Seeds the order in which the windows are visited.
    pub seed: u64,
}

impl Default for DistillOptions {
    /// **(ours)** METHODS.md §3.5's α = β = τ = 1; AdamW at 1e-4 with 10% warm-up, clipping at
    /// 1.0, the usual values for healing a pruned model.
    fn default() -> Self {
        Self {
            steps: 100,
            lr: 1e-4,
            warmup_steps: 10,
            weight_decay: AdamWParams::default().weight_decay,
            max_grad_norm: 1.0,
            loss: LossWeights { alpha: 1.0, beta: 1.0, temperature: 1.0 },
            batch_size: 4,
            accumulation: 1,
            trainable: Trainable::All,
            seed: 0,
        }
    }
}

/// One optimizer step of the loss curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct StepLog {
    /// 1-based.
    pub step: usize,
    pub lr: f64,
    /// The mean over the step's micro-batches.
    #[serde(flatten)]
    #[cfg_attr(test, ts(flatten))]
    pub parts: LossParts,
    /// Before clipping.
    pub grad_norm: f64,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct DistillReport {
    pub steps: usize,
    /// Training tokens the student saw.
    pub tokens: usize,
    /// Trained parameters.
    pub parameters: usize,
    pub trainable: Trainable,
    pub seconds: f64,
    pub curve: Vec<StepLog>,
}

/// Trains `student` toward `teacher` on `windows` (token sequences of one length) and returns the
/// trained model. Neither input model is changed.
pub fn distill(
    student: &Model,
    teacher: &Model,
    windows: &[Vec<u32>],
    opts: &DistillOptions,
    ctx: &RunContext,
) -> Result<(Model, DistillReport)> {
    let ends = validate(student, teacher, windows, opts)?;
    let started = Instant::now();
    let trainee = Student::new(&student.lm, &student.origins, opts.trainable)?;
    let vars: Vec<_> = trainee.vars.iter().map(|(_, v)| v.clone()).collect();
    let parameters = vars.iter().map(|v| v.elem_count()).sum();
    let params = AdamWParams { weight_decay: opts.weight_decay, ..AdamWParams::default() };
    let mut optimizer = AdamW::new(vars.clone(), params)?;

    let mut order: Vec<usize> = (0..windows.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(opts.seed));
    let mut cursor = 0usize;
    let device = student.lm.device().clone();
    let check = || ctx.check_cancelled();
    let (mut curve, mut tokens) = (Vec::with_capacity(opts.steps), 0usize);
    ctx.report(Stage::Distill, 0, opts.steps as u64);
    for step in 0..opts.steps {
        let mut grads: Option<GradStore> = None;
        let mut sum = LossParts { loss: 0.0, kl: 0.0, mse: 0.0 };
        for _ in 0..opts.accumulation {
            let rows: Vec<&[u32]> = (0..opts.batch_size)
                .map(|j| windows[order[(cursor + j) % order.len()]].as_slice())
                .collect();
            cursor = (cursor + opts.batch_size) % order.len();
            let batch = TokenBatch::new(&rows, 0, &device)?;
            let targets = teacher_targets(&teacher.lm, &teacher.config, &batch, &ends, &check)?;
            let (parts, g) = loss_and_grads(
                &trainee.lm,
                &teacher.lm,
                &student.config,
                &batch,
                &targets,
                opts.loss,
                &check,
            )?;
            tokens += rows.iter().map(|r| r.len()).sum::<usize>();
            sum = sum + parts;
            accumulate(&mut grads, g, &vars)?;
        }
        let mut grads = grads.expect("at least one micro-batch");
        let k = opts.accumulation as f64;
        if opts.accumulation > 1 {
            scale_grads(&mut grads, &vars, 1.0 / k)?;
        }
        let grad_norm = clip_grad_norm(&mut grads, &vars, opts.max_grad_norm)?;
        let lr = learning_rate(step, opts.steps, opts.warmup_steps, opts.lr);
        optimizer.step(&grads, lr)?;
        curve.push(StepLog { step: step + 1, lr, parts: sum / k, grad_norm });
        ctx.report(Stage::Distill, step as u64 + 1, opts.steps as u64);
    }
    let mut out = student.clone();
    out.lm = trainee.finish()?;
    let report = DistillReport {
        steps: opts.steps,
        tokens,
        parameters,
        trainable: opts.trainable,
        seconds: started.elapsed().as_secs_f64(),
        curve,
    };
    Ok((out, report))
}

/// The checks a run needs before it starts; returns each student layer's last original layer.
fn validate(
    student: &Model,
    teacher: &Model,
    windows: &[Vec<u32>],
    opts: &DistillOptions,
) -> Result<Vec<usize>> {
    let (s, t) = (&student.config, &teacher.config);
    for (what, a, b) in [
        ("hidden size", s.hidden_size, t.hidden_size),
        ("vocabulary", s.vocab_size, t.vocab_size),
        ("head dimension", s.head_dim, t.head_dim),
    ] {
        if a != b {
            return Err(Error::config(
                "teacher",
                format!("its {what} is {b}, the student's {a}: give the model the student was pruned from"),
            ));
        }
    }
    let teacher_layers = teacher.lm.layers.len();
    let ends = student
        .origins
        .iter()
        .map(|o| {
            let last = *o.layers().last().expect("an origin names a layer");
            if last >= teacher_layers {
                return Err(Error::config(
                    "teacher",
                    format!(
                        "the student's merge record names layer {last}, but the teacher has \
                         {teacher_layers} layers"
                    ),
                ));
            }
            Ok(last)
        })
        .collect::<Result<Vec<_>>>()?;
    let positive = |field: &str, v: f64| {
        if v > 0.0 && v.is_finite() {
            Ok(())
        } else {
            Err(Error::config(field, format!("must be positive and finite, got {v}")))
        }
    };
    positive("lr", opts.lr)?;
    positive("temperature", opts.loss.temperature)?;
    positive("maxGradNorm", opts.max_grad_norm)?;
    for (field, n) in
        [("steps", opts.steps), ("batchSize", opts.batch_size), ("accumulation", opts.accumulation)]
    {
        if n == 0 {
            return Err(Error::config(field, "must be at least 1"));
        }
    }
    if opts.loss.alpha < 0.0 || opts.loss.beta < 0.0 || opts.loss.alpha + opts.loss.beta == 0.0 {
        return Err(Error::config("alpha", "α and β must be ≥ 0 and not both 0"));
    }
    let Some(first) = windows.first() else {
        return Err(Error::Data {
            message: "the training text gives no window to train on".into(),
        });
    };
    if first.len() < 2 || windows.iter().any(|w| w.len() != first.len()) {
        return Err(Error::config(
            "data",
            "training windows must share one length of at least 2 tokens: cut them `chunked` or \
             `sampled`",
        ));
    }
    Ok(ends)
}

/// The training text's defaults **(ours)**: 64 chunked windows of 256 tokens.
pub const DATA_DEFAULTS: CalibrationDefaults =
    CalibrationDefaults { kind: CalibrationKind::Chunked, seq_len: Some(256), n_samples: 64 };

/// A distillation request as the bindings send it (JSON): unset fields take [`DistillOptions`]'
/// defaults, the warm-up 10% of the steps.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DistillRequest {
    pub steps: Option<usize>,
    pub lr: Option<f64>,
    pub warmup_steps: Option<usize>,
    pub weight_decay: Option<f64>,
    pub max_grad_norm: Option<f64>,
    pub alpha: Option<f64>,
    pub beta: Option<f64>,
    pub temperature: Option<f64>,
    pub batch_size: Option<usize>,
    pub accumulation: Option<usize>,
    pub trainable: Option<Trainable>,
    pub seed: Option<u64>,
    /// The training text, cut into windows ([`DATA_DEFAULTS`]).
    #[serde(default)]
    pub data: CalibrationConfig,
}

impl DistillRequest {
    pub fn options(&self) -> DistillOptions {
        let d = DistillOptions::default();
        let steps = self.steps.unwrap_or(d.steps);
        DistillOptions {
            steps,
            lr: self.lr.unwrap_or(d.lr),
            warmup_steps: self.warmup_steps.unwrap_or(steps / 10),
            weight_decay: self.weight_decay.unwrap_or(d.weight_decay),
            max_grad_norm: self.max_grad_norm.unwrap_or(d.max_grad_norm),
            loss: LossWeights {
                alpha: self.alpha.unwrap_or(d.loss.alpha),
                beta: self.beta.unwrap_or(d.loss.beta),
                temperature: self.temperature.unwrap_or(d.loss.temperature),
            },
            batch_size: self.batch_size.unwrap_or(d.batch_size),
            accumulation: self.accumulation.unwrap_or(d.accumulation),
            trainable: self.trainable.unwrap_or(d.trainable),
            seed: self.seed.unwrap_or(d.seed),
        }
    }
}

/// [`distill`] on the windows of `req.data`; the result's provenance (`layerfold.json`) keeps the
/// student's own and adds `distill`: the teacher, the training text, the options and the report.
pub fn run(
    student: &Model,
    teacher: &Model,
    req: &DistillRequest,
    ctx: &RunContext,
) -> Result<Model> {
    let opts = req.options();
    let max_len = student.config.max_position_embeddings;
    let set = CalibrationSet::build(&student.tokenizer, max_len, &req.data, DATA_DEFAULTS)?;
    let (mut model, report) = distill(student, teacher, &set.samples, &opts, ctx)?;
    let mut provenance = student.provenance.clone().unwrap_or_else(|| serde_json::json!({}));
    provenance["distill"] = serde_json::json!({
        "teacher": teacher.path.display().to_string(),
        "data": set.summary,
        "warnings": set.warnings,
        "options": opts,
        "report": report,
    });
    model.provenance = Some(provenance);
    model.inputs.extend(teacher.inputs.iter().cloned());
    if let Some(file) = &req.data.file {
        model.inputs.push(file.clone());
    }
    Ok(model)
}
