//! GGUF files (llama.cpp): read with candle's own GGUF reader and dequantised by candle, never by
//! hand. The configuration and the tokenizer are rebuilt from the metadata the way transformers'
//! GGUF loader does (`integrations/gguf/`, transformers 5.23), so a GGUF model gives the same
//! weights, token ids and `config.json` as `from_pretrained(..., gguf_file=...)`.
//!
//! GGUF names are translated to HF names in one table, [`gguf_name`].

use std::collections::HashMap;
use std::fs::File;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use memmap2::Mmap;
use serde_json::json;

use crate::error::{Error, Result};
use crate::model::config::Architecture;
use crate::model::gguf_header;
use crate::model::tokenizer::TextTokenizer;
use crate::model::weights::{layer_index, WeightSource};

/// The HF name of a GGUF tensor name's counterpart: the one translation table (STYLE.md).
pub(crate) fn gguf_name(hf: &str) -> Option<String> {
    const GLOBAL: [(&str, &str); 3] = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    const LAYER: [(&str, &str); 11] = [
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("self_attn.q_norm", "attn_q_norm"),
        ("self_attn.k_norm", "attn_k_norm"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
    ];
    if let Some((_, g)) = GLOBAL.iter().find(|(h, _)| *h == hf) {
        return Some(g.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (index, rest) = rest.split_once('.')?;
    let (module, suffix) = rest.rsplit_once('.')?;
    let (_, g) = LAYER.iter().find(|(h, _)| *h == module)?;
    Some(format!("blk.{index}.{g}.{suffix}"))
}

/// A memory-mapped GGUF file with its parsed header.
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    content: Content,
    architecture: Architecture,
    arch_key: String,
    num_heads: usize,
    num_kv_heads: usize,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if !meta.is_file() || meta.len() < 4 {
            return Err(Error::format(path, "GGUF file", "it is not a file of at least 4 bytes"));
        }
        // SAFETY: read-only map of an input layerfold never writes (see safetensors.rs).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        // Every count, length and offset is checked against the file before candle reads it.
        gguf_header::check(&mmap, path)?;
        let content = Content::read(&mut Cursor::new(&mmap[..]))
            .map_err(|e| Error::format(path, "GGUF file", e))?;
        let arch_name = metadata_str(&content, "general.architecture").ok_or_else(|| {
            Error::format(path, "GGUF file", "metadata `general.architecture` is missing")
        })?;
        let architecture = Architecture::from_model_type(arch_name).ok_or_else(|| {
            Error::unsupported(
                format!("GGUF architecture `{arch_name}`"),
                "layerfold reads llama, mistral, qwen2 and qwen3 GGUF files",
            )
        })?;
        let arch_key = arch_name.to_string();
        let num_heads =
            metadata_count(&content, &format!("{arch_key}.attention.head_count"), path)?
                .ok_or_else(|| {
                    Error::format(
                        path,
                        "GGUF file",
                        format!("metadata `{arch_key}.attention.head_count` is missing"),
                    )
                })?;
        let num_kv_heads =
            metadata_count(&content, &format!("{arch_key}.attention.head_count_kv"), path)?
                .unwrap_or(num_heads);
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
            content,
            architecture,
            arch_key,
            num_heads,
            num_kv_heads,
        })
    }

    /// A positive count of the architecture's metadata (`llama.block_count`), `None` if absent.
    fn meta_count(&self, key: &str) -> Result<Option<usize>> {
        metadata_count(&self.content, &format!("{}.{key}", self.arch_key), &self.path)
    }

    fn meta_f64(&self, key: &str) -> Option<f64> {
        match self.content.metadata.get(&format!("{}.{key}", self.arch_key))? {
            Value::F32(v) => Some(*v as f64),
            Value::F64(v) => Some(*v),
            _ => None,
        }
    }

    /// `{arch}.block_count`: any positive count; the tensors decide whether it is right.
    fn layer_count_metadata(&self) -> Result<usize> {
        let key = format!("{}.block_count", self.arch_key);
        match self.content.metadata.get(&key) {
            None => {
                Err(Error::format(&self.path, "GGUF file", format!("metadata `{key}` is missing")))
            }
            Some(v) => value_usize(v).filter(|&n| n > 0).ok_or_else(|| {
                Error::format(
                    &self.path,
                    "GGUF file",
                    format!("metadata `{key}` is {v:?}, not a positive count"),
                )
            }),
        }
    }

    /// The `config.json` transformers writes for this file (`gguf_config_mapping.py`).
    pub fn hf_config(&self) -> Result<serde_json::Value> {
        let missing = |key: &str| {
            Error::format(
                &self.path,
                "GGUF file",
                format!("metadata `{}.{key}` is missing", self.arch_key),
            )
        };
        if self.content.tensor_infos.contains_key("rope_freqs.weight")
            || self.content.metadata.contains_key(&format!("{}.rope.scaling.type", self.arch_key))
        {
            return Err(Error::unsupported(
                format!("RoPE scaling stored in GGUF `{}`", self.path.display()),
                "load the Hugging Face checkpoint of this model instead",
            ));
        }
        let embed = self.content.tensor_infos.get("token_embd.weight").ok_or_else(|| {
            Error::MissingTensor { path: self.path.clone(), name: "token_embd.weight".into() }
        })?;
        let &[vocab, _] = embed.shape.dims() else {
            return Err(Error::format(
                &self.path,
                "GGUF file",
                format!(
                    "`token_embd.weight` has shape {:?}, not [vocab, hidden]",
                    embed.shape.dims()
                ),
            ));
        };
        let required = |key: &str| self.meta_count(key)?.ok_or_else(|| missing(key));
        let hidden = required("embedding_length")?;
        let head_dim = self.meta_count("attention.key_length")?.unwrap_or(hidden / self.num_heads);
        let tied = !self.content.tensor_infos.contains_key("output.weight");
        let mut cfg = json!({
            "architectures": [self.architecture.hf_class()],
            "model_type": self.architecture.model_type(),
            "vocab_size": vocab,
            "hidden_size": hidden,
            "intermediate_size": required("feed_forward_length")?,
            // Checked against the `blk.N` tensors by `weights::build`, which names both numbers.
            "num_hidden_layers": self.layer_count_metadata()?,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": head_dim,
            "max_position_embeddings": self.meta_count("context_length")?.unwrap_or(2048),
            "rms_norm_eps": self.meta_f64("attention.layer_norm_rms_epsilon").unwrap_or(1e-6),
            "rope_theta": self.meta_f64("rope.freq_base").unwrap_or(10000.0),
            "hidden_act": "silu",
            "tie_word_embeddings": tied,
            "torch_dtype": "float32",
        });
        let qkv_bias = self.content.tensor_infos.contains_key("blk.0.attn_q.bias");
        if matches!(self.architecture, Architecture::Llama | Architecture::Qwen3) {
            cfg["attention_bias"] = json!(qkv_bias);
        }
        for (key, field) in [
            ("tokenizer.ggml.bos_token_id", "bos_token_id"),
            ("tokenizer.ggml.eos_token_id", "eos_token_id"),
        ] {
            if let Some(id) = metadata_usize(&self.content, key) {
                cfg[field] = json!(id);
            }
        }
        Ok(cfg)
    }

    /// The tokenizer transformers builds from this file's metadata (`gguf_tokenizer_mapping.py`):
    /// byte-level BPE with the file's merges, the pre-tokenizer split its `tokenizer.ggml.pre`
    /// names, control tokens as special tokens and user-defined ones as added tokens.
    pub fn tokenizer(&self) -> Result<TextTokenizer> {
        use tokenizers::models::bpe::BPE;
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        use tokenizers::pre_tokenizers::sequence::Sequence;
        use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
        use tokenizers::{AddedToken, SplitDelimiterBehavior};

        let bad = |reason: String| Error::format(&self.path, "GGUF tokenizer", reason);
        let kind = metadata_str(&self.content, "tokenizer.ggml.model").unwrap_or("");
        if kind != "gpt2" {
            return Err(Error::unsupported(
                format!("GGUF tokenizer model `{kind}` in `{}`", self.path.display()),
                "layerfold rebuilds byte-level BPE (`gpt2`) tokenizers from GGUF; load the Hugging Face \
                 checkpoint, which has tokenizer.json, instead",
            ));
        }
        let tokens = metadata_strings(&self.content, "tokenizer.ggml.tokens")
            .ok_or_else(|| bad("`tokenizer.ggml.tokens` is missing".into()))?;
        let merges = metadata_strings(&self.content, "tokenizer.ggml.merges")
            .ok_or_else(|| bad("`tokenizer.ggml.merges` is missing".into()))?;
        let merges = merges
            .iter()
            .map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("a merge is not two tokens separated by a space".into()))?;
        // Tokens outside the byte alphabet are stored as text; spell them in bytes (transformers
        // `byte_level_tokenizer`).
        let spelling = bytes_to_unicode();
        let alphabet: std::collections::HashSet<char> = spelling.iter().copied().collect();
        let respell = |t: &str| -> String {
            if t.chars().all(|c| alphabet.contains(&c)) {
                t.to_string()
            } else {
                t.bytes().map(|b| spelling[b as usize]).collect()
            }
        };
        let vocab: HashMap<String, u32> =
            tokens.iter().enumerate().map(|(i, t)| (respell(t), i as u32)).collect();
        let bpe = BPE::builder()
            .vocab_and_merges(
                vocab
                    .iter()
                    .map(|(t, i)| (t.clone(), *i))
                    .collect::<tokenizers::models::bpe::Vocab>(),
                merges,
            )
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let mut tok = tokenizers::Tokenizer::new(bpe);
        let pre = metadata_str(&self.content, "tokenizer.ggml.pre").unwrap_or("gpt2");
        match pre_tokenizer_split(pre) {
            Some(regex) => {
                let split = Split::new(
                    SplitPattern::Regex(regex.into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(|e| bad(e.to_string()))?;
                tok.with_pre_tokenizer(Some(Sequence::new(vec![
                    split.into(),
                    ByteLevel::new(false, true, false).into(),
                ])));
            }
            None => {
                tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
            }
        }
        tok.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
        let types = metadata_usizes(&self.content, "tokenizer.ggml.token_type").unwrap_or_default();
        // 3 = CONTROL, 4 = USER_DEFINED (llama.cpp `llama_token_type`).
        let control: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(t, ty)| **ty == 3 && t.chars().all(|c| alphabet.contains(&c)))
            .map(|(t, _)| AddedToken::from(t.clone(), true).normalized(false))
            .collect();
        tok.add_special_tokens(control).map_err(|e| bad(e.to_string()))?;
        let user: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(t, ty)| **ty == 4 && vocab.contains_key(*t))
            .map(|(t, _)| AddedToken::from(t.clone(), false).normalized(false))
            .collect();
        tok.add_tokens(user).map_err(|e| bad(e.to_string()))?;
        let id = |key: &str| metadata_usize(&self.content, key).map(|v| v as u32);
        Ok(TextTokenizer {
            inner: tok,
            bos_token_id: id("tokenizer.ggml.bos_token_id"),
            eos_token_id: id("tokenizer.ggml.eos_token_id"),
            path: self.path.clone(),
        })
    }

    /// What layerfold wrote under `layerfold.provenance` when it saved this file (a pruned
    /// model's record and report, as `layerfold.json` holds them in a folder).
    pub fn provenance(&self) -> Option<&str> {
        metadata_str(&self.content, "layerfold.provenance")
    }

    /// `tokenizer_config.json` for a saved GGUF model: the special tokens by name, and the generic
    /// fast tokenizer class so that transformers uses `tokenizer.json` as it is.
    pub fn tokenizer_config(&self) -> serde_json::Value {
        let tokens = metadata_strings(&self.content, "tokenizer.ggml.tokens").unwrap_or_default();
        let name = |key: &str| {
            metadata_usize(&self.content, key)
                .and_then(|i| tokens.get(i))
                .map(|s| json!(s))
                .unwrap_or(json!(null))
        };
        let mut cfg = json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": name("tokenizer.ggml.bos_token_id"),
            "eos_token": name("tokenizer.ggml.eos_token_id"),
            "unk_token": name("tokenizer.ggml.unknown_token_id"),
            "pad_token": name("tokenizer.ggml.padding_token_id"),
            "add_bos_token": self.content.metadata.get("tokenizer.ggml.add_bos_token")
                .and_then(|v| v.to_bool().ok()).unwrap_or(false),
            "add_eos_token": self.content.metadata.get("tokenizer.ggml.add_eos_token")
                .and_then(|v| v.to_bool().ok()).unwrap_or(false),
        });
        if let Some(t) = metadata_str(&self.content, "tokenizer.chat_template") {
            cfg["chat_template"] = json!(t);
        }
        cfg
    }

    /// Every `tokenizer.*` key of the metadata, as stored: what a GGUF output copies.
    pub fn tokenizer_metadata(&self) -> Vec<(String, Value)> {
        let mut m: Vec<(String, Value)> = self
            .content
            .metadata
            .iter()
            .filter(|(k, _)| k.starts_with("tokenizer."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        m.sort_by(|a, b| a.0.cmp(&b.0));
        m
    }

    /// The ggml types of the file's tensors and how many of each, e.g. `{"Q4_1": 210, "F32": 61}`.
    pub fn quantization_summary(&self) -> Vec<(String, usize)> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for info in self.content.tensor_infos.values() {
            *counts.entry(format!("{:?}", info.ggml_dtype)).or_default() += 1;
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

impl WeightSource for GgufFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn layer_count(&self) -> usize {
        let highest = self.content.tensor_infos.keys().filter_map(|n| layer_index(n, "blk.")).max();
        highest.map_or(0, |i| i.saturating_add(1))
    }

    fn total_elements(&self) -> u64 {
        let count = |i: &candle_core::quantized::gguf_file::TensorInfo| {
            i.shape.dims().iter().map(|&d| d as u64).product::<u64>()
        };
        self.content.tensor_infos.values().map(count).fold(0u64, u64::saturating_add)
    }

    fn load(&self, name: &str) -> Result<Option<Tensor>> {
        let Some(gname) = gguf_name(name) else { return Ok(None) };
        if !self.content.tensor_infos.contains_key(&gname) {
            return Ok(None);
        }
        let q =
            self.content.tensor(&mut Cursor::new(&self.mmap[..]), &gname, &Device::Cpu).map_err(
                |e| Error::format(&self.path, "GGUF file", format!("tensor `{gname}`: {e}")),
            )?;
        let t = q.dequantize(&Device::Cpu)?;
        // llama.cpp's converter permutes Q and K rows of llama-architecture models into the
        // interleaved RoPE layout; transformers undoes it (`LlamaConverter._reverse_permute_weights`)
        // to get back HF's rotate-half layout.
        let permuted = matches!(self.architecture, Architecture::Llama | Architecture::Mistral);
        let heads = if name.ends_with("self_attn.q_proj.weight")
            || name.ends_with("self_attn.q_proj.bias")
        {
            Some(self.num_heads)
        } else if name.ends_with("self_attn.k_proj.weight")
            || name.ends_with("self_attn.k_proj.bias")
        {
            Some(self.num_kv_heads)
        } else {
            None
        };
        match heads {
            // A tensor whose rows do not split into heads is left as it is, for the shape check
            // of the caller to report.
            Some(n) if permuted && t.dims()[0] % (2 * n) == 0 => Ok(Some(reverse_permute(&t, n)?)),
            _ => Ok(Some(t)),
        }
    }
}

/// llama.cpp's `permute` (`convert_hf_to_gguf.py`, `LlamaModel.permute`): each head's rows
/// from HF's rotate-half layout to the interleaved one, `w.reshape(n_head, 2, half, ..)
/// .swapaxes(1, 2)`.
pub(crate) fn permute(t: &Tensor, n_head: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let half = dims[0] / n_head / 2;
    let mut shape = vec![n_head, 2, half];
    shape.extend_from_slice(&dims[1..]);
    Ok(t.reshape(shape)?.transpose(1, 2)?.contiguous()?.reshape(dims)?)
}

/// Undoes llama.cpp's `permute`, which stores each head's rows as
/// `w.reshape(n_head, 2, half, ..).swapaxes(1, 2)`; `n_head` is the query or the KV head count.
fn reverse_permute(t: &Tensor, n_head: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let half = dims[0] / n_head / 2;
    let mut shape = vec![n_head, half, 2];
    shape.extend_from_slice(&dims[1..]);
    Ok(t.reshape(shape)?.transpose(1, 2)?.contiguous()?.reshape(dims)?)
}

/// GPT-2's reversible byte → printable character map (`bytes_to_unicode` in transformers and
/// tokenizers; the latter keeps its copy crate-private).
fn bytes_to_unicode() -> Vec<char> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut next = 256u32;
    (0..256u32)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).expect("printable bytes are valid scalar values")
            } else {
                let c = char::from_u32(next).expect("256..324 are valid scalar values");
                next += 1;
                c
            }
        })
        .collect()
}

/// Llama 3's pre-tokenizer split (also in its `tokenizer.json`).
pub(crate) const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's: Llama 3's with single digits.
pub(crate) const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split regex transformers uses for a `tokenizer.ggml.pre` value
/// (`GGUF_PRE_TOKENIZER_SPLITS`); `None` means GPT-2's own byte-level regex.
fn pre_tokenizer_split(pre: &str) -> Option<&'static str> {
    match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "smaug-bpe" | "dbrx" | "lfm2"
        | "pixtral" => Some(LLAMA3_SPLIT),
        "qwen2" | "deepseek-r1-qwen" | "megrez" => Some(QWEN2_SPLIT),
        _ => None,
    }
}

fn metadata_str<'a>(c: &'a Content, key: &str) -> Option<&'a str> {
    match c.metadata.get(key)? {
        Value::String(s) => Some(s.as_str()),
        _ => None,
    }
}

fn value_usize(v: &Value) -> Option<usize> {
    match v {
        Value::U8(x) => Some(*x as usize),
        Value::I8(x) => usize::try_from(*x).ok(),
        Value::U16(x) => Some(*x as usize),
        Value::I16(x) => usize::try_from(*x).ok(),
        Value::U32(x) => Some(*x as usize),
        Value::I32(x) => usize::try_from(*x).ok(),
        Value::U64(x) => usize::try_from(*x).ok(),
        Value::I64(x) => usize::try_from(*x).ok(),
        _ => None,
    }
}

fn metadata_usize(c: &Content, key: &str) -> Option<usize> {
    value_usize(c.metadata.get(key)?)
}

/// A positive integer of the metadata, `None` when the key is absent. Zero, a negative number, a
/// value past 2^24 (no model dimension comes near) or another type is an error naming the key.
fn metadata_count(c: &Content, key: &str, path: &Path) -> Result<Option<usize>> {
    let Some(value) = c.metadata.get(key) else { return Ok(None) };
    match value_usize(value) {
        Some(n) if (1..=MAX_COUNT).contains(&n) => Ok(Some(n)),
        _ => Err(Error::format(
            path,
            "GGUF file",
            format!("metadata `{key}` is {value:?}, not a count between 1 and {MAX_COUNT}"),
        )),
    }
}

/// The largest width, depth or context a configuration may state (`config::MAX_SIZE`).
const MAX_COUNT: usize = crate::model::config::MAX_SIZE;

fn metadata_usizes(c: &Content, key: &str) -> Option<Vec<usize>> {
    match c.metadata.get(key)? {
        Value::Array(a) => a.iter().map(value_usize).collect(),
        _ => None,
    }
}

fn metadata_strings(c: &Content, key: &str) -> Option<Vec<String>> {
    match c.metadata.get(key)? {
        Value::Array(a) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_names() {
        assert_eq!(gguf_name("model.embed_tokens.weight").unwrap(), "token_embd.weight");
        assert_eq!(
            gguf_name("model.layers.12.mlp.down_proj.weight").unwrap(),
            "blk.12.ffn_down.weight"
        );
        assert_eq!(gguf_name("model.layers.0.self_attn.q_proj.bias").unwrap(), "blk.0.attn_q.bias");
        assert_eq!(
            gguf_name("model.layers.3.input_layernorm.weight").unwrap(),
            "blk.3.attn_norm.weight"
        );
        assert!(gguf_name("model.rotary_emb.inv_freq").is_none());
    }

    #[test]
    fn reverse_permute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(n_head, 2, half, ...).swapaxes(1, 2).reshape(w.shape)
        let (n_head, dh, d) = (2usize, 4usize, 3usize);
        let w = Tensor::arange(0f32, (n_head * dh * d) as f32, &Device::Cpu)
            .unwrap()
            .reshape((n_head * dh, d))
            .unwrap();
        let permuted = w
            .reshape((n_head, 2, dh / 2, d))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((n_head * dh, d))
            .unwrap();
        let back = reverse_permute(&permuted, n_head).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
    }

    #[test]
    fn permute_is_llama_cpps_and_reverse_permute_undoes_it() {
        // Two heads of four rows: each head's rows [0 1 2 3] become [0 2 1 3].
        let w = Tensor::arange(0f32, 8., &Device::Cpu).unwrap().reshape((8, 1)).unwrap();
        let p = permute(&w, 2).unwrap();
        assert_eq!(
            p.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [0., 2., 1., 3., 4., 6., 5., 7.]
        );
        let back = reverse_permute(&p, 2).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
    }

    #[test]
    fn byte_alphabet_matches_gpt2() {
        let m = bytes_to_unicode();
        assert_eq!(m[b' ' as usize], 'Ġ');
        assert_eq!(m[b'\n' as usize], 'Ċ');
        assert_eq!(m[b'a' as usize], 'a');
        assert_eq!(m.iter().collect::<std::collections::HashSet<_>>().len(), 256);
    }
}
