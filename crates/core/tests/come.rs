//! CoMe (METHODS.md §2.5, §3.4): the concatenation merge, GQA head grouping, channel sensitivity
//! against the oracle, and the progressive loop.

mod common;

use candle_core::{DType, Module, Tensor};
use common::*;
use layerfold_core::calib::{
    CalibrationConfig, CalibrationDefaults, CalibrationKind, CalibrationSet,
};
use layerfold_core::methods::concat::{concat_layers, kept_query_heads, GqaLayout, MergePlan};
use layerfold_core::methods::{prune, PruneRequest, PruneSummary, Target};
use layerfold_core::model::decoder::{DecoderLayer, Mode, NoObserver, RmsNorm, TokenBatch};
use layerfold_core::model::origin::Origin;
use layerfold_core::score::channel_sensitivity::ChannelActivity;
use layerfold_core::{Model, RunContext};

/// The largest `|x|` of `t`.
fn abs_max(t: &Tensor) -> f32 {
    t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    abs_max(&(a - b).unwrap())
}

fn mean_norm(a: &RmsNorm, b: &RmsNorm) -> RmsNorm {
    RmsNorm { weight: ((&a.weight + &b.weight).unwrap() * 0.5).unwrap(), eps: a.eps }
}

/// A batch of real hidden states entering layer `layer` of `model`, and its forward context.
fn layer_input(
    model: &Model,
    layer: usize,
) -> (Tensor, layerfold_core::model::decoder::ForwardContext) {
    let text = "The tower is 324 metres tall, about the same height as an 81-storey building.";
    layer_inputs(model, layer, &[text])
}

/// [`layer_input`] for a right-padded batch of `texts`.
fn layer_inputs(
    model: &Model,
    layer: usize,
    texts: &[&str],
) -> (Tensor, layerfold_core::model::decoder::ForwardContext) {
    let ids: Vec<Vec<u32>> =
        texts.iter().map(|t| model.tokenizer.encode_with_bos(t).unwrap()).collect();
    let refs: Vec<&[u32]> = ids.iter().map(|v| v.as_slice()).collect();
    let batch = TokenBatch::new(&refs, 0, model.lm.device()).unwrap();
    let ctx = model.lm.context(&model.config, &batch).unwrap();
    let mut h = model.lm.embed(&batch).unwrap();
    for (i, l) in model.lm.layers.iter().map(|l| l.resident().unwrap()).enumerate().take(layer) {
        h = l.forward(i, &h, &ctx, &mut NoObserver).unwrap();
    }
    (h, ctx)
}

fn all(n: usize) -> Vec<usize> {
    (0..n).collect()
}

/// The last-token pass of CoMe's re-scoring: each sequence's output at its last real token, with
/// sequences of different lengths in one batch, is the whole layer's output there (1e-5: the
/// one-row products may round differently from the batch's).
#[test]
fn last_token_pass_is_the_whole_layers_output_at_each_last_token() {
    for (path, layer) in [(shared("models/stories260K"), 3usize), (smollm2(), 29)] {
        let model = load(&path);
        let texts = [
            "The tower is 324 metres tall.",
            "It was the tallest man-made structure in the world for 41 years.",
        ];
        let (h, ctx) = layer_inputs(&model, layer, &texts);
        let l = model.lm.layers[layer].resident().unwrap();
        let whole = l.forward(layer, &h, &ctx, &mut NoObserver).unwrap();
        let last = l.forward_last_token(&h, &ctx).unwrap();
        assert_eq!(last.dims(), &[2, 1, whole.dim(2).unwrap()]);
        for (row, &len) in ctx.tokens.lengths.iter().enumerate() {
            let want = whole.narrow(0, row, 1).unwrap().narrow(1, len - 1, 1).unwrap();
            let got = last.narrow(0, row, 1).unwrap();
            let (err, scale) = (max_abs(&got, &want), abs_max(&want));
            assert!(
                err <= 1e-5 * scale.max(1.0),
                "{path:?} row {row}: max |Δ| {err} (scale {scale})"
            );
        }
    }
}

/// With every channel kept (a double-width layer built by the same code path), the merged layer
/// runs attention a and b on one normalised input, then FFN a and b on the result (1e-5, f32).
#[test]
fn merged_layer_with_every_channel_is_two_layers_side_by_side() {
    for (path, layer) in [(shared("models/stories260K"), 1usize), (smollm2(), 11)] {
        let model = load(&path);
        let (a, b) = (
            model.lm.layers[layer].resident().unwrap(),
            model.lm.layers[layer + 1].resident().unwrap(),
        );
        let (i, kv) = (a.mlp.intermediate_size(), a.self_attn.num_kv_heads());
        let plan =
            MergePlan { ratio: 0.3, ffn_a: all(i), ffn_b: all(i), kv_a: all(kv), kv_b: all(kv) };
        let merged = concat_layers(a, b, &plan, GqaLayout::Grouped).unwrap();
        assert_eq!(merged.mlp.intermediate_size(), 2 * i);
        assert_eq!(merged.self_attn.num_kv_heads(), 2 * kv);
        let (x, ctx) = layer_input(&model, layer);
        let got = merged.forward(layer, &x, &ctx, &mut NoObserver).unwrap();

        let norm_in = mean_norm(&a.input_layernorm, &b.input_layernorm);
        let norm_post = mean_norm(&a.post_attention_layernorm, &b.post_attention_layernorm);
        let u = norm_in.forward(&x).unwrap();
        let attn = |l: &DecoderLayer| {
            l.self_attn.o_proj.forward(&l.self_attn.attend(&u, &ctx).unwrap()).unwrap()
        };
        let y = ((&x + attn(a)).unwrap() + attn(b)).unwrap();
        let v = norm_post.forward(&y).unwrap();
        let ffn = |l: &DecoderLayer| {
            l.mlp.down_proj.forward(&l.mlp.activation(&v, Mode::Infer).unwrap()).unwrap()
        };
        let want = ((&y + ffn(a)).unwrap() + ffn(b)).unwrap();
        let err = max_abs(&got, &want);
        let scale =
            want.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(
            err <= 1e-5 * scale.max(1.0),
            "{}: max |Δ| {err:e} (scale {scale})",
            path.display()
        );
    }
}

/// SmolLM2 (9 query heads, 3 KV heads): after a merge that keeps some KV groups, every query head
/// of the merged layer still reads the KV head it read before, so its output channels equal those
/// of the same head in the original layer.
#[test]
fn gqa_heads_still_read_their_kv_heads() {
    let model = load(&smollm2());
    let layer = 5;
    let (a, b) = (
        model.lm.layers[layer].resident().unwrap(),
        model.lm.layers[layer + 1].resident().unwrap(),
    );
    let (i, dh) = (a.mlp.intermediate_size(), a.self_attn.head_dim);
    let plan = MergePlan {
        ratio: 0.5,
        ffn_a: all(i / 2),
        ffn_b: all(i - i / 2),
        kv_a: vec![1],
        kv_b: vec![0, 2],
    };
    let merged = concat_layers(a, b, &plan, GqaLayout::Grouped).unwrap();
    assert_eq!(merged.self_attn.num_heads(), 9);
    assert_eq!(merged.self_attn.num_kv_heads(), 3);
    let (x, ctx) = layer_input(&model, layer);
    let u = RmsNorm { weight: merged.input_layernorm.weight.clone(), eps: a.input_layernorm.eps }
        .forward(&x)
        .unwrap();
    let out = merged.self_attn.attend(&u, &ctx).unwrap();
    let heads = |l: &DecoderLayer| l.self_attn.attend(&u, &ctx).unwrap();
    let (oa, ob) = (heads(a), heads(b));
    // New head order: a's group 1 (heads 3, 4, 5), then b's groups 0 and 2 (heads 0, 1, 2, 6, 7, 8).
    let sources: Vec<(&Tensor, usize)> = [3, 4, 5]
        .iter()
        .map(|&h| (&oa, h))
        .chain([0, 1, 2, 6, 7, 8].iter().map(|&h| (&ob, h)))
        .collect();
    for (new, (src, old)) in sources.iter().enumerate() {
        let got = out.narrow(2, new * dh, dh).unwrap();
        let want = src.narrow(2, old * dh, dh).unwrap();
        let err = max_abs(&got, &want);
        assert!(err < 1e-5, "merged head {new} (old head {old}) differs by {err:e}");
    }
    // The released code's tiled layout keeps heads h with h mod 3 in the kept groups instead.
    assert_eq!(kept_query_heads(&[1], 9, 3, GqaLayout::Tiled), vec![1, 4, 7]);
    let tiled = concat_layers(a, b, &plan, GqaLayout::Tiled).unwrap();
    let q_rows =
        |l: &DecoderLayer, h: usize| l.self_attn.q_proj.weight.narrow(0, h * dh, dh).unwrap();
    assert_eq!(max_abs(&q_rows(&tiled, 0), &q_rows(a, 1)), 0.0, "tiled: new head 0 is a's head 1");
    assert_eq!(max_abs(&q_rows(&tiled, 1), &q_rows(a, 4)), 0.0, "tiled: new head 1 is a's head 4");
    assert_eq!(max_abs(&q_rows(&tiled, 3), &q_rows(b, 0)), 0.0, "tiled: new head 3 is b's head 0");
}

/// Channel sensitivity (METHODS.md §2.5) against the oracle's torch hooks on the same tokens.
#[test]
fn channel_sensitivity_matches_transformers() {
    for (path, name) in [(shared("models/stories260K"), "stories260K"), (smollm2(), "smollm2")] {
        let model = load(&path);
        let fx = &oracle_json(name)["channel_sensitivity"];
        let cfg = CalibrationConfig {
            file: Some(shared("data/text/wikitext2_valid_tokenized.txt")),
            kind: Some(CalibrationKind::Chunked),
            seq_len: Some(fx["calibration"]["seq_len"].as_u64().unwrap() as usize),
            n_samples: Some(fx["calibration"]["n_samples"].as_u64().unwrap() as usize),
            ..Default::default()
        };
        let calib = CalibrationSet::build(
            &model.tokenizer,
            model.max_seq_len(),
            &cfg,
            CalibrationDefaults::GENERIC,
        )
        .unwrap();
        let mut activity = ChannelActivity::new(model.num_layers());
        for batch in calib.batches(2, model.lm.device()).unwrap() {
            model.lm.forward(&model.config, &batch, &mut activity, &|| Ok(())).unwrap();
        }
        for (l, want) in fx["layers"].as_array().unwrap().iter().enumerate() {
            let got = activity.sensitivity(l, model.lm.layers[l].resident().unwrap()).unwrap();
            let close = |g: f32, w: f64, what: String| {
                assert!(
                    (g as f64 - w).abs() <= 1e-4 * w.abs().max(1e-3),
                    "{name} layer {l} {what}: {g} vs {w}"
                );
            };
            for (j, w) in f64s(&want["ffn_first"]).into_iter().enumerate() {
                close(got.ffn[j], w, format!("s_{j}"));
            }
            let sum: f64 = got.ffn.iter().map(|&v| v as f64).sum();
            close(sum as f32, want["ffn_sum"].as_f64().unwrap(), "Σ s_j".into());
            let mut order: Vec<usize> = (0..got.ffn.len()).collect();
            order.sort_by(|&x, &y| got.ffn[y].total_cmp(&got.ffn[x]));
            let top: Vec<u64> = order[..8].iter().map(|&i| i as u64).collect();
            let want_top: Vec<u64> =
                want["ffn_top8"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
            assert_eq!(top, want_top, "{name} layer {l}: the 8 most sensitive FFN channels");
            for (g, w) in f64s(&want["kv_groups"]).into_iter().enumerate() {
                close(got.kv_groups[g], w, format!("s_g{g}"));
            }
        }
    }
}

fn come_request(method: &str, options: serde_json::Value, remove: usize) -> PruneRequest {
    PruneRequest {
        method: method.into(),
        options,
        target: Target { remove_layers: Some(remove), ..Default::default() },
        calibration: CalibrationConfig {
            file: Some(shared("data/text/wikitext2_valid_tokenized.txt")),
            seq_len: Some(64),
            n_samples: Some(4),
            ..Default::default()
        },
        distill: None,
    }
}

#[test]
fn progressive_merges_record_a_tree_and_respect_no_repeat() {
    let model = load(&shared("models/stories260K"));
    let (pruned, summary) =
        prune(&model, &come_request("come", serde_json::Value::Null, 2), &RunContext::new())
            .unwrap();
    assert_eq!(pruned.num_layers(), 3);
    assert_eq!(summary.report.steps.len(), 2);
    let flat: Vec<usize> = pruned.origins.iter().flat_map(Origin::layers).collect();
    assert_eq!(flat, vec![0, 1, 2, 3, 4]);
    // noRepeat: two merges of five layers touch four distinct original layers.
    assert!(pruned.origins.iter().all(|o| o.layers().len() <= 2), "{:?}", pruned.origins);
    // Standard shape: same widths as the original.
    for l in pruned.lm.layers.iter().map(|l| l.resident().unwrap()) {
        assert_eq!(l.mlp.intermediate_size(), 172);
        assert_eq!(l.self_attn.num_kv_heads(), 4);
    }
    // Without noRepeat a third merge may take a merged layer: the record nests.
    let (deep, _) = prune(
        &model,
        &come_request("come", serde_json::json!({"noRepeat": false}), 3),
        &RunContext::new(),
    )
    .unwrap();
    assert_eq!(deep.num_layers(), 2);
    let flat: Vec<usize> = deep.origins.iter().flat_map(Origin::layers).collect();
    assert_eq!(flat, vec![0, 1, 2, 3, 4]);
    let details = &summary.report.steps[0].details.as_ref().unwrap();
    let kept = details["ffnKept"].as_array().unwrap();
    assert_eq!(kept[0].as_u64().unwrap() + kept[1].as_u64().unwrap(), 172);
}

#[test]
fn rescoring_from_the_merged_layer_equals_a_full_rescore() {
    let model = load(&shared("models/stories260K"));
    let run = |cache: bool, budget: Option<usize>| {
        let ctx = match budget {
            Some(bytes) => RunContext::new().with_state_cache_budget(bytes),
            None => RunContext::new(),
        };
        prune(&model, &come_request("come", serde_json::json!({"prefixCache": cache}), 2), &ctx)
            .unwrap()
    };
    let (b, sb) = run(false, None);
    // The full cache, a checkpointed one (a budget of 3 of the 6 inputs h_0…h_5: stride 2 keeps
    // h_0, h_2, h_4) and h_0 alone give the same merges, scores and weights as re-running the whole
    // model each step.
    let per_input = 4 * 64 * model.config.hidden_size * 4; // 4 windows × 64 tokens × d × f32
    for budget in [None, Some(3 * per_input), Some(0)] {
        let (a, sa) = run(true, budget);
        assert_eq!(sa.report.warnings.iter().any(|w| w.contains("state cache")), budget.is_some());
        check_same_run(&a, &sa, &b, &sb);
    }
}

#[test]
fn a_pair_with_the_last_layer_gets_its_statistics_after_a_last_token_rescoring() {
    // Re-scoring runs the last layer at the last tokens only; merging 5 layers down to 1 ends
    // with the pair (0, 1), whose second layer is the last: its BI and channel statistics must
    // then be computed, and equal a full rescore's.
    let model = load(&shared("models/stories260K"));
    let run = |cache: bool| {
        let opts = serde_json::json!({"prefixCache": cache, "noRepeat": false});
        prune(&model, &come_request("come", opts, 4), &RunContext::new()).unwrap()
    };
    let ((a, sa), (b, sb)) = (run(true), run(false));
    assert_eq!(a.num_layers(), 1);
    check_same_run(&a, &sa, &b, &sb);
}

fn check_same_run(a: &Model, sa: &PruneSummary, b: &Model, sb: &PruneSummary) {
    assert_eq!(a.origins, b.origins);
    for (x, y) in sa.report.steps.iter().zip(&sb.report.steps) {
        for (c, d) in x.candidates.iter().zip(&y.candidates) {
            let same =
                c.score == d.score || (c.score - d.score).abs() <= 1e-5 * d.score.abs().max(1.0);
            assert!(same, "{} vs {}", c.score, d.score);
        }
        assert_eq!(x.details, y.details);
    }
    let ids: Vec<u32> = (1..50).collect();
    let logits = |m: &Model| {
        let batch = TokenBatch::new(&[&ids], 0, m.lm.device()).unwrap();
        let h = m.lm.forward(&m.config, &batch, &mut NoObserver, &|| Ok(())).unwrap();
        m.lm.logits(&h).unwrap().to_dtype(DType::F32).unwrap()
    };
    assert_eq!(max_abs(&logits(a), &logits(b)), 0.0);
}

#[test]
fn come_p_keeps_the_ratio_with_the_lowest_calibration_loss() {
    let model = load(&shared("models/stories260K"));
    let (pruned, summary) = prune(
        &model,
        &come_request("come-p", serde_json::json!({"grid": 4}), 1),
        &RunContext::new(),
    )
    .unwrap();
    assert_eq!(pruned.num_layers(), 4);
    let d = summary.report.steps[0].details.as_ref().unwrap();
    let losses: Vec<(f64, f64)> = serde_json::from_value(d["ratioLosses"].clone()).unwrap();
    assert_eq!(losses.iter().map(|l| l.0).collect::<Vec<_>>(), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
    let best = losses.iter().min_by(|x, y| x.1.total_cmp(&y.1)).unwrap().0;
    assert_eq!(d["ratio"].as_f64().unwrap(), best);
}
