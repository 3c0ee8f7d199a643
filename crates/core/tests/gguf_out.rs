//! GGUF output: layerfold reloads what it writes with the same logits (f32), the metadata has the
//! keys and types llama.cpp reads, Q/K rows are in llama.cpp's order, and a model whose tokenizer
//! GGUF cannot hold is refused before anything is written. That llama.cpp itself runs the files
//! is checked from Node (`test/gguf-out.spec.ts`, node-llama-cpp).

mod common;

use std::io::Cursor;

use candle_core::quantized::gguf_file::{Content, Value};
use common::*;
use layerfold_core::model::decoder::{NoObserver, TokenBatch};
use layerfold_core::model::origin::Origin;
use layerfold_core::model::save::{save, SaveDType, SaveFormat, SaveOptions};
use layerfold_core::{Model, RunContext};

fn logits(model: &Model, ids: &[u32]) -> Vec<f32> {
    let batch = TokenBatch::new(&[ids], 0, model.lm.device()).unwrap();
    let h = model.lm.forward(&model.config, &batch, &mut NoObserver, &|| Ok(())).unwrap();
    model.lm.logits(&h).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn read_content(path: &std::path::Path) -> Content {
    let bytes = std::fs::read(path).unwrap();
    Content::read(&mut Cursor::new(&bytes[..])).unwrap()
}

/// SmolLM2 with every third layer removed (a pruned model), saved as GGUF of `dtype`.
fn pruned_smollm2(dir: &std::path::Path, dtype: SaveDType) -> (Model, std::path::PathBuf) {
    let mut model = load(&smollm2());
    model.remove_layers(&(0..model.num_layers()).filter(|i| i % 3 == 2).collect::<Vec<_>>());
    model.provenance =
        Some(serde_json::json!({ "method": "every-third", "record": model.origins }));
    let out = dir.join(format!("smol-{dtype:?}.gguf"));
    let opts = SaveOptions { dtype: Some(dtype), ..SaveOptions::default() };
    let summary = save(&model, &out, &opts, &RunContext::new()).unwrap();
    assert_eq!(summary.files, vec![format!("smol-{dtype:?}.gguf")]);
    (model, out)
}

#[test]
fn f32_gguf_reloads_with_equal_logits_and_llama_cpp_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (model, out) = pruned_smollm2(dir.path(), SaveDType::F32);
    let reloaded = load(&out);
    assert_eq!(reloaded.num_layers(), 20);
    // The merge record comes back from `layerfold.provenance` (a pruned GGUF can be distilled).
    assert_eq!(reloaded.origins, model.origins);
    assert_ne!(reloaded.origins, (0..20).map(Origin::Layer).collect::<Vec<_>>());
    assert_eq!(reloaded.provenance.as_ref().unwrap()["method"], "every-third");
    let text = "The quick brown fox jumps over the lazy dog. 12345";
    let ids = model.tokenizer.encode_with_bos(text).unwrap();
    assert_eq!(reloaded.tokenizer.encode_with_bos(text).unwrap(), ids, "the tokenizer survives");
    let (a, b) = (logits(&model, &ids), logits(&reloaded, &ids));
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert_eq!(worst, 0.0, "f32 GGUF logits differ by {worst}");

    let content = read_content(&out);
    let meta = &content.metadata;
    let u32_of = |k: &str| match meta.get(k) {
        Some(Value::U32(v)) => *v,
        other => panic!("`{k}` is {other:?}, not a u32"),
    };
    let f32_of = |k: &str| match meta.get(k) {
        Some(Value::F32(v)) => *v,
        other => panic!("`{k}` is {other:?}, not an f32"),
    };
    assert!(matches!(meta.get("general.architecture"), Some(Value::String(s)) if s == "llama"));
    assert_eq!(u32_of("llama.block_count"), 20);
    assert_eq!(u32_of("llama.embedding_length"), 576);
    assert_eq!(u32_of("llama.attention.head_count"), 9);
    assert_eq!(u32_of("llama.attention.head_count_kv"), 3);
    assert_eq!(u32_of("llama.rope.dimension_count"), 64);
    assert_eq!(u32_of("llama.context_length"), model.config.max_position_embeddings as u32);
    assert_eq!(u32_of("general.file_type"), 0);
    assert_eq!(f32_of("llama.rope.freq_base"), model.config.rope_theta as f32);
    assert_eq!(f32_of("llama.attention.layer_norm_rms_epsilon"), model.config.rms_norm_eps as f32);
    // The input was a GGUF: its tokenizer metadata is copied as it was.
    let input = read_content(&smollm2());
    for (k, v) in input.metadata.iter().filter(|(k, _)| k.starts_with("tokenizer.")) {
        assert_eq!(format!("{:?}", meta[k]), format!("{v:?}"), "`{k}` is not the input's");
    }
    // Q rows in llama.cpp's order: the same bytes as the input file's first layer.
    let bytes = std::fs::read(&out).unwrap();
    let dev = candle_core::Device::Cpu;
    let ours = content.tensor(&mut Cursor::new(&bytes[..]), "blk.0.attn_q.weight", &dev).unwrap();
    let input_bytes = std::fs::read(smollm2()).unwrap();
    let theirs =
        input.tensor(&mut Cursor::new(&input_bytes[..]), "blk.0.attn_q.weight", &dev).unwrap();
    let diff = (ours.dequantize(&dev).unwrap() - theirs.dequantize(&dev).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(diff, 0.0, "attn_q rows are not in llama.cpp's order");
}

#[test]
fn f16_and_q8_0_hold_their_types_and_stay_close() {
    let dir = tempfile::tempdir().unwrap();
    // Tolerances on max |Δ logit| / max |logit| over 8 positions of the 20-layer model: f16
    // rounds weights to 2^-11 of themselves (measured 3.4e-3), Q8_0 to 1/254 of each 32-value
    // block's largest magnitude, about 26x f16's rms error on Gaussian weights (measured 9.4e-2).
    for (dtype, ftype, tol) in [(SaveDType::F16, 1, 1e-2f32), (SaveDType::Q8_0, 7, 0.2)] {
        let (model, out) = pruned_smollm2(dir.path(), dtype);
        let content = read_content(&out);
        assert!(
            matches!(content.metadata.get("general.file_type"), Some(Value::U32(v)) if *v == ftype)
        );
        let want = if dtype == SaveDType::F16 { "F16" } else { "Q8_0" };
        for (name, info) in &content.tensor_infos {
            let t = format!("{:?}", info.ggml_dtype);
            if info.shape.rank() == 1 {
                assert_eq!(t, "F32", "{name}: vectors stay F32");
            } else {
                assert_eq!(t, want, "{name}");
            }
        }
        let ids = model.tokenizer.encode_with_bos("Once upon a time there was a").unwrap();
        let (a, b) = (logits(&model, &ids), logits(&load(&out), &ids));
        let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / scale;
        println!("{dtype:?}: max |Δ logit| / max |logit| = {worst:.2e}");
        assert!(
            worst < tol,
            "{dtype:?}: logits differ by {worst} of their scale (tolerance {tol})"
        );
    }
}

#[test]
fn hf_folder_with_byte_level_bpe_writes_its_tokenizer() {
    // SmolLM2 as a Hugging Face folder (what `convert` writes): the tokenizer comes from
    // tokenizer.json this time, not from GGUF metadata.
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("hf");
    let gguf_model = load(&smollm2());
    save(&gguf_model, &folder, &SaveOptions::default(), &RunContext::new()).unwrap();
    let model = load(&folder);
    let out = dir.path().join("from-hf.gguf");
    save(&model, &out, &SaveOptions::default(), &RunContext::new()).unwrap();
    let reloaded = load(&out);
    let text = "Hello world!\n  Numbers 2024, symbols <>&; émigré";
    assert_eq!(
        reloaded.tokenizer.encode(text).unwrap(),
        model.tokenizer.encode(text).unwrap(),
        "the tokenizer rebuilt from the written metadata tokenizes as tokenizer.json does"
    );
    let ids = model.tokenizer.encode_with_bos(text).unwrap();
    assert_eq!(logits(&model, &ids), logits(&reloaded, &ids));
    let content = read_content(&out);
    let types = match content.metadata.get("tokenizer.ggml.token_type") {
        Some(Value::Array(a)) => a.clone(),
        other => panic!("token types: {other:?}"),
    };
    assert_eq!(types.len(), model.config.vocab_size);
    let eos = model.config.eos_token_ids[0] as usize;
    assert!(matches!(types[eos], Value::I32(3)), "EOS is a control token: {:?}", types[eos]);
}

#[test]
fn refuses_what_gguf_cannot_hold_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // stories260K's tokenizer is sentencepiece-style BPE with byte fallback.
    let model = load(&shared("models/stories260K"));
    let out = dir.path().join("stories.gguf");
    let err = save(&model, &out, &SaveOptions::default(), &RunContext::new()).unwrap_err();
    assert_eq!(err.code(), "E_UNSUPPORTED", "{err}");
    assert!(err.to_string().contains("byte fallback"), "{err}");
    // Types that do not fit the format.
    for (format, dtype, path) in [
        (None, SaveDType::BF16, "x.gguf"),
        (Some(SaveFormat::Safetensors), SaveDType::Q8_0, "x"),
        (None, SaveDType::Q8_0, "folder"),
    ] {
        let opts = SaveOptions { format, dtype: Some(dtype), ..SaveOptions::default() };
        let err = save(&model, &dir.path().join(path), &opts, &RunContext::new()).unwrap_err();
        assert_eq!(err.code(), "E_CONFIG", "{err}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing was written");
}
