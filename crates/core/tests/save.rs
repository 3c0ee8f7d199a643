//! Saving: the round trip through transformers, shards, dtypes, atomicity, and that the input is
//! never touched.

mod common;

use std::path::Path;

use candle_core::{DType, Tensor};
use common::*;
use layerfold_core::model::decoder::{NoObserver, TokenBatch};
use layerfold_core::model::save::{save, SaveDType, SaveOptions};
use layerfold_core::{LoadOptions, Model, RunContext, Stage};
use sha2::Digest;

fn sha256_file(p: &Path) -> String {
    sha2::Sha256::digest(std::fs::read(p).unwrap()).iter().map(|b| format!("{b:02x}")).collect()
}

fn final_logits(model: &Model, ids: &[u32]) -> Tensor {
    let batch = TokenBatch::new(&[ids], 0, model.lm.device()).unwrap();
    let h = model.lm.forward(&model.config, &batch, &mut NoObserver, &|| Ok(())).unwrap();
    model.lm.logits(&h).unwrap().squeeze(0).unwrap()
}

/// `model` saved by layerfold was loaded by transformers (tests/oracle, `--roundtrip`): today's
/// saver must write the same bytes, and layerfold's logits from `model` and from the saved folder
/// must equal transformers' logits from that folder.
fn check_round_trip(model: &Model, fx: &serde_json::Value, input: &Path) {
    let before = sha256_file(input);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("saved");
    save(model, &out, &SaveOptions::default(), &RunContext::new()).unwrap();
    assert_eq!(sha256_file(input), before, "the input was modified");
    assert_eq!(
        sha256_file(&out.join("model.safetensors")),
        fx["weights_sha256"].as_str().unwrap(),
        "the saved weights differ from the ones transformers was checked on: re-run \
         make_fixtures.py --roundtrip on a fresh save if the change is intended"
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    for key in [
        "num_hidden_layers",
        "num_key_value_heads",
        "tie_word_embeddings",
        "rope_theta",
        "model_type",
    ] {
        assert_eq!(config[key], fx["config"][key], "config.json `{key}`");
    }
    let reloaded = load(&out);
    let ids = u32s(&fx["input_ids"]);
    assert_eq!(
        reloaded.tokenizer.encode_with_bos(&reloaded_text_prefix()).unwrap()[..ids.len()],
        ids[..],
        "the saved tokenizer.json tokenizes as transformers did"
    );
    for m in [model, &reloaded] {
        let logits = final_logits(m, &ids).to_dtype(DType::F64).unwrap();
        for row in fx["rows"].as_array().unwrap() {
            let p = row["position"].as_u64().unwrap() as usize;
            let ours = logits.get(p).unwrap().to_vec1::<f64>().unwrap();
            let mut got = ours[..64].to_vec();
            let mut want = f64s(&row["first"]);
            for (id, v) in row["fixed"].as_object().unwrap() {
                got.push(ours[id.parse::<usize>().unwrap()]);
                want.push(v.as_f64().unwrap());
            }
            let err = rel_err(&got, &want);
            assert!(err <= 1e-4, "logits at {p}: relative error {err:e}");
        }
    }
}

#[test]
fn smollm2_round_trip_through_transformers() {
    let gguf = smollm2();
    check_round_trip(&load(&gguf), &oracle_json("smollm2_roundtrip"), &gguf);
}

/// Prunes SmolLM2 as recorded in a round-trip fixture's `layerfold.json` (same method, options,
/// target and calibration), then checks the round trip.
fn check_pruned_round_trip(fixture: &str) {
    use layerfold_core::calib::CalibrationConfig;
    use layerfold_core::methods::{prune, PruneRequest, Target};
    let fx = oracle_json(fixture);
    let recorded = &fx["layerfold_json"];
    let calib = &recorded["calibration"];
    let request = PruneRequest {
        method: recorded["method"].as_str().unwrap().into(),
        options: recorded["options"].clone(),
        target: serde_json::from_value::<Target>(recorded["target"].clone()).unwrap(),
        calibration: CalibrationConfig {
            file: Some(shared("data/text/wikitext2_valid_tokenized.txt")),
            kind: Some(serde_json::from_value(calib["kind"].clone()).unwrap()),
            seq_len: Some(calib["seqLen"].as_u64().unwrap() as usize),
            n_samples: Some(calib["nSamples"].as_u64().unwrap() as usize),
            seed: calib["seed"].as_u64(),
            ..Default::default()
        },
        distill: None,
    };
    let gguf = smollm2();
    let (pruned, summary) = prune(&load(&gguf), &request, &RunContext::new()).unwrap();
    assert!(pruned.num_layers() < 30, "the fixture's target removes layers");
    assert_eq!(serde_json::to_value(&summary.record).unwrap(), recorded["record"]);
    check_round_trip(&pruned, &fx, &gguf);
}

/// A merged (SLM, `top` rule) SmolLM2 saves as a standard checkpoint that transformers runs as
/// layerfold does.
#[test]
fn slm_pruned_smollm2_round_trip_through_transformers() {
    check_pruned_round_trip("smollm2_slm_roundtrip");
}

/// CoMe's concatenated layers (standard shape, GQA-grouped heads) load and run in transformers.
#[test]
fn come_pruned_smollm2_round_trip_through_transformers() {
    check_pruned_round_trip("smollm2_come_roundtrip");
}

/// The start of the WikiText-2 corpus the round-trip fixture tokenized.
fn reloaded_text_prefix() -> String {
    let docs =
        layerfold_core::calib::text::read_documents(&shared("data/text/wikitext2_raw_test.txt"))
            .unwrap();
    layerfold_core::calib::text::join_documents(&docs[..20])
}

#[test]
fn sharded_save_reloads_identically_and_bf16_is_close() {
    let src = shared("models/stories260K");
    let model = load(&src);
    let ids: Vec<u32> = (1..60).collect();
    let want = final_logits(&model, &ids).flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let dir = tempfile::tempdir().unwrap();

    let sharded = dir.path().join("sharded");
    let opts = SaveOptions { max_shard_bytes: 200_000, ..SaveOptions::default() };
    let summary = save(&model, &sharded, &opts, &RunContext::new()).unwrap();
    let shards = summary.files.iter().filter(|f| f.ends_with(".safetensors")).count();
    assert!(shards > 1, "expected several shards, got {:?}", summary.files);
    assert!(summary.files.contains(&"model.safetensors.index.json".to_string()));
    let again =
        final_logits(&load(&sharded), &ids).flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(again, want, "a sharded f32 save must reload bit-identically");

    let half = dir.path().join("bf16");
    save(
        &model,
        &half,
        &SaveOptions { dtype: Some(SaveDType::BF16), ..SaveOptions::default() },
        &RunContext::new(),
    )
    .unwrap();
    let cfg = std::fs::read_to_string(half.join("config.json")).unwrap();
    assert!(cfg.contains("\"torch_dtype\": \"bfloat16\""), "{cfg}");
    let reloaded = Model::load(
        &half,
        &LoadOptions { dtype: DType::BF16, ..LoadOptions::default() },
        &RunContext::new(),
    )
    .unwrap();
    assert_eq!(reloaded.lm.dtype(), DType::BF16);
    let got = final_logits(&reloaded, &ids)
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / scale;
    assert!(err < 0.1, "bf16 logits drift by {err} of the largest logit");
}

#[test]
fn output_is_atomic_and_never_the_input() {
    let src = shared("models/stories260K");
    let model = load(&src);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let err = save(&model, &out, &SaveOptions::default(), &RunContext::new()).unwrap_err();
    assert_eq!(err.code(), "E_OUTPUT_EXISTS");
    assert_eq!(std::fs::read_to_string(out.join("keep.txt")).unwrap(), "mine");

    let err = save(
        &model,
        &src,
        &SaveOptions { force: true, ..SaveOptions::default() },
        &RunContext::new(),
    )
    .unwrap_err();
    assert_eq!(err.code(), "E_CONFIG", "saving over the input must be refused even with force");

    // Cancelled while writing: nothing appears, no temporary folder is left.
    let cancel = layerfold_core::CancelToken::new();
    let c = cancel.clone();
    let ctx = RunContext::new().with_cancel(cancel).with_progress(move |p| {
        if p.stage == Stage::Save {
            c.cancel();
        }
    });
    let target = dir.path().join("cancelled");
    let err = save(&model, &target, &SaveOptions::default(), &ctx).unwrap_err();
    assert_eq!(err.code(), "E_ABORTED");
    let left: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("out")], "only the pre-existing folder remains");

    save(&model, &out, &SaveOptions { force: true, ..SaveOptions::default() }, &RunContext::new())
        .unwrap();
    assert!(out.join("model.safetensors").exists() && !out.join("keep.txt").exists());
}

#[test]
fn same_model_saves_byte_identical_folders() {
    let model = load(&oracle("models/qwen3-tiny"));
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    save(&model, &a, &SaveOptions::default(), &RunContext::new()).unwrap();
    save(&model, &b, &SaveOptions::default(), &RunContext::new()).unwrap();
    for f in std::fs::read_dir(&a).unwrap() {
        let name = f.unwrap().file_name();
        assert_eq!(sha256_file(&a.join(&name)), sha256_file(&b.join(&name)), "{name:?}");
    }
}
