//! Writing a model as one GGUF file that llama.cpp runs: the metadata its own converter
//! (`convert_hf_to_gguf.py`) writes for the architecture, the tokenizer, and the weights
//! quantized by candle's quantizer and written by candle's GGUF writer.
//!
//! llama.cpp reads the `llama` architecture with interleaved RoPE, so its converter permutes the
//! rows of Q and K; they are permuted here the same way (the reader undoes it, `gguf::GgufFile`).
//! Qwen2 and Qwen3 use llama.cpp's NEOX RoPE, which is HF's own layout: no permutation.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::context::{RunContext, Stage};
use crate::error::{Error, Result};
use crate::model::config::Architecture;
use crate::model::gguf::{self, GgufFile};
use crate::model::{Model, SourceFormat};
use crate::output::OutputTarget;

/// The tensor type of a GGUF output's matrices. Vectors (norms, biases) are always F32, as in
/// llama.cpp's converter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufType {
    F32,
    F16,
    Q8_0,
}

impl GgufType {
    fn ggml(self) -> GgmlDType {
        match self {
            Self::F32 => GgmlDType::F32,
            Self::F16 => GgmlDType::F16,
            Self::Q8_0 => GgmlDType::Q8_0,
        }
    }

    /// `general.file_type` (llama.cpp `llama_ftype`: ALL_F32, MOSTLY_F16, MOSTLY_Q8_0).
    fn file_type(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q8_0 => 7,
        }
    }
}

/// llama.cpp's token types (`llama_token_type`).
const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;
const TOKEN_UNUSED: i32 = 5;

/// Writes `model` to the file `out` atomically; returns the bytes of tensor data written.
pub fn save(
    model: &Model,
    out: &Path,
    ty: GgufType,
    force: bool,
    ctx: &RunContext,
) -> Result<(PathBuf, u64)> {
    // Everything is built before the file is created: a model llama.cpp cannot read is refused
    // without leaving anything behind.
    let arch = gguf_architecture(model.config.architecture);
    let mut metadata = model_metadata(model, arch, ty);
    metadata.extend(tokenizer_metadata(model)?);
    let tensors = quantized_tensors(model, ty, ctx)?;
    let bytes = tensors.iter().map(|(_, t)| t.storage_size_in_bytes() as u64).sum();
    ctx.check_cancelled()?;
    let meta_refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let path = OutputTarget::write_file_with(out, &model.inputs, force, |file| {
        let mut w = BufWriter::new(file);
        candle_core::quantized::gguf_file::write(&mut w, &meta_refs, &tensor_refs)
            .map_err(|e| write_error(out, e))?;
        w.flush().map_err(|e| Error::io(out, e))
    })?;
    ctx.report(Stage::Save, 1, 1);
    Ok((path, bytes))
}

/// candle's writer reports I/O failures (a full disk) as its own error; keep their kind.
fn write_error(out: &Path, e: candle_core::Error) -> Error {
    match e {
        candle_core::Error::Io(io) => Error::io(out, io),
        other => Error::from(other),
    }
}

/// llama.cpp's architecture name: Mistral is written as `llama`, as its converter does.
fn gguf_architecture(a: Architecture) -> &'static str {
    match a {
        Architecture::Llama | Architecture::Mistral => "llama",
        Architecture::Qwen2 => "qwen2",
        Architecture::Qwen3 => "qwen3",
    }
}

fn u32_value(n: usize) -> Value {
    Value::U32(u32::try_from(n).expect("sizes are checked to be at most 2^24 on load"))
}

/// The `general.*` and `{arch}.*` keys, in the types llama.cpp reads (`gguf-py` `GGUFWriter`).
fn model_metadata(model: &Model, arch: &str, ty: GgufType) -> Vec<(String, Value)> {
    let c = &model.config;
    let name = model
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let key = |k: &str| format!("{arch}.{k}");
    let mut m = vec![
        ("general.architecture".to_string(), Value::String(arch.into())),
        ("general.name".to_string(), Value::String(name)),
        ("general.file_type".to_string(), Value::U32(ty.file_type())),
        ("general.quantization_version".to_string(), Value::U32(2)),
        (key("block_count"), u32_value(model.num_layers())),
        (key("context_length"), u32_value(c.max_position_embeddings)),
        (key("embedding_length"), u32_value(c.hidden_size)),
        (key("feed_forward_length"), u32_value(c.intermediate_size)),
        (key("attention.head_count"), u32_value(c.num_attention_heads)),
        (key("attention.head_count_kv"), u32_value(c.num_key_value_heads)),
        (key("rope.freq_base"), Value::F32(c.rope_theta as f32)),
        (key("attention.layer_norm_rms_epsilon"), Value::F32(c.rms_norm_eps as f32)),
        (key("rope.dimension_count"), u32_value(c.head_dim)),
        (key("attention.key_length"), u32_value(c.head_dim)),
        (key("attention.value_length"), u32_value(c.head_dim)),
        (key("vocab_size"), u32_value(c.vocab_size)),
    ];
    if let Some(p) = &model.provenance {
        // What a folder keeps in layerfold.json: the method, its record and report.
        m.push(("layerfold.provenance".to_string(), Value::String(p.to_string())));
    }
    if let (Architecture::Mistral, Some(w)) = (c.architecture, c.sliding_window) {
        // Kept for readers that know it; llama.cpp's `llama` architecture ignores it.
        m.push((key("attention.sliding_window"), u32_value(w)));
    }
    m
}

/// The tokenizer: a GGUF input's own `tokenizer.*` metadata verbatim, or the one llama.cpp's
/// converter writes for a byte-level BPE `tokenizer.json` (`get_vocab_base`).
fn tokenizer_metadata(model: &Model) -> Result<Vec<(String, Value)>> {
    if model.format == SourceFormat::Gguf {
        return Ok(GgufFile::open(&model.path)?.tokenizer_metadata());
    }
    let unsupported = |why: String| {
        Error::unsupported(
            format!("writing the tokenizer of `{}` to GGUF: {why}", model.tokenizer.path.display()),
            "GGUF output writes byte-level BPE (`gpt2`) tokenizers; save as a Hugging Face folder \
             and convert it with llama.cpp's convert_hf_to_gguf.py",
        )
    };
    let json: serde_json::Value = serde_json::from_str(&model.tokenizer.to_json()?)
        .map_err(|e| Error::Internal(format!("tokenizer JSON: {e}")))?;
    let bpe = &json["model"];
    if bpe["type"] != "BPE" {
        return Err(unsupported(format!("its model is {}, not BPE", bpe["type"])));
    }
    if bpe["byte_fallback"] == true {
        return Err(unsupported("it is a sentencepiece-style BPE with byte fallback".into()));
    }
    let pre = pre_tokenizer_name(&json["pre_tokenizer"]).ok_or_else(|| {
        unsupported(format!("its pre-tokenizer {} has no llama.cpp name", json["pre_tokenizer"]))
    })?;
    // Tokens by id, every id of the embedding: ids without a token are `[PAD{i}]`, unused.
    let rows = model.config.vocab_size;
    let mut tokens: Vec<Option<(String, i32)>> = vec![None; rows];
    let mut place = |id: u64, token: &str, kind: i32| {
        if let Some(slot) = usize::try_from(id).ok().and_then(|i| tokens.get_mut(i)) {
            *slot = Some((token.to_string(), kind));
        }
    };
    for (token, id) in bpe["vocab"].as_object().into_iter().flatten() {
        place(id.as_u64().unwrap_or(u64::MAX), token, TOKEN_NORMAL);
    }
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        let kind = if added["special"] == true { TOKEN_CONTROL } else { TOKEN_USER_DEFINED };
        if let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str()) {
            place(id, content, kind);
        }
    }
    let (names, kinds): (Vec<Value>, Vec<Value>) = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let (name, kind) = t.unwrap_or_else(|| (format!("[PAD{i}]"), TOKEN_UNUSED));
            (Value::String(name), Value::I32(kind))
        })
        .unzip();
    // tokenizers writes merges as "a b" (older files) or as ["a", "b"].
    let merges = bpe["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match m {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(p) => {
                Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_str()?))
            }
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| unsupported("a merge is neither \"a b\" nor [a, b]".into()))?;
    let mut m = vec![
        ("tokenizer.ggml.model".to_string(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".to_string(), Value::String(pre.into())),
        ("tokenizer.ggml.tokens".to_string(), Value::Array(names)),
        ("tokenizer.ggml.token_type".to_string(), Value::Array(kinds)),
        (
            "tokenizer.ggml.merges".to_string(),
            Value::Array(merges.into_iter().map(Value::String).collect()),
        ),
    ];
    let tc = tokenizer_config(model);
    let id_of = |field: &str| -> Option<u32> {
        let name = tc.as_ref()?.get(field)?;
        let name = name.as_str().or_else(|| name.get("content")?.as_str())?;
        model.tokenizer.inner.token_to_id(name)
    };
    let bos = model.config.bos_token_id.or_else(|| id_of("bos_token"));
    let eos = model.config.eos_token_ids.first().copied().or_else(|| id_of("eos_token"));
    for (key, id) in [
        ("tokenizer.ggml.bos_token_id", bos),
        ("tokenizer.ggml.eos_token_id", eos),
        ("tokenizer.ggml.unknown_token_id", id_of("unk_token")),
        ("tokenizer.ggml.padding_token_id", id_of("pad_token")),
    ] {
        if let Some(id) = id {
            m.push((key.to_string(), Value::U32(id)));
        }
    }
    if let Some(tc) = &tc {
        for (field, key) in [
            ("add_bos_token", "tokenizer.ggml.add_bos_token"),
            ("add_eos_token", "tokenizer.ggml.add_eos_token"),
        ] {
            if let Some(b) = tc.get(field).and_then(|v| v.as_bool()) {
                m.push((key.to_string(), Value::Bool(b)));
            }
        }
        if let Some(t) = tc.get("chat_template").and_then(|v| v.as_str()) {
            m.push(("tokenizer.chat_template".to_string(), Value::String(t.into())));
        }
    }
    Ok(m)
}

/// The input folder's `tokenizer_config.json`, if it has one that parses.
fn tokenizer_config(model: &Model) -> Option<serde_json::Value> {
    if let Some(tc) = &model.tokenizer_config {
        return Some(tc.clone());
    }
    let text = std::fs::read_to_string(model.passthrough.tokenizer_config.as_ref()?).ok()?;
    serde_json::from_str(&text).ok()
}

/// llama.cpp's `tokenizer.ggml.pre` for the pre-tokenizers of `tokenizer.json` whose split it
/// implements: GPT-2's byte-level regex, Llama 3's and Qwen2's split regexes, and SmolLM's
/// single digits before GPT-2's regex.
fn pre_tokenizer_name(pre: &serde_json::Value) -> Option<&'static str> {
    let is_byte_level = |p: &serde_json::Value, regex: bool| {
        p["type"] == "ByteLevel" && p["use_regex"].as_bool().unwrap_or(true) == regex
    };
    if is_byte_level(pre, true) {
        return Some("gpt2");
    }
    let parts = pre["pretokenizers"].as_array().filter(|_| pre["type"] == "Sequence")?;
    match parts.as_slice() {
        [only] if is_byte_level(only, true) => Some("gpt2"),
        [digits, byte_level]
            if digits["type"] == "Digits"
                && digits["individual_digits"] == true
                && is_byte_level(byte_level, true) =>
        {
            Some("smollm")
        }
        [split, byte_level] if split["type"] == "Split" && is_byte_level(byte_level, false) => {
            let regex = split["pattern"]["Regex"].as_str()?;
            if regex == gguf::LLAMA3_SPLIT {
                Some("llama-bpe")
            } else if regex == gguf::QWEN2_SPLIT {
                Some("qwen2")
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Every tensor under its GGUF name (in HF name order, as the folder writer lists them), converted:
/// matrices to `ty`, vectors to F32. A matrix whose rows do not split into 32-value Q8_0 blocks
/// is written F16, as llama.cpp's converter falls back.
fn quantized_tensors(
    model: &Model,
    ty: GgufType,
    ctx: &RunContext,
) -> Result<Vec<(String, QTensor)>> {
    let named = crate::model::save::named_tensors(model);
    let permute = matches!(model.config.architecture, Architecture::Llama | Architecture::Mistral);
    let total = named.len() as u64;
    let mut out = Vec::with_capacity(named.len());
    for (k, (hf, t)) in named.into_iter().enumerate() {
        ctx.check_cancelled()?;
        ctx.report(Stage::Save, k as u64, total + 1);
        let name = gguf::gguf_name(&hf)
            .ok_or_else(|| Error::Internal(format!("no GGUF name for tensor `{hf}`")))?;
        // A fresh contiguous f32 copy on the CPU: candle's quantizer reads the storage as it lies.
        let dims = t.dims().to_vec();
        let values = t
            .read()?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut t = Tensor::from_vec(values, dims.as_slice(), &Device::Cpu)?;
        let heads = if hf.contains("self_attn.q_proj.") {
            Some(model.config.num_attention_heads)
        } else if hf.contains("self_attn.k_proj.") {
            Some(model.config.num_key_value_heads)
        } else {
            None
        };
        if let (true, Some(n)) = (permute, heads) {
            t = gguf::permute(&t, n)?;
        }
        let dtype = match (dims.len(), ty) {
            (1, _) => GgmlDType::F32,
            (_, GgufType::Q8_0) if dims[dims.len() - 1] % GgmlDType::Q8_0.block_size() != 0 => {
                GgmlDType::F16
            }
            _ => ty.ggml(),
        };
        out.push((name, QTensor::quantize(&t, dtype)?));
    }
    Ok(out)
}
