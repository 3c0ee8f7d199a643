//! Saving a model. A GGUF target goes to `save_gguf`; the rest of this module writes a Hugging
//! Face folder that transformers (and llama.cpp's converter) load as
//! is: `config.json` with the new depth, safetensors weights (sharded above a size, with an
//! index), `tokenizer.json`, `tokenizer_config.json`, `generation_config.json`.
//!
//! The folder is written to a temporary folder beside the target and renamed into place, so the
//! target appears complete or not at all; the input is never touched.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Tensor};
use serde_json::json;

use crate::context::{RunContext, Stage};
use crate::error::{Error, Result};
use crate::model::safetensors::{INDEX_FILE, SINGLE_FILE};
use crate::model::save_gguf::{self, GgufType};
use crate::model::stream::LayerSlot;
use crate::model::Model;
use crate::output::OutputTarget;

/// What pruning did, beside the weights (the method's record and report).
pub const PROVENANCE_FILE: &str = "layerfold.json";

/// The kinds of output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveFormat {
    /// A Hugging Face folder (this module).
    Safetensors,
    /// One llama.cpp file (`save_gguf`).
    Gguf,
}

impl SaveFormat {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "safetensors" | "hf" => Ok(Self::Safetensors),
            "gguf" => Ok(Self::Gguf),
            other => Err(Error::config("format", format!("`{other}` is not safetensors or gguf"))),
        }
    }

    /// The format for `out`: the one asked for, else GGUF for a path ending in `.gguf`.
    pub fn for_target(asked: Option<Self>, out: &Path) -> Self {
        asked.unwrap_or(if out.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
            Self::Gguf
        } else {
            Self::Safetensors
        })
    }
}

/// The dtype of saved weights: a tensor dtype for safetensors, a ggml type for GGUF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveDType {
    F32,
    F16,
    BF16,
    Q8_0,
}

impl SaveDType {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "q8_0" => Ok(Self::Q8_0),
            other => match crate::model::parse_dtype(other) {
                Ok(DType::F16) => Ok(Self::F16),
                Ok(DType::BF16) => Ok(Self::BF16),
                Ok(_) => Ok(Self::F32),
                Err(_) => Err(Error::config(
                    "dtype",
                    format!("`{other}` is not f32, f16, bf16 or q8_0 (GGUF only)"),
                )),
            },
        }
    }
}

/// How to save.
#[derive(Debug, Clone, PartialEq)]
pub struct SaveOptions {
    /// `None`: GGUF for a target ending in `.gguf`, else safetensors.
    pub format: Option<SaveFormat>,
    /// Dtype of the saved weights; `None` keeps the model's (bf16 is written to GGUF as f16).
    pub dtype: Option<SaveDType>,
    /// Shards hold at most this many bytes of tensor data (transformers' default `max_shard_size`
    /// is 5 GB).
    pub max_shard_bytes: u64,
    /// Replace a non-empty target folder.
    pub force: bool,
}

impl Default for SaveOptions {
    fn default() -> Self {
        Self { format: None, dtype: None, max_shard_bytes: 5_000_000_000, force: false }
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq)]
pub struct SaveSummary {
    pub path: PathBuf,
    pub files: Vec<String>,
    pub bytes: u64,
}

/// A tensor of a model to save: in memory, or a tensor of a layer that may be streamed, read
/// only when it is written (so a streamed model's save holds one tensor at a time).
#[derive(Clone)]
pub(crate) enum SavedTensor<'a> {
    Loaded(&'a Tensor),
    Layer {
        slot: &'a LayerSlot,
        name: String,
        shape: Vec<usize>,
    },
    /// Made by `make(name)` when it is written (a merged layer's tensor).
    Made {
        name: String,
        shape: Vec<usize>,
        make: &'a dyn Fn(&str) -> Result<Tensor>,
    },
}

impl SavedTensor<'_> {
    pub(crate) fn dims(&self) -> &[usize] {
        match self {
            Self::Loaded(t) => t.dims(),
            Self::Layer { shape, .. } | Self::Made { shape, .. } => shape,
        }
    }

    pub(crate) fn elem_count(&self) -> usize {
        self.dims().iter().product()
    }

    /// The tensor in the model's dtype.
    pub(crate) fn read(&self) -> Result<Tensor> {
        match self {
            Self::Loaded(t) => Ok((*t).clone()),
            Self::Layer { slot, name, .. } => slot.tensor(name),
            Self::Made { name, make, .. } => make(name),
        }
    }
}

/// One tensor to write, read and converted to the target dtype only when the writer asks for its
/// bytes, so that at most one converted tensor is in memory at a time.
pub(crate) struct LazyTensor<'a> {
    tensor: SavedTensor<'a>,
    dtype: DType,
    shape: Vec<usize>,
    error: &'a Mutex<Option<Error>>,
}

impl<'a> LazyTensor<'a> {
    /// `tensor` written in `dtype`.
    pub(crate) fn new(
        tensor: SavedTensor<'a>,
        dtype: DType,
        error: &'a Mutex<Option<Error>>,
    ) -> Self {
        let shape = tensor.dims().to_vec();
        Self { tensor, dtype, shape, error }
    }

    /// `tensor` in its own dtype (bit-exact).
    pub(crate) fn exact(tensor: &'a Tensor, error: &'a Mutex<Option<Error>>) -> Self {
        Self {
            tensor: SavedTensor::Loaded(tensor),
            dtype: tensor.dtype(),
            shape: tensor.dims().to_vec(),
            error,
        }
    }

    fn bytes(&self) -> Result<Vec<u8>> {
        let t = self
            .tensor
            .read()?
            .to_dtype(self.dtype)?
            .to_device(&candle_core::Device::Cpu)?
            .flatten_all()?;
        Ok(match self.dtype {
            DType::F32 => t.to_vec1::<f32>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::F16 => t.to_vec1::<half::f16>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
            DType::BF16 => {
                t.to_vec1::<half::bf16>()?.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            other => return Err(Error::Internal(format!("cannot save dtype {other:?}"))),
        })
    }
}

impl safetensors::View for LazyTensor<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        match self.dtype {
            DType::F16 => safetensors::Dtype::F16,
            DType::BF16 => safetensors::Dtype::BF16,
            _ => safetensors::Dtype::F32,
        }
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        // `View::data` cannot fail; a conversion error is kept and reported after the write,
        // which then discards the file.
        match self.bytes() {
            Ok(b) => Cow::Owned(b),
            Err(e) => {
                if let Ok(mut slot) = self.error.lock() {
                    slot.get_or_insert(e);
                }
                Cow::Owned(vec![0; self.data_len()])
            }
        }
    }

    fn data_len(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size_in_bytes()
    }
}

/// Every tensor of `model` under its HF name, in name order.
pub(crate) fn named_tensors(model: &Model) -> Vec<(String, SavedTensor<'_>)> {
    let lm = &model.lm;
    let mut out = vec![
        ("model.embed_tokens.weight".to_string(), SavedTensor::Loaded(&lm.embed_tokens)),
        ("model.norm.weight".to_string(), SavedTensor::Loaded(&lm.norm.weight)),
    ];
    if let Some(head) = &lm.lm_head {
        out.push(("lm_head.weight".to_string(), SavedTensor::Loaded(head)));
    }
    for (i, slot) in lm.layers.iter().enumerate() {
        for t in slot.shapes() {
            out.push((
                format!("model.layers.{i}.{}", t.name),
                SavedTensor::Layer { slot, name: t.name, shape: t.shape },
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The input's `config.json` with the model's current depth and the saved dtype.
fn config_json(model: &Model, dtype: DType) -> serde_json::Value {
    let mut cfg = model.hf_config.clone();
    let layers = model.num_layers();
    cfg["num_hidden_layers"] = json!(layers);
    let dtype_str = match dtype {
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        _ => "float32",
    };
    cfg["torch_dtype"] = json!(dtype_str);
    if cfg.get("dtype").is_some() {
        cfg["dtype"] = json!(dtype_str);
    }
    // transformers 5 lists one attention type per layer; keep it as long as the layer list.
    if let Some(types) = cfg.get_mut("layer_types").and_then(|v| v.as_array_mut()) {
        types.truncate(layers);
    }
    cfg
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Internal(e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
}

/// What a save writes: the format and the weights' type, checked against each other.
enum Plan {
    Folder(DType),
    Gguf(GgufType),
}

fn plan(model_dtype: DType, out: &Path, opts: &SaveOptions) -> Result<Plan> {
    let wrong = |dtype: &str, format: &str, hint: &str| {
        Error::config("dtype", format!("{dtype} is not a {format} dtype: {hint}"))
    };
    Ok(match SaveFormat::for_target(opts.format, out) {
        SaveFormat::Safetensors => Plan::Folder(match opts.dtype {
            None => model_dtype,
            Some(SaveDType::F32) => DType::F32,
            Some(SaveDType::F16) => DType::F16,
            Some(SaveDType::BF16) => DType::BF16,
            Some(SaveDType::Q8_0) => {
                return Err(wrong("q8_0", "safetensors", "pass format gguf (or an .gguf path)"))
            }
        }),
        SaveFormat::Gguf => Plan::Gguf(match opts.dtype {
            Some(SaveDType::F32) => GgufType::F32,
            Some(SaveDType::F16) => GgufType::F16,
            Some(SaveDType::Q8_0) => GgufType::Q8_0,
            Some(SaveDType::BF16) => {
                return Err(wrong("bf16", "GGUF output", "GGUF output takes f32, f16 or q8_0"))
            }
            None if model_dtype == DType::F32 => GgufType::F32,
            None => GgufType::F16,
        }),
    })
}

/// Fails unless `out` may receive a save of a model read from `inputs` with `opts` (the
/// options and the output rule, `output`), before anything is loaded.
pub fn check_target(out: &Path, inputs: &[PathBuf], opts: &SaveOptions) -> Result<()> {
    match plan(DType::F32, out, opts)? {
        Plan::Folder(_) => OutputTarget::check(out, inputs, opts.force).map(drop),
        Plan::Gguf(_) => OutputTarget::check_file(out, inputs, opts.force).map(drop),
    }
}

/// Writes `model` to `out`: a Hugging Face folder or a GGUF file (`SaveFormat::for_target`);
/// see the module docs and `output` for the rule on targets.
pub fn save(
    model: &Model,
    out: &Path,
    opts: &SaveOptions,
    ctx: &RunContext,
) -> Result<SaveSummary> {
    let dtype = match plan(model.lm.dtype(), out, opts)? {
        Plan::Folder(dtype) => dtype,
        Plan::Gguf(ty) => {
            let (path, bytes) = save_gguf::save(model, out, ty, opts.force, ctx)?;
            let file = path.file_name().map(|n| n.to_string_lossy().into_owned());
            return Ok(SaveSummary { path, files: file.into_iter().collect(), bytes });
        }
    };
    let staged = OutputTarget::check(out, &model.inputs, opts.force)?.stage()?;
    let summary =
        write_folder(model, staged.path(), dtype, opts, ctx).map_err(|e| staged.relocate(e))?;
    // Last chance to cancel: after this the folder is in place.
    ctx.check_cancelled()?;
    let path = staged.commit()?;
    Ok(SaveSummary { path, ..summary })
}

fn write_folder(
    model: &Model,
    dir: &Path,
    dtype: DType,
    opts: &SaveOptions,
    ctx: &RunContext,
) -> Result<SaveSummary> {
    let tensors = named_tensors(model);
    // Greedy shards in name order, as transformers' `split_torch_state_dict_into_shards` does.
    let mut shards: Vec<Vec<(String, SavedTensor)>> = vec![vec![]];
    let mut shard_bytes = 0u64;
    let mut total_bytes = 0u64;
    for (name, t) in tensors {
        let bytes = (t.elem_count() * dtype.size_in_bytes()) as u64;
        if shard_bytes + bytes > opts.max_shard_bytes
            && !shards.last().is_some_and(|s| s.is_empty())
        {
            shards.push(vec![]);
            shard_bytes = 0;
        }
        shard_bytes += bytes;
        total_bytes += bytes;
        shards.last_mut().expect("shards starts non-empty").push((name, t));
    }
    let n = shards.len();
    let mut files = Vec::new();
    let mut weight_map = BTreeMap::new();
    let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    for (k, shard) in shards.iter().enumerate() {
        ctx.check_cancelled()?;
        ctx.report(Stage::Save, k as u64, n as u64);
        let file = if n == 1 {
            SINGLE_FILE.to_string()
        } else {
            format!("model-{:05}-of-{n:05}.safetensors", k + 1)
        };
        let path = dir.join(&file);
        let error = Mutex::new(None);
        let views = shard.iter().map(|(name, t)| {
            (
                name.clone(),
                LazyTensor { tensor: t.clone(), dtype, shape: t.dims().to_vec(), error: &error },
            )
        });
        safetensors::serialize_to_file(views, Some(metadata.clone()), &path).map_err(
            |e| match e {
                safetensors::SafeTensorError::IoError(io) => Error::io(&path, io),
                other => Error::Internal(format!("writing `{}`: {other}", path.display())),
            },
        )?;
        if let Some(e) = error.into_inner().ok().flatten() {
            return Err(e);
        }
        sync(&path)?;
        for (name, _) in shard {
            weight_map.insert(name.clone(), file.clone());
        }
        files.push(file);
    }
    if n > 1 {
        write_json(
            &dir.join(INDEX_FILE),
            &json!({"metadata": {"total_size": total_bytes}, "weight_map": weight_map}),
        )?;
        files.push(INDEX_FILE.into());
    }
    write_json(&dir.join("config.json"), &config_json(model, dtype))?;
    files.push("config.json".into());
    // The tokenizer: the input's files verbatim, or the ones rebuilt from GGUF metadata.
    let tokenizer_json = dir.join("tokenizer.json");
    let source_tokenizer = model.path.join("tokenizer.json");
    if model.path.is_dir() && source_tokenizer.exists() {
        copy(&source_tokenizer, &tokenizer_json)?;
    } else {
        std::fs::write(&tokenizer_json, model.tokenizer.to_json()?)
            .map_err(|e| Error::io(&tokenizer_json, e))?;
    }
    files.push("tokenizer.json".into());
    let p = &model.passthrough;
    for (src, file) in [
        (&p.tokenizer_config, "tokenizer_config.json"),
        (&p.special_tokens_map, "special_tokens_map.json"),
        (&p.generation_config, "generation_config.json"),
    ] {
        if let Some(src) = src {
            copy(src, &dir.join(file))?;
            files.push(file.into());
        }
    }
    if let Some(tc) = &model.tokenizer_config {
        write_json(&dir.join("tokenizer_config.json"), tc)?;
        files.push("tokenizer_config.json".into());
    }
    if let Some(provenance) = &model.provenance {
        write_json(&dir.join(PROVENANCE_FILE), provenance)?;
        files.push(PROVENANCE_FILE.into());
    }
    if p.generation_config.is_none() {
        let mut gen = json!({});
        if let Some(b) = model.config.bos_token_id {
            gen["bos_token_id"] = json!(b);
        }
        match model.config.eos_token_ids.as_slice() {
            [] => {}
            [one] => gen["eos_token_id"] = json!(one),
            many => gen["eos_token_id"] = json!(many),
        }
        write_json(&dir.join("generation_config.json"), &gen)?;
        files.push("generation_config.json".into());
    }
    ctx.report(Stage::Save, n as u64, n as u64);
    files.sort();
    Ok(SaveSummary { path: dir.to_path_buf(), files, bytes: total_bytes })
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to).map_err(|e| Error::io(to, e))?;
    Ok(())
}

/// Flushes `path` to disk and makes it world-readable like the other files (the safetensors
/// writer creates its files owner-only).
fn sync(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io(path, e))?;
    }
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(|e| Error::io(path, e))
}
