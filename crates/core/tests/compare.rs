//! `compare` shares one calibration forward pass among the methods that read the same set, and
//! what each method decides is what it decides alone.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use layerfold_core::calib::{CalibrationConfig, CalibrationKind};
use layerfold_core::methods::{prune, PruneRequest, Target};
use layerfold_core::{RunContext, Stage};

fn request(method: &str) -> PruneRequest {
    PruneRequest {
        method: method.into(),
        options: serde_json::Value::Null,
        target: Target { remove_layers: Some(2), ..Target::default() },
        calibration: CalibrationConfig {
            file: Some(shared("data/text/wikitext2_valid_tokenized.txt")),
            kind: Some(CalibrationKind::Chunked),
            seq_len: Some(64),
            n_samples: Some(8),
            ..CalibrationConfig::default()
        },
        distill: None,
    }
}

/// A context counting the calibration batches that run through the model.
fn counting() -> (RunContext, Arc<AtomicUsize>) {
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    let ctx = RunContext::new().with_progress(move |p| {
        if p.stage == Stage::Calibrate && p.done > 0 {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    (ctx, n)
}

#[test]
fn methods_on_one_set_share_one_pass_and_decide_as_alone() {
    let model = load(&shared("models/stories260K"));
    let methods = ["drop-bi", "drop-angular", "laco", "slm", "come"];
    let (alone_ctx, alone_batches) = counting();
    let alone: Vec<_> =
        methods.iter().map(|m| prune(&model, &request(m), &alone_ctx).unwrap().1).collect();
    let (ctx, shared_batches) = counting();
    let ctx = ctx.sharing_states(&model);
    let together: Vec<_> =
        methods.iter().map(|m| prune(&model, &request(m), &ctx).unwrap().1).collect();
    for (a, b) in alone.iter().zip(&together) {
        assert_eq!(a.record, b.record, "{}", a.method);
        assert_eq!(a.report.steps, b.report.steps, "{}: the same scores and decisions", a.method);
    }
    // 8 samples of 64 tokens are one batch: alone, each method's first pass runs it (CoMe's
    // re-scores run from the merged layer and report no calibration batches).
    let (alone_n, shared_n) =
        (alone_batches.load(Ordering::SeqCst), shared_batches.load(Ordering::SeqCst));
    println!("calibration batches: alone {alone_n}, shared {shared_n}");
    assert_eq!(alone_n, methods.len());
    // Shared: one pass for the four that read hidden states; CoMe also reads inside the layers,
    // so it runs its own.
    assert_eq!(shared_n, 2);
    assert_eq!(ctx.shared_states().unwrap().passes(), 1);
    // CoMe first: its pass feeds its own observers and is kept for the others.
    let (ctx, first_batches) = counting();
    let ctx = ctx.sharing_states(&model);
    for m in ["come", "drop-bi", "laco"] {
        let summary = prune(&model, &request(m), &ctx).unwrap().1;
        let want = alone.iter().find(|a| a.method == m).unwrap();
        assert_eq!(summary.report.steps, want.report.steps, "{m} after CoMe");
    }
    assert_eq!(first_batches.load(Ordering::SeqCst), 1);
}
