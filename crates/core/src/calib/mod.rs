//! Calibration sets (METHODS.md §1): lists of token sequences built from a corpus's documents in
//! one of three seeded, reproducible ways.

pub mod text;

use candle_core::Device;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::decoder::TokenBatch;
use crate::model::tokenizer::TextTokenizer;
use text::{join_documents, TextSource};

/// How a calibration set is cut from its documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub enum CalibrationKind {
    /// Documents joined by a blank line, tokenized once with one BOS, cut into non-overlapping
    /// windows; the first `n_samples` (CoMe, perplexity-style).
    Chunked,
    /// One random window from each of `n_samples` random documents long enough (SLM, SLEB).
    Sampled,
    /// `n_samples` random documents, each tokenized on its own with BOS and cut to `seq_len` (LaCo).
    Sentences,
}

/// Where the text comes from and how to cut it. Unset fields take the method's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CalibrationConfig {
    /// A `.txt` (one document per non-empty line) or `.jsonl` (`{"text": …}` rows) file.
    pub file: Option<std::path::PathBuf>,
    /// Inline text instead of a file.
    pub text: Option<String>,
    pub kind: Option<CalibrationKind>,
    pub seq_len: Option<usize>,
    pub n_samples: Option<usize>,
    /// Default 0.
    pub seed: Option<u64>,
}

/// A method's calibration defaults (METHODS.md §1 and each method's section).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationDefaults {
    pub kind: CalibrationKind,
    /// `None`: `min(2048, max_position_embeddings)`.
    pub seq_len: Option<usize>,
    pub n_samples: usize,
}

impl CalibrationDefaults {
    /// **(ours)** chunked, `seqLen = min(2048, context)`, 128 samples.
    pub const GENERIC: Self =
        Self { kind: CalibrationKind::Chunked, seq_len: None, n_samples: 128 };
}

/// The resolved settings a set was built with, recorded in reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub struct CalibrationSummary {
    pub kind: CalibrationKind,
    pub seq_len: usize,
    pub n_samples: usize,
    pub seed: u64,
    pub tokens: usize,
    pub source: String,
}

/// Token sequences for calibration, each starting with BOS where its source text does.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationSet {
    pub samples: Vec<Vec<u32>>,
    pub summary: CalibrationSummary,
    pub warnings: Vec<String>,
}

impl CalibrationConfig {
    pub fn source(&self) -> Result<TextSource> {
        match (&self.file, &self.text) {
            (Some(f), None) => Ok(TextSource::File(f.clone())),
            (None, Some(t)) => Ok(TextSource::Text(t.clone())),
            (None, None) => {
                Err(Error::config("calibration", "give a calibration `file` or `text`"))
            }
            (Some(_), Some(_)) => {
                Err(Error::config("calibration", "give either `file` or `text`, not both"))
            }
        }
    }
}

impl CalibrationSet {
    /// Builds the set `cfg` asks for, with `defaults` for what it leaves unset.
    pub fn build(
        tokenizer: &TextTokenizer,
        max_seq_len: usize,
        cfg: &CalibrationConfig,
        defaults: CalibrationDefaults,
    ) -> Result<Self> {
        let kind = cfg.kind.unwrap_or(defaults.kind);
        let seq_len = cfg.seq_len.or(defaults.seq_len).unwrap_or(max_seq_len.min(2048));
        let n_samples = cfg.n_samples.unwrap_or(defaults.n_samples);
        let seed = cfg.seed.unwrap_or(0);
        // Two tokens at least: NLL-scored methods predict each token from the ones before it.
        if seq_len < 2 || seq_len > max_seq_len {
            return Err(Error::config(
                "calibration.seqLen",
                format!("{seq_len} is outside 2..={max_seq_len} (the model's context)"),
            ));
        }
        if n_samples == 0 {
            return Err(Error::config("calibration.nSamples", "must be at least 1"));
        }
        let source = cfg.source()?;
        let docs = source.documents()?;
        let mut warnings = Vec::new();
        let samples = match kind {
            CalibrationKind::Chunked => {
                chunked(tokenizer, &docs, seq_len, n_samples, &mut warnings)?
            }
            CalibrationKind::Sampled => {
                sampled(tokenizer, &docs, seq_len, n_samples, seed, &mut warnings)?
            }
            CalibrationKind::Sentences => sentences(tokenizer, &docs, seq_len, n_samples, seed)?,
        };
        let summary = CalibrationSummary {
            kind,
            seq_len,
            n_samples: samples.len(),
            seed,
            tokens: samples.iter().map(Vec::len).sum(),
            source: match &source {
                TextSource::File(f) => f.display().to_string(),
                TextSource::Text(_) => "inline text".into(),
            },
        };
        Ok(Self { samples, summary, warnings })
    }

    /// Right-padded batches of up to `batch_size` samples, in order.
    pub fn batches(&self, batch_size: usize, device: &Device) -> Result<Vec<TokenBatch>> {
        self.samples
            .chunks(batch_size.max(1))
            .enumerate()
            .map(|(k, chunk)| {
                let refs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
                Ok(TokenBatch::new(&refs, 0, device)?.with_index(k))
            })
            .collect()
    }

    /// Tokens that have a next token to predict.
    pub fn predicted_tokens(&self) -> usize {
        self.samples.iter().map(|s| s.len().saturating_sub(1)).sum()
    }
}

fn chunked(
    tok: &TextTokenizer,
    docs: &[String],
    seq_len: usize,
    n: usize,
    warnings: &mut Vec<String>,
) -> Result<Vec<Vec<u32>>> {
    let ids = tok.encode_with_bos(&join_documents(docs))?;
    if ids.len() < seq_len {
        warnings.push(format!(
            "the corpus has {} tokens, fewer than seqLen {seq_len}: used whole",
            ids.len()
        ));
        return Ok(vec![ids]);
    }
    let windows: Vec<Vec<u32>> = ids.chunks_exact(seq_len).take(n).map(<[u32]>::to_vec).collect();
    if windows.len() < n {
        warnings.push(format!(
            "the corpus holds only {} windows of {seq_len} tokens, not {n}",
            windows.len()
        ));
    }
    Ok(windows)
}

fn sampled(
    tok: &TextTokenizer,
    docs: &[String],
    seq_len: usize,
    n: usize,
    seed: u64,
    warnings: &mut Vec<String>,
) -> Result<Vec<Vec<u32>>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let encoded: Vec<Vec<u32>> =
        docs.iter().map(|d| tok.encode_with_bos(d)).collect::<Result<_>>()?;
    let mut eligible: Vec<usize> =
        (0..encoded.len()).filter(|&i| encoded[i].len() >= seq_len).collect();
    if eligible.is_empty() {
        return Err(Error::Data {
            message: format!(
                "no calibration document has {seq_len} tokens: lower seqLen or use kind `chunked`"
            ),
        });
    }
    eligible.shuffle(&mut rng);
    if eligible.len() < n {
        warnings.push(format!(
            "only {} documents have {seq_len} tokens: some give more than one window",
            eligible.len()
        ));
    }
    Ok((0..n)
        .map(|k| {
            let doc = &encoded[eligible[k % eligible.len()]];
            let start = rng.random_range(0..=doc.len() - seq_len);
            doc[start..start + seq_len].to_vec()
        })
        .collect())
}

fn sentences(
    tok: &TextTokenizer,
    docs: &[String],
    seq_len: usize,
    n: usize,
    seed: u64,
) -> Result<Vec<Vec<u32>>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..docs.len()).collect();
    order.shuffle(&mut rng);
    order
        .into_iter()
        .take(n)
        .map(|i| {
            let mut ids = tok.encode_with_bos(&docs[i])?;
            ids.truncate(seq_len);
            Ok(ids)
        })
        .collect()
}
