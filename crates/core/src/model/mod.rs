//! A loaded model: its configuration, decoder weights and tokenizer, from a Hugging Face folder or
//! a GGUF file.

pub mod config;
pub mod decoder;
pub mod generate;
pub mod gguf;
pub mod gguf_header;
pub mod origin;
pub mod packed;
pub mod safetensors;
pub mod save;
pub mod save_gguf;
pub mod stream;
pub mod tokenizer;
pub mod weights;

use stream::LayerSlot;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::context::{RunContext, Stage};
use crate::error::{Error, Result};
use config::{Config, RawConfig};
use decoder::{CausalLm, DecoderLayer};
use origin::Origin;
use tokenizer::TextTokenizer;

/// Where a model came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// A Hugging Face folder with safetensors weights.
    Safetensors,
    Gguf,
}

impl SourceFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Safetensors => "safetensors",
            Self::Gguf => "gguf",
        }
    }
}

/// The device to compute on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Cpu,
    /// A CUDA device by ordinal; needs the `cuda` build.
    Cuda(usize),
    /// CUDA device 0 when this build and the machine can use it, else the CPU (and say why).
    Auto,
}

/// What to install for CUDA, for messages.
const CUDA_HINT: &str =
    "the CUDA build (npm install layerfold-linux-x64-gnu-cuda, or `npm run build:cuda` \
                         from source) and an NVIDIA driver of version 580 or newer";

/// An opened device, and why it is not the one asked for when `auto` fell back to the CPU.
#[derive(Debug, Clone)]
pub struct OpenedDevice {
    pub device: Device,
    pub fallback: Option<String>,
}

impl DeviceChoice {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            "auto" => Ok(Self::Auto),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| {
                    Error::config("device", format!("`{other}` is not cpu, cuda, cuda:N or auto"))
                }),
        }
    }

    pub fn open(self) -> Result<OpenedDevice> {
        match self {
            Self::Cpu => Ok(OpenedDevice { device: Device::Cpu, fallback: None }),
            Self::Cuda(ordinal) => Ok(OpenedDevice { device: open_cuda(ordinal)?, fallback: None }),
            Self::Auto => match open_cuda(0) {
                Ok(device) => Ok(OpenedDevice { device, fallback: None }),
                Err(e) => Ok(OpenedDevice { device: Device::Cpu, fallback: Some(e.to_string()) }),
            },
        }
    }
}

fn open_cuda(ordinal: usize) -> Result<Device> {
    if !cfg!(feature = "cuda") {
        return Err(Error::Device {
            message: format!("this build of layerfold has no CUDA support: install {CUDA_HINT}, or use device \"cpu\""),
        });
    }
    Device::new_cuda(ordinal).map_err(|e| Error::Device {
        message: format!("CUDA device {ordinal} is not usable ({e}): it needs {CUDA_HINT}"),
    })
}

/// Parses `f32`, `f16`, `bf16`.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" | "float32" => Ok(DType::F32),
        "f16" | "float16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        other => Err(Error::config("dtype", format!("`{other}` is not f32, f16 or bf16"))),
    }
}

pub fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "other",
    }
}

/// How to load a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Weights and activations dtype. Default f32.
    pub dtype: DType,
    pub device: DeviceChoice,
    /// Keep the layers in the checkpoint and build each one only while a pass runs it
    /// ([`stream`]); chosen anyway when the weights do not fit the available memory. Default
    /// false.
    pub stream: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { dtype: DType::F32, device: DeviceChoice::Cpu, stream: false }
    }
}

/// What `layerfold info` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub architecture: &'static str,
    pub format: &'static str,
    pub path: PathBuf,
    pub dtype: &'static str,
    pub device: String,
    /// Why the model is on the CPU although `auto` was asked for.
    pub device_fallback: Option<String>,
    pub num_layers: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    pub parameters: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// GGUF tensor types and counts, most frequent first.
    pub quantization: Vec<(String, usize)>,
    /// Why the layers are read from the checkpoint one at a time (`stream`), when they are.
    pub streamed: Option<String>,
}

/// Files of the input that a save copies verbatim (HF folders only).
#[derive(Debug, Clone, Default)]
pub struct Passthrough {
    pub tokenizer_config: Option<PathBuf>,
    pub special_tokens_map: Option<PathBuf>,
    pub generation_config: Option<PathBuf>,
}

/// A model in memory. The layer list of `lm` is the model's depth; `config.num_hidden_layers` is
/// the depth it was loaded with.
#[derive(Debug, Clone)]
pub struct Model {
    pub config: Config,
    /// The `config.json` to write back: the input's own, or the one built from GGUF metadata.
    pub hf_config: serde_json::Value,
    pub lm: CausalLm,
    pub tokenizer: TextTokenizer,
    pub path: PathBuf,
    pub format: SourceFormat,
    /// For GGUF: `tokenizer_config.json` rebuilt from metadata. For folders: files to copy.
    pub tokenizer_config: Option<serde_json::Value>,
    pub passthrough: Passthrough,
    /// For GGUF: ggml tensor types and their counts.
    pub quantization: Vec<(String, usize)>,
    /// Where each current layer came from, in terms of the layers as loaded.
    pub origins: Vec<Origin>,
    /// What pruning did to this model (written as `layerfold.json` on save).
    pub provenance: Option<serde_json::Value>,
    /// Every file or folder this model was made from (the checkpoint, calibration files): a save
    /// never writes over one of them (`output`).
    pub inputs: Vec<PathBuf>,
    /// Why the model is on the CPU although `auto` was asked for.
    pub device_fallback: Option<String>,
    /// Why the layers are read from the checkpoint one at a time, when they are.
    pub streamed: Option<String>,
}

/// The merge record and provenance of a model layerfold saved (`layerfold.json` in a folder,
/// `layerfold.provenance` in a GGUF file), so that a pruned model loaded back still knows which
/// original layers each of its layers came from (distillation needs it); the identity record for
/// any other model. `source` names where the text came from, for messages.
fn saved_record(
    text: Option<&str>,
    path: &Path,
    source: &'static str,
    layers: usize,
) -> Result<(Vec<Origin>, Option<serde_json::Value>)> {
    let Some(text) = text else {
        return Ok(((0..layers).map(Origin::Layer).collect(), None));
    };
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::format(path, source, e))?;
    let record: Vec<Origin> = serde_json::from_value(doc["record"].clone()).map_err(|e| {
        Error::format(path, source, format!("its `record` is not a merge record: {e}"))
    })?;
    if record.len() != layers {
        return Err(Error::format(
            path,
            source,
            format!("its record has {} layers, the model {layers}", record.len()),
        ));
    }
    Ok((record, Some(doc)))
}

impl Model {
    /// Loads a Hugging Face folder or a `.gguf` file. The input is only read.
    pub fn load(path: &Path, opts: &LoadOptions, ctx: &RunContext) -> Result<Self> {
        if !path.exists() {
            return Err(Error::NotFound {
                what: "model",
                path: path.to_path_buf(),
                hint:
                    "give a Hugging Face model folder (config.json, *.safetensors, tokenizer.json) \
                       or a .gguf file"
                        .into(),
            });
        }
        let OpenedDevice { device, fallback } = opts.device.open()?;
        ctx.report(Stage::Load, 0, 1);
        let model = if path.is_dir() {
            Self::load_folder(path, opts, &device, ctx)
        } else if is_gguf(path)? {
            Self::load_gguf(path, opts, &device, ctx)
        } else if path.extension().is_some_and(|e| e == "gguf") {
            Err(Error::format(path, "GGUF file", "it does not start with the GGUF magic bytes"))
        } else {
            Err(Error::format(
                path,
                "model",
                "it is neither a folder nor a GGUF file; for safetensors give the folder holding config.json",
            ))
        }?;
        Ok(Self { device_fallback: fallback, ..model })
    }

    fn load_folder(
        dir: &Path,
        opts: &LoadOptions,
        device: &Device,
        ctx: &RunContext,
    ) -> Result<Self> {
        let config_path = dir.join("config.json");
        if !config_path.exists() {
            return Err(Error::NotFound {
                what: "configuration",
                path: config_path,
                hint: "a Hugging Face model folder has a config.json".into(),
            });
        }
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let hf_config: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::format(&config_path, "config.json", e))?;
        let raw: RawConfig = serde_json::from_value(hf_config.clone())
            .map_err(|e| Error::format(&config_path, "config.json", e))?;
        let config = raw.resolve(&config_path)?;
        let weights = safetensors::SafetensorsWeights::open(dir)?;
        let tokenizer = TextTokenizer::from_file(
            &dir.join("tokenizer.json"),
            config.bos_token_id,
            config.eos_token_ids.first().copied(),
        )?;
        tokenizer.check_fits(config.vocab_size, &dir.join("tokenizer.json"))?;
        let (lm, streamed) = build_lm(&config, Box::new(weights), opts, device, ctx)?;
        let saved = dir.join(save::PROVENANCE_FILE);
        let text = match saved.exists() {
            true => Some(std::fs::read_to_string(&saved).map_err(|e| Error::io(&saved, e))?),
            false => None,
        };
        let (origins, provenance) =
            saved_record(text.as_deref(), &saved, "layerfold.json", config.num_hidden_layers)?;
        let existing = |name: &str| Some(dir.join(name)).filter(|p| p.exists());
        Ok(Self {
            config,
            hf_config,
            lm,
            tokenizer,
            path: dir.to_path_buf(),
            format: SourceFormat::Safetensors,
            tokenizer_config: None,
            passthrough: Passthrough {
                tokenizer_config: existing("tokenizer_config.json"),
                special_tokens_map: existing("special_tokens_map.json"),
                generation_config: existing("generation_config.json"),
            },
            quantization: vec![],
            origins,
            provenance,
            inputs: vec![dir.to_path_buf()],
            device_fallback: None,
            streamed,
        })
    }

    fn load_gguf(
        path: &Path,
        opts: &LoadOptions,
        device: &Device,
        ctx: &RunContext,
    ) -> Result<Self> {
        let file = gguf::GgufFile::open(path)?;
        let hf_config = file.hf_config()?;
        let raw: RawConfig = serde_json::from_value(hf_config.clone())
            .map_err(|e| Error::Internal(format!("GGUF config: {e}")))?;
        let config = raw.resolve(path)?;
        let tokenizer = file.tokenizer()?;
        tokenizer.check_fits(config.vocab_size, path)?;
        let tokenizer_config = Some(file.tokenizer_config());
        let quantization = file.quantization_summary();
        let provenance_text = file.provenance().map(str::to_string);
        let (lm, streamed) = build_lm(&config, Box::new(file), opts, device, ctx)?;
        let (origins, provenance) = saved_record(
            provenance_text.as_deref(),
            path,
            "GGUF file (its layerfold.provenance)",
            config.num_hidden_layers,
        )?;
        Ok(Self {
            config,
            hf_config,
            lm,
            tokenizer,
            path: path.to_path_buf(),
            format: SourceFormat::Gguf,
            tokenizer_config,
            passthrough: Passthrough::default(),
            quantization,
            origins,
            provenance,
            inputs: vec![path.to_path_buf()],
            device_fallback: None,
            streamed,
        })
    }

    /// Removes the layers at `indices` (positions in the current list).
    pub fn remove_layers(&mut self, indices: &[usize]) {
        let mut sorted = indices.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        for &i in sorted.iter().rev() {
            self.lm.layers.remove(i);
            self.origins.remove(i);
        }
        self.config.num_hidden_layers = self.lm.layers.len();
    }

    /// Replaces the layers `lo..=hi` by `layer`, recording the merge. A streamed model writes the
    /// new layer to a temporary file and reads it from there ([`LayerSlot::spilled`]), so that
    /// its made layers stay out of memory too.
    pub fn replace_layers(&mut self, lo: usize, hi: usize, layer: DecoderLayer) -> Result<()> {
        let slot = match self.lm.layers.iter().find_map(LayerSlot::store) {
            Some(store) => LayerSlot::spilled(&layer, store)?,
            None => layer.into(),
        };
        self.put(lo, hi, slot);
        Ok(())
    }

    /// Replaces the layers `lo..=hi` by a layer made tensor by tensor: `shapes` (HF names
    /// relative to `model.layers.{i}.`, in [`DecoderLayer::named_tensors`] order) and `make(name)`
    /// for each. A streamed model writes each tensor to the new layer's file as it is made; a
    /// model in memory builds the layer on the structure of layer `lo`.
    pub fn replace_layers_made(
        &mut self,
        lo: usize,
        hi: usize,
        shapes: Vec<stream::TensorShape>,
        make: &dyn Fn(&str) -> Result<candle_core::Tensor>,
    ) -> Result<()> {
        let head_dim = self.lm.layers[lo].head_shape().head_dim;
        let slot = match self.lm.layers.iter().find_map(LayerSlot::store) {
            Some(store) => LayerSlot::made(shapes, head_dim, make, store)?,
            None => self.lm.layers[lo].get()?.try_map_tensors(&mut |name, _| make(name))?.into(),
        };
        self.put(lo, hi, slot);
        Ok(())
    }

    fn put(&mut self, lo: usize, hi: usize, slot: LayerSlot) {
        let parts: Vec<Origin> = self.origins.drain(lo..=hi).collect();
        self.origins.insert(lo, Origin::merge(parts));
        self.lm.layers.splice(lo..=hi, [slot]);
        self.config.num_hidden_layers = self.lm.layers.len();
    }

    /// The current number of decoder layers.
    pub fn num_layers(&self) -> usize {
        self.lm.layers.len()
    }

    /// The parameters of the model as it is now (layers may differ in width after a merge).
    pub fn num_parameters(&self) -> usize {
        let count = |t: &candle_core::Tensor| t.elem_count();
        let mut n = count(&self.lm.embed_tokens) + count(&self.lm.norm.weight);
        n += self.lm.lm_head.as_ref().map(count).unwrap_or(0);
        n += self.lm.layers.iter().map(LayerSlot::parameters).sum::<usize>();
        n
    }

    /// A summary of the model as it is now.
    pub fn info(&self) -> ModelInfo {
        let c = &self.config;
        ModelInfo {
            architecture: c.architecture.model_type(),
            format: self.format.as_str(),
            path: self.path.clone(),
            dtype: dtype_name(self.lm.dtype()),
            device: match self.lm.device().location() {
                candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
                _ => "cpu".into(),
            },
            device_fallback: self.device_fallback.clone(),
            num_layers: self.num_layers(),
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_attention_heads: c.num_attention_heads,
            num_key_value_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            vocab_size: c.vocab_size,
            max_position_embeddings: c.max_position_embeddings,
            rope_theta: c.rope_theta,
            tie_word_embeddings: c.tie_word_embeddings,
            parameters: self.num_parameters(),
            bos_token_id: self.tokenizer.bos_token_id,
            eos_token_id: self.tokenizer.eos_token_id,
            quantization: self.quantization.clone(),
            streamed: self.streamed.clone(),
        }
    }

    /// The longest sequence the model accepts.
    pub fn max_seq_len(&self) -> usize {
        self.config.max_position_embeddings
    }
}

/// The decoder from `src`: in memory, or streamed when asked or when it does not fit (with the
/// reason).
fn build_lm(
    config: &Config,
    src: Box<dyn weights::WeightSource + Send + Sync>,
    opts: &LoadOptions,
    device: &Device,
    ctx: &RunContext,
) -> Result<(CausalLm, Option<String>)> {
    let reason = if opts.stream {
        Some("asked for (stream)".to_string())
    } else if !weights::fits_in_memory(src.as_ref(), opts.dtype) {
        Some(format!(
            "its {:?} weights do not fit the available memory, so its layers are read one at a time",
            opts.dtype
        ))
    } else {
        None
    };
    Ok(match reason {
        Some(why) => (weights::build_streamed(config, src, opts.dtype, device, ctx)?, Some(why)),
        None => (weights::build(config, src.as_ref(), opts.dtype, device, ctx)?, None),
    })
}

/// True when `path` starts with the GGUF magic.
fn is_gguf(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    match f.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == b"GGUF"),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            if path.extension().is_some_and(|e| e == "gguf") {
                Err(Error::format(path, "GGUF file", "the file is shorter than its 4-byte magic"))
            } else {
                Ok(false)
            }
        }
        Err(e) => Err(Error::io(path, e)),
    }
}
