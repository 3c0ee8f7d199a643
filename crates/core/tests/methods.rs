//! The depth-pruning methods on stories260K and on hand-built layers (METHODS.md §3.1–3.3).

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use layerfold_core::calib::{CalibrationConfig, CalibrationKind};
use layerfold_core::methods::merge_rule::{collapse, MergeRule};
use layerfold_core::methods::{prune, PruneRequest, Target};
use layerfold_core::model::decoder::{Attention, DecoderLayer, Linear, Mlp, RmsNorm};
use layerfold_core::model::origin::Origin;
use layerfold_core::{Model, RunContext};

fn request(
    method: &str,
    options: serde_json::Value,
    target: Target,
    calib: CalibrationConfig,
) -> PruneRequest {
    PruneRequest { method: method.into(), options, target, calibration: calib, distill: None }
}

fn remove(k: usize) -> Target {
    Target { remove_layers: Some(k), ..Default::default() }
}

fn threshold(t: f64) -> Target {
    Target { threshold: Some(t), ..Default::default() }
}

/// A layer whose every tensor is filled with `v` (norms with `100 + v`), of stories260K's shapes.
fn constant_layer(v: f32) -> DecoderLayer {
    let t = |shape: &[usize], x: f32| Tensor::full(x, shape, &Device::Cpu).unwrap();
    let lin = |o: usize, i: usize| Linear::new(t(&[o, i], v), Some(t(&[o], v)));
    let norm = |w: usize| RmsNorm { weight: t(&[w], 100.0 + v), eps: 1e-5 };
    DecoderLayer {
        self_attn: Attention {
            q_proj: lin(64, 64),
            k_proj: lin(32, 64),
            v_proj: lin(32, 64),
            o_proj: lin(64, 64),
            q_norm: Some(norm(8)),
            k_norm: Some(norm(8)),
            head_dim: 8,
        },
        mlp: Mlp { gate_proj: lin(172, 64), up_proj: lin(172, 64), down_proj: lin(64, 172) },
        input_layernorm: norm(64),
        post_attention_layernorm: norm(64),
    }
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn rdsc_equals_the_formula_and_top_keeps_top_linears_and_bottom_norms() {
    let (a, b, c) = (constant_layer(1.0), constant_layer(2.5), constant_layer(-4.0));
    let window = [&a, &b, &c];
    let rdsc = collapse(MergeRule::Rdsc, &window).unwrap();
    // θ_l + Σ_k (θ_{l+k} − θ_l) = 1 + (2.5 − 1) + (−4 − 1) = −2.5, for every linear and bias.
    for l in
        [&rdsc.self_attn.q_proj, &rdsc.self_attn.o_proj, &rdsc.mlp.down_proj, &rdsc.mlp.gate_proj]
    {
        assert!(values(&l.weight).iter().all(|&x| x == -2.5));
        assert!(values(l.bias.as_ref().unwrap()).iter().all(|&x| x == -2.5));
    }
    // The norms of slot l stay: 100 + 1.
    for n in [
        &rdsc.input_layernorm,
        &rdsc.post_attention_layernorm,
        rdsc.self_attn.q_norm.as_ref().unwrap(),
    ] {
        assert!(values(&n.weight).iter().all(|&x| x == 101.0));
    }
    let top = collapse(MergeRule::Top, &window).unwrap();
    assert!(values(&top.mlp.up_proj.weight).iter().all(|&x| x == -4.0));
    assert!(values(top.self_attn.v_proj.bias.as_ref().unwrap()).iter().all(|&x| x == -4.0));
    assert!(values(&top.post_attention_layernorm.weight).iter().all(|&x| x == 101.0));
    assert!(values(&top.self_attn.k_norm.as_ref().unwrap().weight).iter().all(|&x| x == 101.0));
    let mean = collapse(MergeRule::Mean, &window).unwrap();
    assert!(values(&mean.self_attn.k_proj.weight).iter().all(|&x| (x - (-0.5 / 3.0)).abs() < 1e-6));
}

/// Each new layer covers a contiguous run of original layers; together they cover all, once.
fn assert_partition(origins: &[Origin], layers: usize) {
    let flat: Vec<usize> = origins.iter().flat_map(Origin::layers).collect();
    assert_eq!(flat, (0..layers).collect::<Vec<_>>(), "{origins:?}");
}

#[test]
fn slm_windows_never_overlap_and_the_last_layer_is_never_merged() {
    let model = load(&shared("models/stories260K"));
    let calib = calibration(CalibrationKind::Sampled, 64, 4);
    let mut seen = std::collections::BTreeSet::new();
    for t in [-1.0, 0.5, 0.8, 0.9, 0.95, 0.99] {
        let (pruned, summary) = prune(
            &model,
            &request("slm", serde_json::Value::Null, threshold(t), calib.clone()),
            &RunContext::new(),
        )
        .unwrap();
        assert_partition(&pruned.origins, 5);
        assert_eq!(
            pruned.origins.last(),
            Some(&Origin::Layer(4)),
            "T = {t}: the last layer was merged"
        );
        assert_eq!(summary.record, pruned.origins);
        seen.insert(pruned.num_layers());
    }
    // T = −1 accepts every window: layers 0..=3 become one, the last stays.
    assert!(seen.contains(&2), "{seen:?}");
    assert!(seen.len() > 1, "thresholds should give different depths: {seen:?}");
}

#[test]
fn laco_that_accepts_nothing_returns_the_original_model() {
    let model = load(&shared("models/stories260K"));
    let calib = calibration(CalibrationKind::Sentences, 32, 5);
    let (pruned, summary) = prune(
        &model,
        &request("laco", serde_json::json!({"layersPerMerge": 2}), threshold(1.0), calib.clone()),
        &RunContext::new(),
    )
    .unwrap();
    assert_eq!(pruned.origins, (0..5).map(Origin::Layer).collect::<Vec<_>>());
    assert!(summary.report.steps.iter().all(|s| s.candidates.iter().all(|c| !c.chosen)));
    for (a, b) in pruned.lm.layers.iter().zip(&model.lm.layers) {
        let (a, b) = (a.get().unwrap(), b.get().unwrap());
        assert_eq!(values(&a.mlp.down_proj.weight), values(&b.mlp.down_proj.weight));
    }
    // T = −1 accepts every merge it tries.
    let (merged, _) = prune(
        &model,
        &request("laco", serde_json::json!({"layersPerMerge": 2}), threshold(-1.0), calib),
        &RunContext::new(),
    )
    .unwrap();
    assert!(merged.num_layers() < 5);
    assert_partition(&merged.origins, 5);
}

#[test]
fn every_method_hits_a_layer_target_and_records_it() {
    let model = load(&shared("models/stories260K"));
    let chunked = calibration(CalibrationKind::Chunked, 64, 4);
    for (method, calib) in [
        ("drop-bi", chunked.clone()),
        ("drop-angular", chunked.clone()),
        ("drop-last", CalibrationConfig::default()),
        ("sleb", calibration(CalibrationKind::Sampled, 64, 4)),
        ("laco", calibration(CalibrationKind::Sentences, 32, 5)),
        ("slm", calibration(CalibrationKind::Sampled, 64, 4)),
    ] {
        let (pruned, summary) = prune(
            &model,
            &request(method, serde_json::Value::Null, remove(2), calib),
            &RunContext::new(),
        )
        .unwrap();
        assert_eq!(summary.layers_before, 5);
        let exact = summary.report.threshold.as_ref().is_none_or(|t| t.exact);
        if exact {
            assert_eq!(pruned.num_layers(), 3, "{method}");
        }
        assert_eq!(summary.layers_after, pruned.num_layers());
        assert!(!summary.report.steps.is_empty(), "{method} reports its steps");
        let flat: Vec<usize> = pruned.origins.iter().flat_map(Origin::layers).collect();
        assert!(flat.windows(2).all(|w| w[0] < w[1]), "{method}: {flat:?}");
        assert!(pruned.provenance.is_some());
    }
}

#[test]
fn drop_methods_remove_what_their_scores_say() {
    let model = load(&shared("models/stories260K"));
    let calib = calibration(CalibrationKind::Chunked, 64, 4);
    let (pruned, summary) = prune(
        &model,
        &request("drop-bi", serde_json::Value::Null, remove(2), calib.clone()),
        &RunContext::new(),
    )
    .unwrap();
    let scores: Vec<f64> = summary.report.steps[0].candidates.iter().map(|c| c.score).collect();
    let kept: Vec<usize> = pruned.origins.iter().flat_map(Origin::layers).collect();
    let removed: Vec<usize> = (0..5).filter(|i| !kept.contains(i)).collect();
    let max_removed = removed.iter().map(|&i| scores[i]).fold(f64::MIN, f64::max);
    let min_kept = kept.iter().map(|&i| scores[i]).fold(f64::MAX, f64::min);
    assert!(max_removed <= min_kept, "BI {scores:?}, removed {removed:?}");

    let (last, _) = prune(
        &model,
        &request("drop-last", serde_json::Value::Null, remove(2), CalibrationConfig::default()),
        &RunContext::new(),
    )
    .unwrap();
    assert_eq!(last.origins, vec![Origin::Layer(0), Origin::Layer(1), Origin::Layer(4)]);

    let (angular, summary) = prune(
        &model,
        &request("drop-angular", serde_json::Value::Null, remove(2), calib),
        &RunContext::new(),
    )
    .unwrap();
    let best = summary.report.steps[0].candidates.iter().find(|c| c.chosen).unwrap();
    assert!(summary.report.steps[0].candidates.iter().all(|c| c.score >= best.score));
    let kept: Vec<usize> = angular.origins.iter().flat_map(Origin::layers).collect();
    assert!(best.layers.iter().all(|l| !kept.contains(l)));
}

#[test]
fn sleb_laco_and_slm_score_the_same_with_and_without_the_prefix_cache() {
    let model = load(&shared("models/stories260K"));
    // A budget of 0 bytes keeps only h_0 in LaCo's and SLM's state cache: every candidate then runs
    // from the embeddings, through the same code path as the cached prefix.
    for (method, calib, budget) in [
        ("sleb", calibration(CalibrationKind::Sampled, 64, 3), None),
        ("laco", calibration(CalibrationKind::Sentences, 32, 5), None),
        ("laco", calibration(CalibrationKind::Sentences, 32, 5), Some(0)),
        ("slm", calibration(CalibrationKind::Sampled, 64, 3), Some(0)),
    ] {
        let run = |cache: bool| {
            let opts = serde_json::json!({"prefixCache": cache});
            let ctx = match budget {
                Some(bytes) if cache => RunContext::new().with_state_cache_budget(bytes),
                _ => RunContext::new(),
            };
            prune(&model, &request(method, opts, remove(2), calib.clone()), &ctx).unwrap().1
        };
        let (a, b) = (run(true), run(false));
        let scores = |s: &layerfold_core::methods::PruneSummary| -> Vec<f64> {
            s.report.steps.iter().flat_map(|st| st.candidates.iter().map(|c| c.score)).collect()
        };
        let (sa, sb) = (scores(&a), scores(&b));
        assert_eq!(sa.len(), sb.len());
        for (x, y) in sa.iter().zip(&sb) {
            assert!((x - y).abs() < 1e-4 * x.abs().max(1.0), "{method}: {x} vs {y}");
        }
        assert_eq!(a.record, b.record, "{method}");
    }
}

#[test]
fn bad_targets_and_options_are_config_errors() {
    let model = load(&shared("models/stories260K"));
    let calib = calibration(CalibrationKind::Chunked, 64, 2);
    let err =
        |method: &str, options: serde_json::Value, target: Target, calib: CalibrationConfig| {
            prune(&model, &request(method, options, target, calib), &RunContext::new()).unwrap_err()
        };
    let e = err("drop-bi", serde_json::Value::Null, remove(5), calib.clone());
    assert_eq!(e.code(), "E_CONFIG");
    assert!(e.to_string().contains("larger than the model"), "{e}");
    for r in [0.0, 1.0, 1.5, -0.1] {
        let e = err(
            "drop-bi",
            serde_json::Value::Null,
            Target { ratio: Some(r), ..Default::default() },
            calib.clone(),
        );
        assert_eq!(e.code(), "E_CONFIG", "ratio {r}");
    }
    assert_eq!(
        err("drop-bi", serde_json::Value::Null, threshold(0.5), calib.clone()).code(),
        "E_CONFIG"
    );
    assert_eq!(err("nope", serde_json::Value::Null, remove(1), calib.clone()).code(), "E_CONFIG");
    let e = err("laco", serde_json::json!({"mergeRule": "top"}), remove(1), calib.clone());
    assert!(e.to_string().contains("mergeRule"), "{e}");
    let empty = CalibrationConfig { text: Some(" \n \n".into()), ..Default::default() };
    assert_eq!(err("drop-bi", serde_json::Value::Null, remove(1), empty).code(), "E_DATA");
    // A ratio converts to a layer count by the parameters of one layer.
    let per_layer = model.config.layer_parameters() as f64 / model.num_parameters() as f64;
    let (pruned, _) = prune(
        &model,
        &request(
            "drop-last",
            serde_json::Value::Null,
            Target { ratio: Some(per_layer * 2.2), ..Default::default() },
            CalibrationConfig::default(),
        ),
        &RunContext::new(),
    )
    .unwrap();
    assert_eq!(pruned.num_layers(), 3);
}

#[test]
fn pruned_model_saves_with_its_record() {
    let model = load(&shared("models/stories260K"));
    let (pruned, _) = prune(
        &model,
        &request(
            "slm",
            serde_json::json!({"merge": "mean"}),
            threshold(0.9),
            calibration(CalibrationKind::Sampled, 64, 3),
        ),
        &RunContext::new(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pruned");
    let summary =
        layerfold_core::model::save::save(&pruned, &out, &Default::default(), &RunContext::new())
            .unwrap();
    assert!(summary.files.contains(&"layerfold.json".to_string()));
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("layerfold.json")).unwrap())
            .unwrap();
    assert_eq!(record["method"], "slm");
    assert_eq!(record["layersAfter"].as_u64().unwrap() as usize, pruned.num_layers());
    let reloaded: Model = load(&out);
    assert_eq!(reloaded.num_layers(), pruned.num_layers());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_hidden_layers"].as_u64().unwrap() as usize, pruned.num_layers());
}
