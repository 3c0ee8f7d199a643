//! Bad input gets a clear error with a stable code, and nothing is lost.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use layerfold_core::calib::text::TextSource;
use layerfold_core::eval::perplexity::{perplexity, PerplexityOptions};
use layerfold_core::{Error, LoadOptions, Model, RunContext};

fn try_load(path: &Path) -> Result<Model, Error> {
    Model::load(path, &LoadOptions::default(), &RunContext::new())
}

/// A copy of stories260K in a temporary folder, to damage.
fn stories_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("stories");
    std::fs::create_dir(&copy).unwrap();
    for f in std::fs::read_dir(shared("models/stories260K")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
    }
    (dir, copy)
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&p, serde_json::to_string(&cfg).unwrap()).unwrap();
}

#[test]
fn missing_inputs_are_not_found() {
    assert_eq!(try_load(Path::new("/no/such/model")).unwrap_err().code(), "E_NOT_FOUND");
    let (_d, copy) = stories_copy();
    std::fs::remove_file(copy.join("tokenizer.json")).unwrap();
    let e = try_load(&copy).unwrap_err();
    assert_eq!(e.code(), "E_NOT_FOUND");
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
    std::fs::remove_file(copy.join("config.json")).unwrap();
    assert!(try_load(&copy).unwrap_err().to_string().contains("config.json"));
}

#[test]
fn truncated_safetensors_is_a_format_error() {
    let (_d, copy) = stories_copy();
    let f = copy.join("model.safetensors");
    let len = std::fs::metadata(&f).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&f).unwrap().set_len(len - 100).unwrap();
    let e = try_load(&copy).unwrap_err();
    assert_eq!(e.code(), "E_MODEL_FORMAT");
    assert!(e.to_string().contains("model.safetensors"), "{e}");
}

#[test]
fn bad_safetensors_header_is_a_format_error() {
    let (_d, copy) = stories_copy();
    let f = copy.join("model.safetensors");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[8..16].copy_from_slice(b"{garbage");
    std::fs::write(&f, bytes).unwrap();
    assert_eq!(try_load(&copy).unwrap_err().code(), "E_MODEL_FORMAT");
}

#[test]
fn config_that_disagrees_with_weights_names_the_tensor() {
    let (_d, copy) = stories_copy();
    edit_config(&copy, |c| c["intermediate_size"] = 170.into());
    let e = try_load(&copy).unwrap_err();
    assert_eq!(e.code(), "E_MODEL_FORMAT");
    assert!(e.to_string().contains("mlp.gate_proj.weight") && e.to_string().contains("170"), "{e}");

    // More layers than the weights hold, fewer, or absurdly many: both numbers are named, and
    // nothing is allocated for layers that do not exist.
    for layers in [6usize, 4, 1_000_000_000] {
        let (_d2, copy) = stories_copy();
        edit_config(&copy, |c| c["num_hidden_layers"] = layers.into());
        let e = try_load(&copy).unwrap_err();
        assert_eq!(e.code(), "E_MODEL_FORMAT", "{layers}: {e}");
        let text = e.to_string();
        assert!(text.contains(&format!("says {layers} layers")) && text.contains("hold 5"), "{e}");
    }
}

#[test]
fn non_finite_weights_are_named_with_their_count() {
    let (_d, copy) = stories_copy();
    let f = copy.join("model.safetensors");
    let mut bytes = std::fs::read(&f).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let meta: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header]).unwrap();
    let start = meta["model.norm.weight"]["data_offsets"][0].as_u64().unwrap() as usize;
    let at = 8 + header + start;
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    bytes[at + 4..at + 8].copy_from_slice(&f32::INFINITY.to_le_bytes());
    std::fs::write(&f, bytes).unwrap();
    let e = try_load(&copy).unwrap_err();
    assert_eq!(e.code(), "E_MODEL_FORMAT");
    assert!(
        e.to_string().contains("model.norm.weight") && e.to_string().contains("holds 2 non-finite"),
        "{e}"
    );
}

#[test]
fn shard_index_may_not_leave_the_model_folder() {
    let (dir, copy) = stories_copy();
    std::fs::rename(copy.join("model.safetensors"), dir.path().join("outside.safetensors"))
        .unwrap();
    let f = std::fs::read(dir.path().join("outside.safetensors")).unwrap();
    let header = u64::from_le_bytes(f[..8].try_into().unwrap()) as usize;
    let meta: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&f[8..8 + header]).unwrap();
    let map: serde_json::Map<String, serde_json::Value> = meta
        .keys()
        .filter(|k| *k != "__metadata__")
        .map(|k| (k.clone(), "../outside.safetensors".into()))
        .collect();
    std::fs::write(
        copy.join("model.safetensors.index.json"),
        serde_json::json!({"weight_map": map}).to_string(),
    )
    .unwrap();
    let e = try_load(&copy).unwrap_err();
    assert_eq!(e.code(), "E_MODEL_FORMAT");
    assert!(e.to_string().contains("../outside.safetensors"), "{e}");
}

#[test]
fn unsupported_architecture_and_rope() {
    let (_d, copy) = stories_copy();
    edit_config(&copy, |c| c["model_type"] = "gpt_neox".into());
    let e = try_load(&copy).unwrap_err();
    assert_eq!(e.code(), "E_UNSUPPORTED");
    assert!(e.to_string().contains("gpt_neox"), "{e}");
    let (_d2, copy) = stories_copy();
    edit_config(&copy, |c| {
        c["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0})
    });
    assert_eq!(try_load(&copy).unwrap_err().code(), "E_UNSUPPORTED");
}

/// A minimal GGUF v3: one metadata string and one 1-D tensor of ggml type `dtype`.
fn tiny_gguf(arch: &str, dtype: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes()); // tensors
    b.extend_from_slice(&1u64.to_le_bytes()); // metadata entries
    let string = |b: &mut Vec<u8>, s: &str| {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    };
    string(&mut b, "general.architecture");
    b.extend_from_slice(&8u32.to_le_bytes()); // string type
    string(&mut b, arch);
    string(&mut b, "token_embd.weight");
    b.extend_from_slice(&1u32.to_le_bytes()); // dims
    b.extend_from_slice(&32u64.to_le_bytes());
    b.extend_from_slice(&dtype.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes()); // offset
    while b.len() % 32 != 0 {
        b.push(0);
    }
    b.extend_from_slice(&[0u8; 128]);
    b
}

#[test]
fn gguf_errors() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let e = try_load(&write("unknown-quant.gguf", &tiny_gguf("llama", 99))).unwrap_err();
    assert_eq!(e.code(), "E_UNSUPPORTED");
    assert!(e.to_string().contains("quantisation type 99"), "{e}");

    let e = try_load(&write("gpt2.gguf", &tiny_gguf("gpt2", 0))).unwrap_err();
    assert_eq!(e.code(), "E_UNSUPPORTED");
    assert!(e.to_string().contains("gpt2"), "{e}");

    let e = try_load(&write("junk.gguf", b"GGUF\x03\x00\x00\x00garbage")).unwrap_err();
    assert_eq!(e.code(), "E_MODEL_FORMAT");
    let e = try_load(&write("empty.gguf", b"")).unwrap_err();
    assert_eq!(e.code(), "E_MODEL_FORMAT");
    let e = try_load(&write("not.gguf", b"PK\x03\x04 not a gguf at all")).unwrap_err();
    assert_eq!(e.code(), "E_MODEL_FORMAT");

    // The real file cut in half: the header parses, the tensor data runs past the end.
    let full = std::fs::read(smollm2()).unwrap();
    let e = try_load(&write("half.gguf", &full[..full.len() / 2])).unwrap_err();
    assert_eq!(e.code(), "E_MODEL_FORMAT");
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn perplexity_rejects_bad_text_and_window_sizes() {
    let model = load(&shared("models/stories260K"));
    let ctx = RunContext::new();
    let ppl = |source: TextSource, seq_len: Option<usize>| {
        perplexity(&model, &source, &PerplexityOptions { seq_len, ..Default::default() }, &ctx)
    };
    let e = ppl(TextSource::Text(" \n\t\r\n".into()), None).unwrap_err();
    assert_eq!(e.code(), "E_DATA");
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let e = ppl(TextSource::File(empty.clone()), None).unwrap_err();
    assert_eq!(e.code(), "E_DATA");
    assert!(e.to_string().contains("empty.txt"), "{e}");
    assert_eq!(
        ppl(TextSource::File(dir.path().join("nope.txt")), None).unwrap_err().code(),
        "E_NOT_FOUND"
    );
    let e = ppl(TextSource::Text("Once upon a time".into()), Some(0)).unwrap_err();
    assert_eq!(e.code(), "E_CONFIG");
    let e = ppl(TextSource::Text("Once upon a time".into()), Some(513)).unwrap_err();
    assert_eq!(e.code(), "E_CONFIG");
    assert!(e.to_string().contains("512"), "{e}");
    // Shorter than one window: evaluated whole, with a warning.
    let r = ppl(TextSource::Text("Once upon a time there was a cat.".into()), Some(256)).unwrap();
    assert_eq!(r.windows, 1);
    assert_eq!(r.warnings.len(), 1);
}
