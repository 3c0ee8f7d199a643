//! layerfold against the PyTorch/transformers oracle (tests/oracle/make_fixtures.py): token ids,
//! logits, per-layer hidden-state norms and perplexity, for stories260K, SmolLM2-135M (GGUF Q4_1)
//! and tiny seeded Qwen2, Qwen3, Mistral and Llama-3 models.
//!
//! Tolerances (f32 on the CPU): token ids exact; logits within 1e-4 of the row's largest
//! magnitude; hidden-state norms within 1e-4 relative; perplexity within 1e-4 relative.

mod common;

use candle_core::{DType, Tensor};
use common::*;
use layerfold_core::calib::text::TextSource;
use layerfold_core::eval::perplexity::{perplexity, PerplexityOptions};
use layerfold_core::model::decoder::{NoObserver, Observer, TokenBatch, TokenMask};
use layerfold_core::model::packed::Packing;
use layerfold_core::{Model, RunContext};

/// Per-position L2 norms of every `h_i` and of `ĥ`.
#[derive(Default)]
struct Norms {
    layers: Vec<Vec<f64>>,
    post: Vec<f64>,
}

fn row_norms(h: &Tensor) -> Vec<f64> {
    let n = h.to_dtype(DType::F64).unwrap().sqr().unwrap().sum(2).unwrap().sqrt().unwrap();
    n.squeeze(0).unwrap().to_vec1::<f64>().unwrap()
}

impl Observer for Norms {
    fn hidden_state(&mut self, i: usize, h: &Tensor, _: &TokenMask) -> layerfold_core::Result<()> {
        assert_eq!(i, self.layers.len(), "hidden states arrive in layer order");
        self.layers.push(row_norms(h));
        Ok(())
    }
    fn final_state(&mut self, h: &Tensor, _: &TokenMask) -> layerfold_core::Result<()> {
        self.post = row_norms(h);
        Ok(())
    }
}

fn check_model(model: &Model, fx: &serde_json::Value) {
    // Token ids of individual texts.
    for case in fx["tokenize"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(model.tokenizer.encode(text).unwrap(), u32s(&case["ids"]), "ids of {text:?}");
    }
    // Logits and hidden norms on one input.
    let ids = u32s(&fx["logits"]["input_ids"]);
    let batch = TokenBatch::new(&[&ids], 0, model.lm.device()).unwrap();
    let mut norms = Norms::default();
    let h = model.lm.forward(&model.config, &batch, &mut norms, &|| Ok(())).unwrap();
    let logits = model.lm.logits(&h).unwrap().squeeze(0).unwrap().to_dtype(DType::F64).unwrap();
    for row in fx["logits"]["rows"].as_array().unwrap() {
        let p = row["position"].as_u64().unwrap() as usize;
        let ours = logits.get(p).unwrap().to_vec1::<f64>().unwrap();
        let argmax = ours.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert_eq!(argmax as u64, row["argmax"].as_u64().unwrap(), "argmax at {p}");
        let lse = ours.iter().fold(f64::NEG_INFINITY, |m, v| m.max(*v));
        let lse = lse + ours.iter().map(|v| (v - lse).exp()).sum::<f64>().ln();
        let ref_lse = row["logsumexp"].as_f64().unwrap();
        assert!(
            (lse - ref_lse).abs() <= 1e-4 * ref_lse.abs().max(1.0),
            "logsumexp at {p}: {lse} vs {ref_lse}"
        );
        let (got, want): (Vec<f64>, Vec<f64>) = if let Some(values) = row.get("values") {
            (ours.clone(), f64s(values))
        } else {
            let first = f64s(&row["first"]);
            let mut got = ours[..first.len()].to_vec();
            let mut want = first;
            for (id, v) in row["fixed"].as_object().unwrap() {
                got.push(ours[id.parse::<usize>().unwrap()]);
                want.push(v.as_f64().unwrap());
            }
            (got, want)
        };
        let err = rel_err(&got, &want);
        assert!(err <= 1e-4, "logits at position {p}: relative error {err:e}");
    }
    let want_layers = fx["hidden_norms"]["layers"].as_array().unwrap();
    assert_eq!(norms.layers.len(), want_layers.len(), "h_0..h_L count");
    for (i, (got, want)) in norms.layers.iter().zip(want_layers).enumerate() {
        let want = f64s(want);
        for (p, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-4 * w.abs().max(1e-6), "‖h_{i}‖ at {p}: {g} vs {w}");
        }
    }
    let want_post = f64s(&fx["hidden_norms"]["post_norm"]);
    for (p, (g, w)) in norms.post.iter().zip(&want_post).enumerate() {
        assert!((g - w).abs() <= 1e-4 * w.abs(), "‖ĥ‖ at {p}: {g} vs {w}");
    }
}

fn check_corpus_and_perplexity(model: &Model, fx: &serde_json::Value) {
    let docs =
        layerfold_core::calib::text::read_documents(&shared("data/text/wikitext2_raw_test.txt"))
            .unwrap();
    let corpus = &fx["corpus"];
    assert_eq!(docs.len() as u64, corpus["documents"].as_u64().unwrap(), "document count");
    let ids = model
        .tokenizer
        .encode_with_bos(&layerfold_core::calib::text::join_documents(&docs))
        .unwrap();
    assert_eq!(ids.len() as u64, corpus["tokens"].as_u64().unwrap(), "corpus token count");
    let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    assert_eq!(sha256_hex(&bytes), corpus["sha256_u32le"].as_str().unwrap(), "corpus ids digest");

    let want = &fx["perplexity"];
    let opts = PerplexityOptions {
        seq_len: Some(want["seq_len"].as_u64().unwrap() as usize),
        max_windows: Some(want["windows"].as_u64().unwrap() as usize),
        batch_size: Some(2),
    };
    let source = TextSource::File(shared("data/text/wikitext2_raw_test.txt"));
    let got = perplexity(model, &source, &opts, &RunContext::new()).unwrap();
    assert_eq!(got.tokens as u64, want["tokens"].as_u64().unwrap());
    let ppl = want["ppl"].as_f64().unwrap();
    assert!((got.ppl - ppl).abs() <= 1e-4 * ppl, "perplexity {} vs {ppl}", got.ppl);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn stories260k_matches_transformers() {
    let model = load(&shared("models/stories260K"));
    let fx = oracle_json("stories260K");
    check_model(&model, &fx);
    check_corpus_and_perplexity(&model, &fx);
}

#[test]
fn smollm2_gguf_matches_transformers() {
    let model = load(&smollm2());
    assert_eq!(model.num_layers(), 30);
    assert_eq!((model.config.num_attention_heads, model.config.num_key_value_heads), (9, 3));
    let fx = oracle_json("smollm2");
    check_model(&model, &fx);
    check_corpus_and_perplexity(&model, &fx);
}

#[test]
fn tiny_architectures_match_transformers() {
    for name in ["qwen2-tiny", "qwen3-tiny", "mistral-tiny", "llama3-tiny"] {
        let model = load(&oracle(&format!("models/{name}")));
        let fx = oracle_json(name);
        check_model(&model, &fx);
        check_corpus_and_perplexity(&model, &fx);
    }
}

#[test]
fn padded_batch_equals_single_sequences() {
    let model = load(&oracle("models/mistral-tiny"));
    let a: Vec<u32> = (1..40).collect();
    let b: Vec<u32> = (5..25).collect();
    let single = |ids: &[u32]| {
        let batch = TokenBatch::new(&[ids], 0, model.lm.device()).unwrap();
        model
            .lm
            .forward(&model.config, &batch, &mut NoObserver, &|| Ok(()))
            .unwrap()
            .squeeze(0)
            .unwrap()
    };
    let batch = TokenBatch::new(&[&a, &b], 0, model.lm.device()).unwrap();
    let both = model.lm.forward(&model.config, &batch, &mut NoObserver, &|| Ok(())).unwrap();
    for (row, ids) in [&a, &b].iter().enumerate() {
        let want = single(ids).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got = both
            .get(row)
            .unwrap()
            .narrow(0, 0, ids.len())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let err = got.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(err < 1e-5, "row {row}: padded batch differs by {err}");
    }
}

/// A packed pass ([`Packing`]: no padding, sequences that continue an earlier one as from a KV
/// cache) gives each row the state the sequence's own full pass gives it. mistral-tiny's sliding
/// window is shorter than the longest sequence, so the window is checked across the join too.
#[test]
fn packed_sequences_equal_single_sequences() {
    let model = load(&oracle("models/mistral-tiny"));
    let single = |ids: &[u32]| -> Vec<Vec<f32>> {
        let batch = TokenBatch::new(&[ids], 0, model.lm.device()).unwrap();
        let h = model.lm.forward(&model.config, &batch, &mut NoObserver, &|| Ok(())).unwrap();
        h.squeeze(0).unwrap().to_vec2::<f32>().unwrap()
    };
    let context: Vec<u32> = (1..40).collect();
    let (first, second, alone): (Vec<u32>, Vec<u32>, Vec<u32>) =
        ((40..60).collect(), (70..75).collect(), (5..25).collect());
    let sequences: Vec<(&[u32], Option<usize>)> =
        vec![(&context, None), (&first, Some(0)), (&alone, None), (&second, Some(0))];
    let packing = Packing::new(&model.lm, &model.config, &sequences).unwrap();
    let h = model.lm.forward_packed(&packing, &|| Ok(())).unwrap().to_vec2::<f32>().unwrap();
    let joined = |rest: &[u32]| [context.as_slice(), rest].concat();
    let cases = [
        (0, single(&context)),
        (1, single(&joined(&first))[context.len()..].to_vec()),
        (2, single(&alone)),
        (3, single(&joined(&second))[context.len()..].to_vec()),
    ];
    for (j, want) in cases {
        let got = &h[packing.span(j)];
        assert_eq!(got.len(), want.len(), "sequence {j}: rows");
        let err = got
            .iter()
            .flatten()
            .zip(want.iter().flatten())
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-5, "sequence {j}: packed pass differs by {err}");
    }
    let err = Packing::new(&model.lm, &model.config, &[(&context, Some(1)), (&first, None)]);
    assert_eq!(err.unwrap_err().code(), "E_INTERNAL");
}

/// BI and angular distance (METHODS.md §2.1, §2.2) on a chunked calibration set, against the
/// oracle's values from transformers' hidden states: within 1e-4 (absolute for means in [0, 1],
/// relative for CoMe's sums).
fn check_layer_scores(model: &Model, fx: &serde_json::Value) {
    use layerfold_core::calib::{
        CalibrationConfig, CalibrationDefaults, CalibrationKind, CalibrationSet,
    };
    use layerfold_core::model::decoder::Observers;
    use layerfold_core::score::angular::LastTokenStates;
    use layerfold_core::score::bi::{BlockInfluence, LastState};

    let fx = &fx["scores"];
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
    assert_eq!(calib.summary.tokens as u64, fx["calibration"]["tokens"].as_u64().unwrap());
    let n = model.num_layers();
    let mut bi = BlockInfluence::new(n, LastState::PostNorm);
    let mut last = LastTokenStates::new(n);
    for batch in calib.batches(2, model.lm.device()).unwrap() {
        let mut both = Observers(vec![&mut bi, &mut last]);
        model.lm.forward(&model.config, &batch, &mut both, &|| Ok(())).unwrap();
    }
    let close = |got: f64, want: f64, what: &str| {
        assert!((got - want).abs() <= 1e-4, "{what}: {got} vs {want}")
    };
    let rel = |got: f64, want: f64, what: &str| {
        assert!((got - want).abs() <= 1e-4 * want.abs().max(1.0), "{what}: {got} vs {want}")
    };
    for (i, (g, w)) in bi.mean().iter().zip(f64s(&fx["bi_mean"])).enumerate() {
        close(*g, w, &format!("BI_{i}"));
    }
    for (i, (g, w)) in bi.come_sum().iter().zip(f64s(&fx["bi_come_sum"])).enumerate() {
        rel(*g, w, &format!("CoMe BI_{i}"));
    }
    for (k, values) in fx["angular"].as_object().unwrap() {
        let k: usize = k.parse().unwrap();
        for (l, w) in f64s(&values["mean"]).into_iter().enumerate() {
            close(last.distance(l, k), w, &format!("D({l}, {k})"));
        }
        for (l, w) in f64s(&values["come_sum"]).into_iter().enumerate() {
            rel(last.come_distance(l, k), w, &format!("CoMe D({l}, {k})"));
        }
    }
}

#[test]
fn layer_scores_match_transformers() {
    check_layer_scores(&load(&shared("models/stories260K")), &oracle_json("stories260K"));
    check_layer_scores(&load(&smollm2()), &oracle_json("smollm2"));
}
