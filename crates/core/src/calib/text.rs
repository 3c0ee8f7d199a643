//! Documents of a text or jsonl file (METHODS.md §1): a plain-text file's documents are its lines
//! without the line ending (`\r\n` or `\n`; nothing else is stripped), skipping lines that are
//! empty or only whitespace; a jsonl file's documents are its rows' `text` fields. The same rule
//! reads perplexity corpora (METHODS.md §4.1).

use std::path::Path;

use crate::error::{Error, Result};

/// The documents of plain text.
pub fn documents(text: &str) -> Vec<&str> {
    text.split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter(|line| !line.trim().is_empty())
        .collect()
}

/// The documents of a `.jsonl` file's content: each row's `text` field.
pub fn jsonl_documents(content: &str, path: &Path) -> Result<Vec<String>> {
    let mut docs = Vec::new();
    for (i, line) in content.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let row: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::Data {
            message: format!("`{}` line {}: not JSON ({e})", path.display(), i + 1),
        })?;
        let text = row.get("text").and_then(|t| t.as_str()).ok_or_else(|| Error::Data {
            message: format!("`{}` line {}: no string field `text`", path.display(), i + 1),
        })?;
        if !text.trim().is_empty() {
            docs.push(text.to_string());
        }
    }
    Ok(docs)
}

/// Reads the documents of a text (`*.txt` or anything else) or jsonl (`*.jsonl`) file. Fails with
/// `E_DATA` when it holds no document.
pub fn read_documents(path: &Path) -> Result<Vec<String>> {
    if !path.exists() {
        return Err(Error::NotFound {
            what: "text file",
            path: path.to_path_buf(),
            hint: "check the path".into(),
        });
    }
    if path.is_dir() {
        return Err(Error::config(
            "file",
            format!("`{}` is a folder: give a .txt or .jsonl file", path.display()),
        ));
    }
    let content = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => {
            Error::Data { message: format!("`{}` is not UTF-8 text", path.display()) }
        }
        _ => Error::io(path, e),
    })?;
    let docs = if path.extension().is_some_and(|e| e == "jsonl") {
        jsonl_documents(&content, path)?
    } else {
        documents(&content).into_iter().map(str::to_string).collect()
    };
    if docs.is_empty() {
        return Err(Error::Data {
            message: format!("`{}` holds no text: every line is empty", path.display()),
        });
    }
    Ok(docs)
}

/// Where text comes from: given inline, or a file path.
#[derive(Debug, Clone, PartialEq)]
pub enum TextSource {
    /// Plain text; its documents are its non-empty lines.
    Text(String),
    /// A `.txt` or `.jsonl` file (see [`read_documents`]).
    File(std::path::PathBuf),
}

impl TextSource {
    /// The documents; `E_DATA` when there are none.
    pub fn documents(&self) -> Result<Vec<String>> {
        match self {
            TextSource::File(path) => read_documents(path),
            TextSource::Text(text) => {
                let docs: Vec<String> = documents(text).into_iter().map(str::to_string).collect();
                if docs.is_empty() {
                    return Err(Error::Data {
                        message: "the text is empty: give at least one non-empty line".into(),
                    });
                }
                Ok(docs)
            }
        }
    }
}

/// Documents joined by a blank line, as one corpus (METHODS.md §1 "chunked corpus", §4.1).
pub fn join_documents<S: AsRef<str>>(docs: &[S]) -> String {
    docs.iter().map(|d| d.as_ref()).collect::<Vec<_>>().join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_trailing_spaces_and_drop_blank_lines() {
        let text = " = Title = \r\n\r\n  \r\nA line. \r\nlast";
        assert_eq!(documents(text), vec![" = Title = ", "A line. ", "last"]);
    }

    #[test]
    fn jsonl_rows_give_text_fields() {
        let docs =
            jsonl_documents("{\"text\": \"a\"}\n\n{\"text\": \"b c\"}\n", Path::new("x.jsonl"))
                .unwrap();
        assert_eq!(docs, vec!["a", "b c"]);
        let err = jsonl_documents("{\"t\": 1}\n", Path::new("x.jsonl")).unwrap_err();
        assert_eq!(err.code(), "E_DATA");
    }
}
