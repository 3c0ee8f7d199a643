//! The model's tokenizer (a `tokenizers::Tokenizer`) and its special ids.

use std::path::Path;

use crate::error::{Error, Result};

/// A tokenizer with the ids layerfold needs: BOS starts every corpus (METHODS.md §1, §4.1).
#[derive(Clone)]
pub struct TextTokenizer {
    pub inner: tokenizers::Tokenizer,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// The file it was read from (`tokenizer.json` or the GGUF file), for messages.
    pub path: std::path::PathBuf,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.inner.get_vocab_size(true))
            .field("bos_token_id", &self.bos_token_id)
            .field("eos_token_id", &self.eos_token_id)
            .finish()
    }
}

impl TextTokenizer {
    /// Reads `tokenizer.json`.
    pub fn from_file(path: &Path, bos: Option<u32>, eos: Option<u32>) -> Result<Self> {
        if !path.exists() {
            return Err(Error::NotFound {
                what: "tokenizer",
                path: path.to_path_buf(),
                hint: "layerfold needs the fast tokenizer file `tokenizer.json` beside config.json"
                    .into(),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::format(path, "tokenizer.json", e))?;
        Ok(Self { inner, bos_token_id: bos, eos_token_id: eos, path: path.to_path_buf() })
    }

    /// Fails unless every id the tokenizer can produce (and its BOS/EOS) has a row in the
    /// model's `vocab_size`-row embedding; `path` names the tokenizer in the message.
    pub fn check_fits(&self, vocab_size: usize, path: &Path) -> Result<()> {
        let tokens = self.inner.get_vocab_size(true);
        let special =
            self.bos_token_id.into_iter().chain(self.eos_token_id).max().map(|i| i as usize + 1);
        let needed = tokens.max(special.unwrap_or(0));
        if needed > vocab_size {
            return Err(Error::format(
                path,
                "tokenizer",
                format!(
                    "it has token ids up to {}, but the model's embedding has {vocab_size} rows \
                     (vocab_size): the tokenizer does not belong to these weights",
                    needed - 1
                ),
            ));
        }
        Ok(())
    }

    /// Token ids of `text` with no special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode_fast(text, false).map_err(|e| {
            Error::format(&self.path, "tokenizer", format!("it cannot encode the text: {e}"))
        })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text` with the special tokens its tokenizer file adds (its post-processor:
    /// stories260K's adds BOS, a GGUF-built one none), as transformers' `encode` gives by default.
    pub fn encode_special(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode_fast(text, true).map_err(|e| {
            Error::format(&self.path, "tokenizer", format!("it cannot encode the text: {e}"))
        })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text` preceded by the one BOS token (when the model has one).
    pub fn encode_with_bos(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        ids.extend(self.bos_token_id);
        ids.extend(self.encode(text)?);
        Ok(ids)
    }

    /// `tokenizer.json` content.
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(true)
            .map_err(|e| Error::Internal(format!("tokenizer serialisation: {e}")))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}
