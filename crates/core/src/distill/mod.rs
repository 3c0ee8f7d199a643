//! Hierarchical distillation (METHODS.md §3.5): the pruned model (student) is trained toward the
//! original (teacher), logits and, through the merge record, the hidden state at the end of each
//! student layer's group. This is the `sp` schedule (once, after pruning) on the CPU in f32.

pub mod checkpoint;
pub mod loss;
pub mod optim;
pub mod trainable;

use std::path::PathBuf;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::Var;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::calib::text::{join_documents, TextSource};
use crate::calib::{CalibrationConfig, CalibrationDefaults, CalibrationKind, CalibrationSet};
use crate::context::{RunContext, Stage, TrainingProgress};
use crate::error::{Error, Result};
use crate::model::decoder::TokenBatch;
use crate::model::origin::Origin;
use crate::Model;
use checkpoint::{Checkpointing, Position, RunIdentity};
use loss::{local_loss_and_grads, loss_and_grads, teacher_targets, LossParts, LossWeights, Span};
use optim::{accumulate, clip_grad_norm, learning_rate, scale_grads, AdamW, AdamWParams};
use trainable::Student;
pub use trainable::{LoraOptions, Trainable};

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
    pub schedule: Schedule,
    /// `mp`: how many of `steps` are local (each layer that stands for several original layers
    /// trained alone); the rest are global.
    pub local_steps: usize,
    /// The adapters' shape when `trainable` is `lora`.
    pub lora: LoraOptions,
    /// Seeds the order in which the windows are visited and the adapters' initial values.
    pub seed: u64,
    /// Where to save resumable state; not part of what the run computes.
    #[serde(skip)]
    pub checkpoint: Option<Checkpointing>,
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
            schedule: Schedule::Sp,
            local_steps: 0,
            lora: LoraOptions::default(),
            seed: 0,
            checkpoint: None,
        }
    }
}

/// When the student trains (METHODS.md §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub enum Schedule {
    /// Once, on the whole loss.
    Sp,
    /// First each layer that stands for several original layers alone, mapping the teacher's
    /// state at the start of its span to the state at its end; then a global phase. The local
    /// phase's inputs are the teacher's states, so each layer's training does not depend on the
    /// others' and runs after the last merge: the same as after each merge for every layer of
    /// the final model **(ours)**. A layer before a dropped block (drop-bi, SLEB) stands for the
    /// block too (`stands_for`).
    Mp,
}

/// One optimizer step of the loss curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct StepLog {
    /// 1-based.
    pub step: usize,
    /// `mp`'s local steps; their `mse` is the local loss and `kl` is 0.
    pub local: bool,
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
    pub schedule: Schedule,
    /// `mp`: the layers of the local phase and the original layers they stand for.
    pub spans: Vec<Span>,
    /// This process's seconds (a resumed run counts from its resumption).
    pub seconds: f64,
    /// Training tokens per second in this process.
    pub tokens_per_second: f64,
    /// The step a resumed run continued from.
    pub resumed_from: Option<usize>,
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
    let ranges = validate(student, teacher, windows, opts)?;
    let ends: Vec<usize> = ranges.iter().map(|s| s.end).collect();
    let started = Instant::now();
    let trainee =
        Student::new(&student.lm, &student.origins, opts.trainable, opts.lora, opts.seed)?;
    if trainee.vars.is_empty() {
        return Err(Error::config(
            "trainable",
            "the student has no merged layer to train: train `all` or `lora`",
        ));
    }
    let parameters = trainee.vars.iter().map(|(_, v)| v.elem_count()).sum();
    let spans = match opts.schedule {
        Schedule::Sp => vec![],
        Schedule::Mp => local_spans(&ranges, &trainee),
    };
    let local_steps = if spans.is_empty() { 0 } else { opts.local_steps };
    // The variables one phase updates, each phase with a fresh optimizer: a variable that joins
    // at the global phase would otherwise get a bias correction for steps it did not take.
    let phase_vars = |local: bool| -> (Vec<String>, Vec<Var>) {
        trainee
            .vars
            .iter()
            .filter(|(n, _)| !local || spans.iter().any(|s| in_layer(n, s.layer)))
            .map(|(n, v)| (n.clone(), v.clone()))
            .unzip()
    };
    let params = AdamWParams { weight_decay: opts.weight_decay, ..AdamWParams::default() };
    let (mut names, mut vars) = phase_vars(local_steps > 0);
    let mut optimizer = AdamW::new(vars.clone(), params)?;

    // The student is named by its path, record, dtype and the digest of its trained tensors as
    // they start (a folder pruned again by other options has the same path and record).
    let run = match &opts.checkpoint {
        Some(_) => Some(RunIdentity::new(
            serde_json::to_value(opts).expect("options serialise"),
            serde_json::json!({
                "path": student.path,
                "record": student.origins,
                "dtype": format!("{:?}", student.lm.dtype()),
                "weights": checkpoint::digest(&trainee.vars)?,
            }),
            serde_json::json!({ "path": teacher.path, "layers": teacher.lm.layers.len() }),
            windows,
        )),
        None => None,
    };
    let mut at = Position { step: 0, cursor: 0, tokens: 0, curve: Vec::with_capacity(opts.steps) };
    let (mut resumed_from, mut resumed_tokens) = (None, 0);
    if let (Some(c), Some(run)) = (&opts.checkpoint, &run) {
        let mut inputs = student.inputs.clone();
        inputs.extend(teacher.inputs.iter().cloned());
        if let Some(saved) = c.open(&inputs, run)? {
            // A checkpoint at the phase boundary holds the local optimizer; the loop switches.
            let global = saved.position.step > local_steps;
            if global && local_steps > 0 {
                (names, vars) = phase_vars(false);
                optimizer = AdamW::new(vars.clone(), params)?;
            }
            let phase_start = if global { local_steps } else { 0 };
            saved.restore(&names, &mut optimizer, saved.position.step - phase_start)?;
            resumed_from = Some(saved.position.step);
            resumed_tokens = saved.position.tokens;
            at = saved.position;
        }
    }

    let mut order: Vec<usize> = (0..windows.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(opts.seed));
    let device = student.lm.device().clone();
    let check = || ctx.check_cancelled();
    ctx.report(Stage::Distill, at.step as u64, opts.steps as u64);
    while at.step < opts.steps {
        let local = at.step < local_steps;
        if local_steps > 0 && at.step == local_steps {
            (names, vars) = phase_vars(false);
            optimizer = AdamW::new(vars.clone(), params)?;
        }
        let mut grads: Option<GradStore> = None;
        let mut sum = LossParts { loss: 0.0, kl: 0.0, mse: 0.0 };
        for _ in 0..opts.accumulation {
            let rows: Vec<&[u32]> = (0..opts.batch_size)
                .map(|j| windows[order[(at.cursor + j) % order.len()]].as_slice())
                .collect();
            at.cursor = (at.cursor + opts.batch_size) % order.len();
            let batch = TokenBatch::new(&rows, 0, &device)?;
            let (parts, g) = if local {
                local_loss_and_grads(
                    &trainee.lm,
                    &teacher.lm,
                    &teacher.config,
                    &batch,
                    &spans,
                    &check,
                )?
            } else {
                let targets = teacher_targets(&teacher.lm, &teacher.config, &batch, &ends, &check)?;
                loss_and_grads(
                    &trainee.lm,
                    &teacher.lm,
                    &student.config,
                    &batch,
                    &targets,
                    opts.loss,
                    &check,
                )?
            };
            at.tokens += rows.iter().map(|r| r.len()).sum::<usize>();
            sum = sum + parts;
            accumulate(&mut grads, g, &vars)?;
        }
        let mut grads = grads.expect("at least one micro-batch");
        let k = opts.accumulation as f64;
        if opts.accumulation > 1 {
            scale_grads(&mut grads, &vars, 1.0 / k)?;
        }
        let grad_norm = if local {
            // The local problems are separate: each layer is clipped by its own norm.
            let mut sq = 0f64;
            for span in &spans {
                let own: Vec<Var> = names
                    .iter()
                    .zip(&vars)
                    .filter(|(n, _)| in_layer(n, span.layer))
                    .map(|(_, v)| v.clone())
                    .collect();
                sq += clip_grad_norm(&mut grads, &own, opts.max_grad_norm)?.powi(2);
            }
            sq.sqrt()
        } else {
            clip_grad_norm(&mut grads, &vars, opts.max_grad_norm)?
        };
        let (phase_step, phase_len) = if local {
            (at.step, local_steps)
        } else {
            (at.step - local_steps, opts.steps - local_steps)
        };
        // Each phase warms up over its share of the warm-up steps.
        let warmup = (opts.warmup_steps * phase_len).div_ceil(opts.steps);
        let lr = learning_rate(phase_step, phase_len, warmup, opts.lr);
        optimizer.step(&grads, lr)?;
        at.step += 1;
        at.curve.push(StepLog { step: at.step, local, lr, parts: sum / k, grad_norm });
        if let (Some(c), Some(run)) = (&opts.checkpoint, &run) {
            if at.step.is_multiple_of(c.every) && at.step < opts.steps {
                c.save(run, &at, &names, &optimizer)?;
            }
        }
        let parts = sum / k;
        let training = TrainingProgress {
            loss: parts.loss,
            kl: parts.kl,
            mse: parts.mse,
            tokens: at.tokens as u64,
        };
        ctx.report_training(at.step as u64, opts.steps as u64, training);
    }
    let mut out = student.clone();
    out.lm = trainee.finish()?;
    let seconds = started.elapsed().as_secs_f64();
    let report = DistillReport {
        steps: opts.steps,
        tokens: at.tokens,
        parameters,
        trainable: opts.trainable,
        schedule: opts.schedule,
        spans,
        seconds,
        tokens_per_second: (at.tokens - resumed_tokens) as f64 / seconds.max(1e-9),
        resumed_from,
        curve: at.curve,
    };
    Ok((out, report))
}

/// `mp`'s local problems: each student layer that has variables and stands for more than one
/// original layer.
fn local_spans(ranges: &[Span], trainee: &Student) -> Vec<Span> {
    ranges
        .iter()
        .filter(|s| s.end - s.start > 1 && trainee.vars.iter().any(|(n, _)| in_layer(n, s.layer)))
        .copied()
        .collect()
}

/// Whether the HF name `name` belongs to layer `k`.
fn in_layer(name: &str, k: usize) -> bool {
    name.strip_prefix("model.layers.")
        .and_then(|rest| rest.split('.').next())
        .is_some_and(|i| i == k.to_string())
}

/// The options' own checks, which need no model: callers that prune first run them before.
pub fn check(opts: &DistillOptions) -> Result<()> {
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
    positive("loraAlpha", opts.lora.alpha)?;
    if opts.warmup_steps > opts.steps {
        return Err(Error::config(
            "warmupSteps",
            format!("must be at most steps ({})", opts.steps),
        ));
    }
    if opts.local_steps > opts.steps || (opts.schedule == Schedule::Sp && opts.local_steps > 0) {
        return Err(Error::config(
            "localSteps",
            format!("must be at most steps ({}) and is for the mp schedule only", opts.steps),
        ));
    }
    let every = opts.checkpoint.as_ref().map_or(1, |c| c.every);
    for (field, n) in [
        ("steps", opts.steps),
        ("batchSize", opts.batch_size),
        ("accumulation", opts.accumulation),
        ("loraRank", opts.lora.rank),
        ("checkpointEvery", every),
    ] {
        if n == 0 {
            return Err(Error::config(field, "must be at least 1"));
        }
    }
    if opts.loss.alpha < 0.0 || opts.loss.beta < 0.0 || opts.loss.alpha + opts.loss.beta == 0.0 {
        return Err(Error::config("alpha", "α and β must be ≥ 0 and not both 0"));
    }
    Ok(())
}

/// The checks a run needs before it starts; returns what each student layer stands for.
fn validate(
    student: &Model,
    teacher: &Model,
    windows: &[Vec<u32>],
    opts: &DistillOptions,
) -> Result<Vec<Span>> {
    let (s, t) = (&student.config, &teacher.config);
    if s.architecture != t.architecture {
        return Err(Error::config(
            "teacher",
            format!(
                "it is a {:?} model, the student a {:?} one: give the model the student was pruned from",
                t.architecture, s.architecture
            ),
        ));
    }
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
    if let Some(last) =
        student.origins.iter().flat_map(|o| o.layers()).find(|&l| l >= teacher_layers)
    {
        return Err(Error::config(
            "teacher",
            format!(
                "the student's merge record names layer {last}, but the teacher has \
                 {teacher_layers} layers"
            ),
        ));
    }
    check(opts)?;
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
    Ok(stands_for(&student.origins, teacher_layers))
}

/// The teacher states each student layer maps between: layer `k` takes `h_start` (the embeddings
/// for the first layer) and should give `h_end`, the input of the next layer's group (`ĥ`'s
/// input, `h_L`, for the last). For a merge this is its group, `h_a → h_{b+1}` (METHODS.md
/// §3.5's `e(k) + 1`); a layer before a dropped block (drop-bi, SLEB) stands for the block too
/// **(ours)**, so that what each layer is trained to give is what the next one was trained on.
fn stands_for(origins: &[Origin], teacher_layers: usize) -> Vec<Span> {
    let firsts: Vec<usize> = origins.iter().map(|o| o.layers()[0]).collect();
    (0..firsts.len())
        .map(|k| Span {
            layer: k,
            start: if k == 0 { 0 } else { firsts[k] },
            end: firsts.get(k + 1).copied().unwrap_or(teacher_layers),
        })
        .collect()
}

/// The training text's defaults **(ours)**: 64 chunked windows of 256 tokens.
pub const DATA_DEFAULTS: CalibrationDefaults =
    CalibrationDefaults { kind: CalibrationKind::Chunked, seq_len: Some(256), n_samples: 64 };

/// A distillation request as the bindings send it (JSON): unset fields take [`DistillOptions`]'
/// defaults, the warm-up 10% of the steps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    pub schedule: Option<Schedule>,
    pub local_steps: Option<usize>,
    pub lora_rank: Option<usize>,
    pub lora_alpha: Option<f64>,
    pub seed: Option<u64>,
    /// Saves resumable state into this folder every `checkpointEvery` steps.
    pub checkpoint_dir: Option<PathBuf>,
    pub checkpoint_every: Option<usize>,
    /// Continues from `checkpointDir`'s checkpoint.
    pub resume: Option<bool>,
    /// Text the trained model will be measured on (the perplexity text): a training window that
    /// shares [`OVERLAP_TOKENS`] tokens in a row with it is refused.
    pub held_out: Option<PathBuf>,
    /// The training text, cut into windows ([`DATA_DEFAULTS`]).
    #[serde(default)]
    pub data: CalibrationConfig,
}

/// `mp`'s default share of local steps **(ours)**: three quarters, so that the global phase is
/// the "short" one of METHODS.md §3.5.
pub const MP_LOCAL_SHARE: (usize, usize) = (3, 4);

/// Steps between checkpoints when a folder is given **(ours)**.
pub const CHECKPOINT_EVERY: usize = 25;

impl DistillRequest {
    pub fn options(&self) -> Result<DistillOptions> {
        let d = DistillOptions::default();
        let steps = self.steps.unwrap_or(d.steps);
        let schedule = self.schedule.unwrap_or(d.schedule);
        let checkpoint = match &self.checkpoint_dir {
            Some(dir) => Some(Checkpointing {
                dir: dir.clone(),
                every: self.checkpoint_every.unwrap_or(CHECKPOINT_EVERY),
                resume: self.resume.unwrap_or(false),
            }),
            None if self.resume == Some(true) || self.checkpoint_every.is_some() => {
                return Err(Error::config(
                    "checkpointDir",
                    "resume and checkpointEvery need a checkpoint folder",
                ))
            }
            None => None,
        };
        Ok(DistillOptions {
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
            schedule,
            local_steps: match schedule {
                Schedule::Sp => self.local_steps.unwrap_or(0),
                Schedule::Mp => {
                    self.local_steps.unwrap_or(steps * MP_LOCAL_SHARE.0 / MP_LOCAL_SHARE.1)
                }
            },
            lora: LoraOptions {
                rank: self.lora_rank.unwrap_or(d.lora.rank),
                alpha: self.lora_alpha.unwrap_or(d.lora.alpha),
            },
            seed: self.seed.unwrap_or(d.seed),
            checkpoint,
        })
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
    let prepared = req.prepare(teacher)?;
    run_prepared(student, teacher, req, &prepared, ctx)
}

/// A request's options and training windows, checked: what can be checked before there is a
/// student (`prune({distill})` and `compare` run this before pruning).
#[derive(Clone)]
pub struct Prepared {
    pub options: DistillOptions,
    pub set: CalibrationSet,
}

impl Prepared {
    /// The same run with its checkpoints in `<checkpointDir>/<name>` (one folder per run when
    /// several share a request), checked like the folder it replaces.
    pub fn with_checkpoint_subdir(&self, name: &str) -> Result<Prepared> {
        let mut out = self.clone();
        if let Some(c) = &mut out.options.checkpoint {
            c.dir = c.dir.join(name);
            c.check_fresh()?;
        }
        Ok(out)
    }
}

impl DistillRequest {
    /// The options checked, the training text cut with `teacher`'s tokenizer (the student's is
    /// the same) and checked against the held-out text, the LoRA rank against the model's
    /// linears, and a checkpoint folder that holds a checkpoint refused unless resuming.
    pub fn prepare(&self, teacher: &Model) -> Result<Prepared> {
        let opts = self.options()?;
        check(&opts)?;
        if opts.trainable == Trainable::Lora {
            let smallest = teacher
                .lm
                .layers
                .iter()
                .flat_map(|l| l.shapes())
                .filter(|t| t.shape.len() == 2)
                .map(|t| t.shape.iter().copied().min().unwrap_or(0))
                .min()
                .unwrap_or(0);
            if opts.lora.rank > smallest {
                return Err(Error::config(
                    "loraRank",
                    format!("must be at most {smallest}, the smallest dimension of a linear"),
                ));
            }
        }
        if let Some(c) = &opts.checkpoint {
            c.check_fresh()?;
        }
        let max_len = teacher.config.max_position_embeddings;
        let set = CalibrationSet::build(&teacher.tokenizer, max_len, &self.data, DATA_DEFAULTS)?;
        if let Some(first) = set.samples.first() {
            if set.samples.iter().any(|w| w.len() != first.len()) {
                return Err(Error::config(
                    "data",
                    "training windows must share one length: cut them `chunked` or `sampled`",
                ));
            }
        }
        if let Some(file) = &self.held_out {
            let documents = TextSource::File(file.clone()).documents()?;
            let held_out = teacher.tokenizer.encode_with_bos(&join_documents(&documents))?;
            check_held_out(&set.samples, &held_out, file)?;
        }
        Ok(Prepared { options: opts, set })
    }
}

/// [`run`] on a request already prepared.
pub fn run_prepared(
    student: &Model,
    teacher: &Model,
    req: &DistillRequest,
    prepared: &Prepared,
    ctx: &RunContext,
) -> Result<Model> {
    let (opts, set) = (&prepared.options, &prepared.set);
    let (mut model, report) = distill(student, teacher, &set.samples, opts, ctx)?;
    // A model layerfold did not prune gets the identity record, so that it loads back.
    let mut provenance = student
        .provenance
        .clone()
        .unwrap_or_else(|| serde_json::json!({ "record": student.origins }));
    provenance["distill"] = serde_json::json!({
        "teacher": teacher.path.display().to_string(),
        "data": set.summary,
        "heldOut": req.held_out,
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

/// Tokens in a row a training window may share with the held-out text **(ours)**: long enough
/// that common phrases do not count, short enough that a copied sentence does.
pub const OVERLAP_TOKENS: usize = 32;

/// Refuses training windows that share [`OVERLAP_TOKENS`] tokens in a row with `held_out`, the
/// text the result will be measured on: training on it would make the measurement meaningless.
pub fn check_held_out(
    windows: &[Vec<u32>],
    held_out: &[u32],
    file: &std::path::Path,
) -> Result<()> {
    use std::collections::HashMap;
    use std::hash::{DefaultHasher, Hash, Hasher};
    let hash = |s: &[u32]| {
        let mut h = DefaultHasher::new();
        s.hash(&mut h);
        h.finish()
    };
    let n = OVERLAP_TOKENS;
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for (at, s) in held_out.windows(n).enumerate() {
        seen.entry(hash(s)).or_insert(at);
    }
    for (k, w) in windows.iter().enumerate() {
        for (i, s) in w.windows(n).enumerate() {
            let Some(&at) = seen.get(&hash(s)) else { continue };
            if held_out[at..at + n] == *s {
                return Err(Error::config(
                    "data",
                    format!(
                        "training window {k} shares {n} tokens in a row (from its token {i}) with the \
                         held-out text `{}` (its token {at}): train on text the model is not \
                         measured on",
                        file.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}
