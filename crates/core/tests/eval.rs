//! Zero-shot evaluation against lm-evaluation-harness itself (tests/oracle/make_eval_fixtures.py:
//! lm_eval 0.4.13, HF transformers, CPU, f32, batch 1, first 300 examples of each task): every
//! per-example log-likelihood within 1e-4 of its magnitude (at least 1e-5 absolute), every
//! greedy flag equal, and every per-task metric equal (to 1e-12: the rounding of a mean).

mod common;

use common::*;
use layerfold_core::eval::multiple_choice::{evaluate, EvalOptions};
use layerfold_core::RunContext;

/// Compares the first `limit` examples of each task (the per-task metrics too when `limit` is the
/// fixture's own).
fn check_against_lm_eval(model_path: &std::path::Path, fixture: &str, limit: Option<usize>) {
    let want = oracle_json(fixture);
    let full = want["limit"].as_u64().unwrap() as usize;
    let limit = limit.unwrap_or(full);
    let model = load(model_path);
    assert_eq!(model.max_seq_len() as u64, want["max_length"].as_u64().unwrap());
    let tasks: Vec<String> = want["tasks"].as_object().unwrap().keys().cloned().collect();
    let opts = EvalOptions {
        tasks: Some(tasks.clone()),
        limit: Some(limit),
        batch_size: Some(8),
        data_dir: Some(shared("data/eval")),
    };
    let got = evaluate(&model, &opts, &RunContext::new()).unwrap();
    let mut worst = (0f64, String::new());
    for (name, result) in &got.tasks {
        let w = &want["tasks"][name];
        let samples: Vec<_> = got.samples.iter().filter(|s| &s.task == name).collect();
        let expected = &w["samples"].as_array().unwrap()[..limit];
        assert_eq!(samples.len(), expected.len(), "{name}: examples");
        for (s, e) in samples.iter().zip(expected) {
            assert_eq!(s.doc as u64, e["doc"].as_u64().unwrap());
            let lls = f64s(&e["ll"]);
            assert_eq!(s.loglik.len(), lls.len(), "{name} doc {}: choices", s.doc);
            for (a, b) in s.loglik.iter().zip(&lls) {
                let err = (a - b).abs() / b.abs().max(0.1);
                if err > worst.0 {
                    worst = (err, format!("{name} doc {}: {a} vs {b}", s.doc));
                }
                assert!(
                    (a - b).abs() <= (1e-4 * b.abs()).max(1e-5),
                    "{name} doc {}: loglik {a} vs lm_eval {b}",
                    s.doc
                );
            }
            let greedy: Vec<bool> =
                e["greedy"].as_array().unwrap().iter().map(|g| g.as_bool().unwrap()).collect();
            assert_eq!(s.greedy, greedy, "{name} doc {}: greedy", s.doc);
        }
        assert_eq!(result.n, limit);
        if limit != full {
            continue;
        }
        let m = &w["metrics"];
        // Equal up to the rounding of the mean (lm-eval's aggregation sums in another order).
        for (got, key) in [
            (result.acc, "acc"),
            (result.acc_norm, "acc_norm"),
            (result.acc_stderr, "acc_stderr"),
            (result.acc_norm_stderr, "acc_norm_stderr"),
        ] {
            let want = m[key].as_f64().unwrap();
            assert!((got - want).abs() < 1e-12, "{name} {key}: {got} vs lm_eval {want}");
        }
    }
    println!("{fixture}: worst relative loglik difference {:.2e} ({})", worst.0, worst.1);
}

#[test]
fn stories260k_matches_lm_eval() {
    check_against_lm_eval(&shared("models/stories260K"), "eval-stories260K", None);
}

/// The fixture was made on the folder `layerfold convert` writes from the GGUF (the same weights
/// and tokenizer); the first examples of each task keep the test short.
#[test]
fn smollm2_matches_lm_eval() {
    check_against_lm_eval(&smollm2(), "eval-smollm2", Some(10));
}
