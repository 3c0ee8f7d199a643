//! Entry points of the fuzz targets (`crates/core/fuzz`, run with cargo-fuzz) and of their
//! regression tests (`tests/fuzz_regressions.rs`). Each takes untrusted bytes through the code a
//! user's file goes through, written to disk first where the loader reads files. Returning any
//! `Err` is correct behaviour; a panic, an abort, or an allocation the input does not justify is a
//! bug (issue 9).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::calib::text::{documents, jsonl_documents, read_documents};
use crate::calib::{CalibrationConfig, CalibrationDefaults, CalibrationKind, CalibrationSet};
use crate::context::RunContext;
use crate::error::{Error, Result};
use crate::model::config::{Config, RawConfig};
use crate::model::gguf::GgufFile;
use crate::model::safetensors::{SafetensorsWeights, INDEX_FILE, SINGLE_FILE};
use crate::model::save::{save, SaveOptions};
use crate::model::tokenizer::TextTokenizer;
use crate::model::weights::{self, WeightSource};
use crate::model::{LoadOptions, Model};

/// What every target needs: a scratch folder of its own and the real stories260K model, whose
/// configuration, weights and tokenizer the fuzzed inputs are checked against.
pub struct Fixture {
    scratch: PathBuf,
    config: Config,
    weights: SafetensorsWeights,
    tokenizer: TextTokenizer,
}

impl Fixture {
    /// `scratch` is created (and owned by this fixture); `stories` is `shared/models/stories260K`.
    /// The shard folder for [`Fixture::safetensors_index`] holds stories260K saved with one tensor
    /// per shard, as `model-{k:05}-of-{n:05}.safetensors` in tensor-name order.
    pub fn new(scratch: &Path, stories: &Path) -> Result<Self> {
        let ctx = RunContext::new();
        std::fs::create_dir_all(scratch).map_err(|e| Error::io(scratch, e))?;
        let model = Model::load(stories, &LoadOptions::default(), &ctx)?;
        let shards = scratch.join("shards");
        if !shards.join(INDEX_FILE).exists() {
            save(&model, &shards, &SaveOptions { max_shard_bytes: 1, ..Default::default() }, &ctx)?;
        }
        Ok(Self {
            scratch: scratch.to_path_buf(),
            config: model.config.clone(),
            weights: SafetensorsWeights::open(stories)?,
            tokenizer: model.tokenizer.clone(),
        })
    }

    fn write(&self, rel: &str, bytes: &[u8]) -> Result<PathBuf> {
        let path = self.scratch.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
        Ok(path)
    }

    fn build(&self, cfg: &Config, src: &dyn WeightSource) -> Result<()> {
        weights::build(cfg, src, DType::F32, &Device::Cpu, &RunContext::new()).map(|_| ())
    }

    /// `bytes` as `model.safetensors`: every tensor it lists is read, then the stories260K
    /// configuration is built from it.
    pub fn safetensors(&self, bytes: &[u8]) -> Result<()> {
        let dir = self.scratch.join("single");
        self.write(&format!("single/{SINGLE_FILE}"), bytes)?;
        let weights = SafetensorsWeights::open(&dir)?;
        for name in weights.names() {
            weights.load(&name)?;
        }
        self.build(&self.config, &weights)
    }

    /// `bytes` as `model.safetensors.index.json` beside real shards.
    pub fn safetensors_index(&self, bytes: &[u8]) -> Result<()> {
        let dir = self.scratch.join("shards");
        self.write(&format!("shards/{INDEX_FILE}"), bytes)?;
        let weights = SafetensorsWeights::open(&dir)?;
        for name in weights.names() {
            weights.load(&name)?;
        }
        self.build(&self.config, &weights)
    }

    /// `bytes` as a `.gguf` file: the header, the configuration and tokenizer rebuilt from its
    /// metadata, and every weight, as `Model::load` takes them.
    pub fn gguf(&self, bytes: &[u8]) -> Result<()> {
        let path = self.write("model.gguf", bytes)?;
        let file = GgufFile::open(&path)?;
        let raw: RawConfig = serde_json::from_value(file.hf_config()?)
            .map_err(|e| Error::Internal(format!("GGUF config: {e}")))?;
        let config = raw.resolve(&path)?;
        let tokenizer = file.tokenizer()?;
        tokenizer.check_fits(config.vocab_size, &path)?;
        tokenizer.encode("Once upon a time, a cat sat.")?;
        file.tokenizer_config();
        self.build(&config, &file)
    }

    /// `bytes` as `config.json`, resolved and built against the real stories260K weights.
    pub fn config(&self, bytes: &[u8]) -> Result<()> {
        let path = Path::new("config.json");
        let raw: RawConfig =
            serde_json::from_slice(bytes).map_err(|e| Error::format(path, "config.json", e))?;
        let config = raw.resolve(path)?;
        self.tokenizer.check_fits(config.vocab_size, path)?;
        self.build(&config, &self.weights)
    }

    /// `bytes` as a text or a jsonl file (by the first byte): its documents, and a calibration set
    /// of one kind (by the second byte) cut from it with the stories260K tokenizer.
    pub fn text(&self, bytes: &[u8]) -> Result<()> {
        if let Ok(text) = std::str::from_utf8(bytes) {
            documents(text);
            let _ = jsonl_documents(text, Path::new("x.jsonl"));
        }
        let pick = |i: usize| bytes.get(i).copied().unwrap_or(0);
        let name = if pick(0) % 2 == 0 { "text.txt" } else { "rows.jsonl" };
        let file = self.write(name, bytes)?;
        read_documents(&file)?;
        let kinds =
            [CalibrationKind::Chunked, CalibrationKind::Sampled, CalibrationKind::Sentences];
        let cfg = CalibrationConfig {
            file: Some(file),
            kind: Some(kinds[pick(1) as usize % 3]),
            seq_len: Some(8),
            n_samples: Some(3),
            ..Default::default()
        };
        CalibrationSet::build(&self.tokenizer, 512, &cfg, CalibrationDefaults::GENERIC).map(|_| ())
    }
}
