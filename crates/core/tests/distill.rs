//! Distillation (METHODS.md §3.5) on stories260K pruned by CoMe by one layer (so that one layer is
//! a merge): every trained tensor gets a non-zero gradient, the analytic gradient agrees with
//! central finite differences, and a short run lowers the loss without touching either input.

mod common;

use candle_core::{Tensor, Var};
use common::*;
use layerfold_core::calib::{
    CalibrationConfig, CalibrationDefaults, CalibrationKind, CalibrationSet,
};
use layerfold_core::distill::checkpoint::{Checkpointing, CHECKPOINT_FILE};
use layerfold_core::distill::loss::{loss_and_grads, teacher_targets, LossWeights};
use layerfold_core::distill::trainable::Student;
use layerfold_core::distill::{
    distill, run, DistillOptions, DistillRequest, LoraOptions, Schedule, Trainable,
};
use layerfold_core::methods::{prune, PruneRequest, Target};
use layerfold_core::model::decoder::{CausalLm, RmsNorm, TokenBatch};
use layerfold_core::{Model, RunContext};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn teacher_and_student() -> (Model, Model) {
    let teacher = load(&shared("models/stories260K"));
    let req = PruneRequest {
        method: "come".into(),
        options: serde_json::json!({}),
        target: Target { remove_layers: Some(1), ..Default::default() },
        calibration: calibration(4),
        distill: None,
    };
    let (student, _) = prune(&teacher, &req, &RunContext::new()).unwrap();
    assert!(student.origins.iter().any(|o| o.is_merged()), "{:?}", student.origins);
    (teacher, student)
}

fn calibration(n: usize) -> CalibrationConfig {
    CalibrationConfig {
        file: Some(shared("data/text/wikitext2_valid_tokenized.txt")),
        kind: Some(CalibrationKind::Chunked),
        seq_len: Some(64),
        n_samples: Some(n),
        ..Default::default()
    }
}

fn windows(model: &Model, n: usize) -> Vec<Vec<u32>> {
    let set = CalibrationSet::build(
        &model.tokenizer,
        model.config.max_position_embeddings,
        &calibration(n),
        CalibrationDefaults::GENERIC,
    )
    .unwrap();
    set.samples
}

const WEIGHTS: LossWeights = LossWeights { alpha: 1.0, beta: 1.0, temperature: 2.0 };

fn ends(student: &Model) -> Vec<usize> {
    student.origins.iter().map(|o| *o.layers().last().unwrap()).collect()
}

/// The loss of `lm` (the student's layers, possibly perturbed) on `batch`.
fn loss_of(lm: &CausalLm, teacher: &Model, student: &Model, batch: &TokenBatch) -> f64 {
    let check = || Ok(());
    let targets =
        teacher_targets(&teacher.lm, &teacher.config, batch, &ends(student), &check).unwrap();
    let (parts, _) =
        loss_and_grads(lm, &teacher.lm, &student.config, batch, &targets, WEIGHTS, &check).unwrap();
    parts.loss
}

/// The student's trainable copy; LoRA's `B` (zero at the start, which leaves `A` without a
/// gradient) is set to seeded random values, as after some training.
fn student_vars(student: &Model, which: Trainable) -> Student {
    let s = Student::new(&student.lm, &student.origins, which, LoraOptions::default(), 3).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (name, var) in &s.vars {
        if name.ends_with("lora_B.weight") {
            let t = var.as_tensor();
            let v: Vec<f32> = (0..t.elem_count()).map(|_| rng.random_range(-0.02..0.02)).collect();
            var.set(&Tensor::from_vec(v, t.shape(), t.device()).unwrap()).unwrap();
        }
    }
    s
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
}

/// Options of a short run that checkpoints into `dir/ckpt` every `every` steps.
fn checkpointed(
    dir: &std::path::Path,
    every: usize,
    opts: DistillOptions,
) -> (Checkpointing, DistillOptions) {
    let ckpt = Checkpointing { dir: dir.join("ckpt"), every, resume: false };
    (ckpt.clone(), DistillOptions { checkpoint: Some(ckpt), ..opts })
}

fn norm(t: &Tensor) -> f64 {
    t.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt() as f64
}

#[test]
fn every_trained_tensor_gets_a_nonzero_gradient() {
    let (teacher, student) = teacher_and_student();
    let data = windows(&student, 2);
    let batch = TokenBatch::new(&[&data[0], &data[1]], 0, student.lm.device()).unwrap();
    let check = || Ok(());
    let targets =
        teacher_targets(&teacher.lm, &teacher.config, &batch, &ends(&student), &check).unwrap();
    for which in [Trainable::All, Trainable::Merged, Trainable::Lora] {
        let s = student_vars(&student, which);
        let expected = match which {
            // 4 layers × (7 linears + 2 norms) + the final norm.
            Trainable::All => 4 * 9 + 1,
            Trainable::Merged => 9,
            // 4 layers × 7 linears × (A, B).
            Trainable::Lora => 4 * 7 * 2,
        };
        assert_eq!(s.vars.len(), expected, "{which:?}");
        let (_, grads) =
            loss_and_grads(&s.lm, &teacher.lm, &student.config, &batch, &targets, WEIGHTS, &check)
                .unwrap();
        for (name, var) in &s.vars {
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient"));
            assert!(norm(g) > 0.0, "{name}: zero gradient");
        }
    }
}

/// Directional derivatives: for a seeded random direction `u` over one whole tensor,
/// `(L(θ + εu) − L(θ − εu)) / 2ε` against `⟨∇L, u⟩`, within 1%. The step makes the loss move by
/// about 3e-4 of itself, far above f32 rounding of the loss and small enough to stay linear
/// (measured: worst 2.3e-3, v_proj; 1.5e-2 at a step of 1e-3).
#[test]
fn gradient_agrees_with_central_differences() {
    let (teacher, student) = teacher_and_student();
    let data = windows(&student, 2);
    let batch = TokenBatch::new(&[&data[0], &data[1]], 0, student.lm.device()).unwrap();
    let check = || Ok(());
    let targets =
        teacher_targets(&teacher.lm, &teacher.config, &batch, &ends(&student), &check).unwrap();
    let merged = student.origins.iter().position(|o| o.is_merged()).unwrap();
    let full = [
        format!("model.layers.{merged}.self_attn.q_proj.weight"),
        format!("model.layers.{merged}.self_attn.k_proj.weight"),
        "model.layers.0.self_attn.v_proj.weight".to_string(),
        "model.layers.1.self_attn.o_proj.weight".to_string(),
        format!("model.layers.{merged}.mlp.gate_proj.weight"),
        "model.layers.3.mlp.down_proj.weight".to_string(),
        "model.layers.2.input_layernorm.weight".to_string(),
        format!("model.layers.{merged}.post_attention_layernorm.weight"),
        "model.norm.weight".to_string(),
    ];
    let lora = [
        format!("model.layers.{merged}.self_attn.q_proj.lora_A.weight"),
        "model.layers.0.self_attn.v_proj.lora_B.weight".to_string(),
        format!("model.layers.{merged}.mlp.down_proj.lora_A.weight"),
        "model.layers.2.mlp.up_proj.lora_B.weight".to_string(),
    ];
    for (which, sampled) in [(Trainable::All, &full[..]), (Trainable::Lora, &lora[..])] {
        let s = student_vars(&student, which);
        let (parts, grads) =
            loss_and_grads(&s.lm, &teacher.lm, &student.config, &batch, &targets, WEIGHTS, &check)
                .unwrap();
        check_directions(&s, &grads, parts.loss, sampled, &teacher, &student, &batch);
    }
}

fn check_directions(
    s: &Student,
    grads: &candle_core::backprop::GradStore,
    loss: f64,
    sampled: &[String],
    teacher: &Model,
    student: &Model,
    batch: &TokenBatch,
) {
    let parts_loss = loss;
    let frozen = s.lm.clone();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for name in sampled {
        let var: &Var = &s.vars.iter().find(|(n, _)| n == name).unwrap().1;
        let theta = var.as_tensor().detach();
        let values: Vec<f32> =
            (0..theta.elem_count()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let u = Tensor::from_vec(values, theta.shape(), theta.device()).unwrap();
        let analytic = (grads.get(var.as_tensor()).unwrap() * &u)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let eps = (3e-4 * parts_loss / analytic.abs()).min(0.05 * norm(&theta).max(1.0) / norm(&u));
        let shifted = |sign: f64| -> CausalLm {
            let moved = (&theta + (&u * (sign * eps)).unwrap()).unwrap();
            replace(&frozen, name, &moved)
        };
        let numeric = (loss_of(&shifted(1.0), teacher, student, batch)
            - loss_of(&shifted(-1.0), teacher, student, batch))
            / (2.0 * eps);
        let err = (analytic - numeric).abs() / numeric.abs().max(1e-6);
        assert!(err < 0.01, "{name}: analytic {analytic:.6e}, finite differences {numeric:.6e}");
        println!(
            "{name}: analytic {analytic:.6e}, finite differences {numeric:.6e}, rel {err:.1e}"
        );
    }
}

/// `lm` with the tensor called `name` replaced by `t`.
fn replace(lm: &CausalLm, name: &str, t: &Tensor) -> CausalLm {
    let mut out = lm.clone();
    if name == "model.norm.weight" {
        out.norm = RmsNorm { weight: t.clone(), eps: lm.norm.eps };
        return out;
    }
    for (i, layer) in lm.layers.iter().enumerate() {
        let prefix = format!("model.layers.{i}.");
        if let Some(rest) = name.strip_prefix(&prefix) {
            out.layers[i] = layer
                .resident()
                .unwrap()
                .try_map_tensors(&mut |n, old| Ok(if n == rest { t.clone() } else { old.clone() }))
                .unwrap()
                .into();
        }
    }
    out
}

#[test]
fn a_short_run_lowers_the_loss_and_leaves_the_inputs_alone() {
    let (teacher, student) = teacher_and_student();
    let before: Vec<f32> = student.lm.layers[0]
        .resident()
        .unwrap()
        .mlp
        .up_proj
        .weight
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let opts = DistillOptions {
        steps: 30,
        lr: 3e-3,
        warmup_steps: 3,
        batch_size: 4,
        ..Default::default()
    };
    let data = windows(&student, 16);
    let (trained, report) = distill(&student, &teacher, &data, &opts, &RunContext::new()).unwrap();
    assert_eq!(report.curve.len(), 30);
    assert_eq!(report.tokens, 30 * 4 * 64);
    let mean = |r: &[layerfold_core::distill::StepLog]| {
        r.iter().map(|s| s.parts.loss).sum::<f64>() / r.len() as f64
    };
    let (first, last) = (mean(&report.curve[..5]), mean(&report.curve[25..]));
    assert!(last < 0.8 * first, "loss {first:.4} → {last:.4}");
    let after: Vec<f32> = student.lm.layers[0]
        .resident()
        .unwrap()
        .mlp
        .up_proj
        .weight
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(before == after, "the student given to distill was written into");
    let trained_w: Vec<f32> = trained.lm.layers[0]
        .resident()
        .unwrap()
        .mlp
        .up_proj
        .weight
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(before != trained_w, "distill returned the student unchanged");
    assert!(!trained.lm.layers[0].resident().unwrap().mlp.up_proj.weight.is_variable());
}

#[test]
fn bad_options_are_config_errors() {
    let (teacher, student) = teacher_and_student();
    let data = windows(&student, 2);
    let run = |opts: DistillOptions| {
        distill(&student, &teacher, &data, &opts, &RunContext::new()).map(|_| ())
    };
    for opts in [
        DistillOptions { steps: 0, ..Default::default() },
        DistillOptions { lr: 0.0, ..Default::default() },
        DistillOptions { batch_size: 0, ..Default::default() },
    ] {
        assert_eq!(run(opts).unwrap_err().code(), "E_CONFIG");
    }
    let err = distill(&student, &teacher, &[], &DistillOptions::default(), &RunContext::new())
        .unwrap_err();
    assert_eq!(err.code(), "E_DATA");
    // A teacher of another architecture or width.
    let mut other = teacher.clone();
    other.config.architecture = layerfold_core::model::config::Architecture::Qwen3;
    let err = distill(&student, &other, &data, &DistillOptions::default(), &RunContext::new())
        .unwrap_err();
    assert!(err.code() == "E_CONFIG" && err.to_string().contains("Qwen3"), "{err}");
    let mut wide = teacher.clone();
    wide.config.hidden_size *= 2;
    let err = distill(&student, &wide, &data, &DistillOptions::default(), &RunContext::new())
        .unwrap_err();
    assert!(err.code() == "E_CONFIG" && err.to_string().contains("hidden size"), "{err}");
    // A teacher with fewer layers than the merge record names.
    let mut short = teacher.clone();
    short.lm.layers.truncate(2);
    let err = distill(&student, &short, &data, &DistillOptions::default(), &RunContext::new())
        .unwrap_err();
    assert_eq!(err.code(), "E_CONFIG");
    assert!(err.to_string().contains("merge record"), "{err}");
}

/// A pruned model saved and loaded back keeps its merge record (from `layerfold.json`), so it can
/// be distilled later; `run` cuts the training text and records the run in the provenance.
#[test]
fn a_saved_pruned_model_distills_with_its_record() {
    let (teacher, student) = teacher_and_student();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("come");
    layerfold_core::model::save::save(&student, &out, &Default::default(), &RunContext::new())
        .unwrap();
    let loaded = load(&out);
    assert_eq!(loaded.origins, student.origins);
    let req = DistillRequest {
        steps: Some(3),
        data: CalibrationConfig { seq_len: Some(32), n_samples: Some(4), ..calibration(4) },
        ..Default::default()
    };
    let trained = run(&loaded, &teacher, &req, &RunContext::new()).unwrap();
    let p = trained.provenance.as_ref().unwrap();
    assert_eq!(p["method"], "come");
    assert_eq!(p["distill"]["report"]["curve"].as_array().unwrap().len(), 3);
    assert_eq!(p["distill"]["data"]["seqLen"], 32);
    assert_eq!(p["distill"]["options"]["warmupSteps"], 0);
    // A record that does not match the folder's layers is a format error naming the file.
    let doc = std::fs::read_to_string(out.join("layerfold.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&doc).unwrap();
    v["record"] = serde_json::json!([0, 1]);
    std::fs::write(out.join("layerfold.json"), v.to_string()).unwrap();
    let err =
        layerfold_core::Model::load(&out, &Default::default(), &RunContext::new()).unwrap_err();
    assert_eq!(err.code(), "E_MODEL_FORMAT");
    assert!(err.to_string().contains("layerfold.json"), "{err}");
}

/// Every tensor of the trained model, as raw bits.
fn bits(m: &Model) -> Vec<Vec<u32>> {
    m.lm.layers
        .iter()
        .flat_map(|l| {
            let mut out = Vec::new();
            l.resident()
                .unwrap()
                .try_map_tensors(&mut |_, t| {
                    let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
                    out.push(v.iter().map(|x| x.to_bits()).collect());
                    Ok(t.clone())
                })
                .unwrap();
            out
        })
        .chain(std::iter::once(
            m.lm.norm.weight.to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect(),
        ))
        .collect()
}

fn short_run(schedule: Schedule, trainable: Trainable) -> DistillOptions {
    DistillOptions {
        steps: 8,
        lr: 3e-3,
        warmup_steps: 2,
        batch_size: 2,
        schedule,
        local_steps: if schedule == Schedule::Mp { 4 } else { 0 },
        trainable,
        ..Default::default()
    }
}

/// A run stopped after a checkpoint and resumed ends with the same loss curve and weights, bit
/// for bit, as one that ran through: in both schedules (mp's checkpoints fall in the local phase,
/// on its boundary and in the global phase) and with LoRA.
#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let (teacher, student) = teacher_and_student();
    let data = windows(&student, 6);
    for (schedule, trainable) in [
        (Schedule::Sp, Trainable::All),
        (Schedule::Mp, Trainable::Lora),
        (Schedule::Mp, Trainable::All),
    ] {
        let opts = short_run(schedule, trainable);
        let (whole, whole_report) =
            distill(&student, &teacher, &data, &opts, &RunContext::new()).unwrap();
        for stop_after in [3usize, 4, 6] {
            let dir = tempfile::tempdir().unwrap();
            let ckpt = Checkpointing { dir: dir.path().join("ckpt"), every: 2, resume: false };
            let checkpointed = DistillOptions { checkpoint: Some(ckpt.clone()), ..opts.clone() };
            // Cancel once `stop_after` steps are done: the last checkpoint is at an even step.
            let cancel = layerfold_core::context::CancelToken::new();
            let c = cancel.clone();
            let ctx = RunContext::new().with_cancel(cancel.clone()).with_progress(move |p| {
                if p.done as usize >= stop_after {
                    c.cancel();
                }
            });
            let err = distill(&student, &teacher, &data, &checkpointed, &ctx).unwrap_err();
            assert_eq!(err.code(), "E_ABORTED");
            assert!(ckpt.dir.join(CHECKPOINT_FILE).exists());
            let resumed_opts = DistillOptions {
                checkpoint: Some(Checkpointing { resume: true, ..ckpt.clone() }),
                ..opts.clone()
            };
            let (resumed, report) =
                distill(&student, &teacher, &data, &resumed_opts, &RunContext::new()).unwrap();
            assert_eq!(report.resumed_from, Some(stop_after / 2 * 2), "{schedule:?}");
            assert_eq!(report.curve, whole_report.curve, "{schedule:?} {trainable:?} {stop_after}");
            assert_eq!(report.tokens, whole_report.tokens);
            assert!(bits(&resumed) == bits(&whole), "{schedule:?} {trainable:?}: weights differ");
        }
    }
}

#[test]
fn checkpoint_folders_are_checked() {
    let (teacher, student) = teacher_and_student();
    let data = windows(&student, 4);
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, opts) = checkpointed(
        dir.path(),
        1,
        DistillOptions { steps: 2, ..short_run(Schedule::Sp, Trainable::Merged) },
    );
    distill(&student, &teacher, &data, &opts, &RunContext::new()).unwrap();
    // A folder with a checkpoint is not overwritten by a new run …
    let err = distill(&student, &teacher, &data, &opts, &RunContext::new()).unwrap_err();
    assert_eq!(err.code(), "E_OUTPUT_EXISTS", "{err}");
    // … and resumes only the run that wrote it.
    let other = DistillOptions {
        seed: 1,
        checkpoint: Some(Checkpointing { resume: true, ..ckpt.clone() }),
        ..opts.clone()
    };
    let err = distill(&student, &teacher, &data, &other, &RunContext::new()).unwrap_err();
    assert_eq!(err.code(), "E_CONFIG");
    assert!(err.to_string().contains("another run (the options differ)"), "{err}");
    let other_data = windows(&student, 5);
    let same = DistillOptions { checkpoint: other.checkpoint.clone(), ..opts.clone() };
    let err = distill(&student, &teacher, &other_data, &same, &RunContext::new()).unwrap_err();
    assert!(err.to_string().contains("the training text differ"), "{err}");
    // A checkpoint folder inside the input model would write into it.
    let inside = DistillOptions {
        checkpoint: Some(Checkpointing { dir: teacher.path.join("ckpt"), ..ckpt.clone() }),
        ..opts.clone()
    };
    let err = distill(&student, &teacher, &data, &inside, &RunContext::new()).unwrap_err();
    assert_eq!(err.code(), "E_CONFIG", "{err}");
    assert!(!teacher.path.join("ckpt").exists());
    // A corrupt checkpoint is a format error naming the file.
    std::fs::write(ckpt.dir.join(CHECKPOINT_FILE), b"not a checkpoint").unwrap();
    let err = distill(&student, &teacher, &data, &same, &RunContext::new()).unwrap_err();
    assert_eq!(err.code(), "E_MODEL_FORMAT");
    assert!(err.to_string().contains(CHECKPOINT_FILE), "{err}");
}

/// A full disk during a checkpoint: the write goes to `/dev/full` (the kernel's own ENOSPC, through
/// the staging name the writer uses), the run stops with E_DISK_FULL and the checkpoint before it
/// is still there and resumable.
#[test]
fn a_full_disk_keeps_the_last_checkpoint() {
    let (teacher, student) = teacher_and_student();
    let data = windows(&student, 4);
    let dir = tempfile::tempdir().unwrap();
    let ckpt = Checkpointing { dir: dir.path().join("ckpt"), every: 2, resume: false };
    let opts = DistillOptions {
        checkpoint: Some(ckpt.clone()),
        ..short_run(Schedule::Sp, Trainable::All)
    };
    // Let the step-2 checkpoint land, then make the next write hit a full device.
    let partial = ckpt.dir.join(format!("{CHECKPOINT_FILE}.partial"));
    let p = partial.clone();
    let ctx = RunContext::new().with_progress(move |pr| {
        if pr.done == 3 {
            std::os::unix::fs::symlink("/dev/full", &p).unwrap();
        }
    });
    let err = distill(&student, &teacher, &data, &opts, &ctx).unwrap_err();
    assert_eq!(err.code(), "E_DISK_FULL", "{err}");
    assert!(
        !partial.exists() && std::fs::symlink_metadata(&partial).is_err(),
        "staging left behind"
    );
    let resumed =
        DistillOptions { checkpoint: Some(Checkpointing { resume: true, ..ckpt }), ..opts.clone() };
    let (_, report) = distill(&student, &teacher, &data, &resumed, &RunContext::new()).unwrap();
    assert_eq!(report.resumed_from, Some(2));
}

/// mp on CoMe's model: the merged layer is the local phase's only layer, spanning its two
/// original layers, and its local loss falls; on a model with a dropped layer, the layer before
/// the gap stands for it.
#[test]
fn mp_trains_each_spanning_layer_alone_then_globally() {
    let (teacher, student) = teacher_and_student();
    let merged = student.origins.iter().position(|o| o.is_merged()).unwrap();
    let data = windows(&student, 8);
    let opts =
        DistillOptions { steps: 16, local_steps: 12, ..short_run(Schedule::Mp, Trainable::All) };
    let (_, report) = distill(&student, &teacher, &data, &opts, &RunContext::new()).unwrap();
    let first = student.origins[merged].layers()[0];
    assert_eq!(report.spans.len(), 1);
    assert_eq!(
        (report.spans[0].layer, report.spans[0].start, report.spans[0].end),
        (merged, first, first + 2)
    );
    let local: Vec<_> = report.curve.iter().filter(|s| s.local).collect();
    assert_eq!(local.len(), 12);
    assert!(local.iter().all(|s| s.parts.kl == 0.0));
    assert!(!report.curve[12].local && report.curve[12].parts.kl > 0.0);
    let (a, b) = (local[0].parts.mse, local[11].parts.mse);
    assert!(b < 0.8 * a, "local loss {a:.4} → {b:.4}");

    let req = PruneRequest {
        method: "drop-bi".into(),
        options: serde_json::json!({}),
        target: Target { remove_layers: Some(1), ..Default::default() },
        calibration: calibration(4),
        distill: None,
    };
    let (dropped, _) = prune(&teacher, &req, &RunContext::new()).unwrap();
    let (_, report) = distill(&dropped, &teacher, &data, &opts, &RunContext::new()).unwrap();
    let gap = (0..5).find(|i| !dropped.origins.iter().any(|o| o.layers() == [*i])).unwrap();
    assert_eq!(report.spans.len(), 1, "{:?}", dropped.origins);
    let s = report.spans[0];
    assert!(s.start < gap && s.end == gap + 1 || gap == 0, "{s:?}, dropped {gap}");
}

/// `finish` folds each adapter into its weight: the merged model computes what the model with
/// adapters computes, and carries no adapter.
#[test]
fn lora_adapters_merge_into_the_weights() {
    let (_, student) = teacher_and_student();
    let s = student_vars(&student, Trainable::Lora);
    let data = windows(&student, 2);
    let batch = TokenBatch::new(&[&data[0], &data[1]], 0, student.lm.device()).unwrap();
    let logits = |lm: &CausalLm| {
        let h = lm
            .forward(
                &student.config,
                &batch,
                &mut layerfold_core::model::decoder::NoObserver,
                &|| Ok(()),
            )
            .unwrap();
        lm.logits(&h.flatten_to(1).unwrap()).unwrap()
    };
    let (with, merged_lm) = (logits(&s.lm), s.finish().unwrap());
    assert!(merged_lm.layers.iter().map(|l| l.resident().unwrap()).all(|l| l
        .self_attn
        .q_proj
        .lora
        .is_none()
        && l.mlp.down_proj.lora.is_none()));
    let diff = max_abs_diff(&with, &logits(&merged_lm));
    let base = max_abs_diff(&with, &logits(&student.lm));
    assert!(diff < 1e-4 && base > 1e-2, "merged vs adapters {diff:e}, adapters vs base {base:e}");
}

/// Training text that the result will be measured on is refused: the held-out file itself, and
/// a text that contains one of its passages; WikiText-2's validation text against its test text
/// (the defaults of the demo and `compare --distill`) passes, and the record names both.
#[test]
fn training_text_must_not_overlap_the_held_out_text() {
    let (teacher, student) = teacher_and_student();
    let valid = shared("data/text/wikitext2_valid_tokenized.txt");
    let test = shared("data/text/wikitext2_raw_test.txt");
    let req = |held_out: &std::path::Path, data: CalibrationConfig| DistillRequest {
        steps: Some(1),
        held_out: Some(held_out.to_path_buf()),
        data,
        ..Default::default()
    };
    let err =
        run(&student, &teacher, &req(&valid, calibration(4)), &RunContext::new()).unwrap_err();
    assert_eq!(err.code(), "E_CONFIG");
    assert!(err.to_string().contains("held-out text"), "{err}");
    // One passage of the test text inside otherwise unrelated training text.
    let passage: String =
        std::fs::read_to_string(&test).unwrap().chars().skip(5000).take(600).collect();
    let text = format!("{} {passage}", "Once upon a time there was a little cat. ".repeat(8));
    let inline =
        CalibrationConfig { file: None, text: Some(text), n_samples: Some(8), ..calibration(8) };
    let err = run(&student, &teacher, &req(&test, inline), &RunContext::new()).unwrap_err();
    assert!(err.to_string().contains("held-out text"), "{err}");
    let ok = run(&student, &teacher, &req(&test, calibration(16)), &RunContext::new()).unwrap();
    let record = &ok.provenance.as_ref().unwrap()["distill"];
    assert_eq!(record["heldOut"], test.display().to_string());
    assert_eq!(record["data"]["source"], valid.display().to_string());
}

/// A checkpoint names its student by its starting weights too: a folder pruned again with other
/// options (same path, same record) is another run. A model layerfold did not prune distills,
/// saves and loads back with the identity record.
#[test]
fn checkpoints_know_their_student_and_unpruned_models_round_trip() {
    let (teacher, student) = teacher_and_student();
    let data = windows(&student, 4);
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, opts) = checkpointed(
        dir.path(),
        1,
        DistillOptions { steps: 2, ..short_run(Schedule::Sp, Trainable::All) },
    );
    distill(&student, &teacher, &data, &opts, &RunContext::new()).unwrap();
    let mut other = student.clone();
    other.lm.norm =
        RmsNorm { weight: (&student.lm.norm.weight * 1.5).unwrap(), eps: student.lm.norm.eps };
    let resume =
        DistillOptions { checkpoint: Some(Checkpointing { resume: true, ..ckpt }), ..opts };
    let err = distill(&other, &teacher, &data, &resume, &RunContext::new()).unwrap_err();
    assert!(err.to_string().contains("the student"), "{err}");

    let req = DistillRequest { steps: Some(1), data: calibration(4), ..Default::default() };
    let healed = run(&teacher, &teacher, &req, &RunContext::new()).unwrap();
    let out = dir.path().join("healed");
    layerfold_core::model::save::save(&healed, &out, &Default::default(), &RunContext::new())
        .unwrap();
    assert_eq!(load(&out).origins, teacher.origins);
}
