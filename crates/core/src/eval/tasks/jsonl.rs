//! The two row formats of jsonl task files (`../shared/README.md`, "data/eval"):
//! `{query, choices, gold}` (one context, a continuation per choice) and
//! `{context_options, continuation, gold}` (WinoGrande's partial scoring). Every row is checked
//! as it is read; an error names the file and the 1-based line.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::eval::tasks::{bad_line, Example};

pub const CHOICES_FORMAT: &str =
    "one JSON object per line: {\"query\": str, \"choices\": [str, …], \"gold\": index}";
pub const CONTEXTS_FORMAT: &str =
    "one JSON object per line: {\"context_options\": [str, …], \"continuation\": str, \"gold\": index}";
pub const ANY_FORMAT: &str =
    "one JSON object per line, either {\"query\", \"choices\", \"gold\"} or \
                              {\"context_options\", \"continuation\", \"gold\"}";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChoicesRow {
    query: String,
    choices: Vec<String>,
    gold: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextsRow {
    context_options: Vec<String>,
    continuation: String,
    gold: usize,
}

fn check_gold(path: &Path, line: usize, gold: usize, n: usize) -> Result<()> {
    if n < 2 {
        return Err(bad_line(
            path,
            line,
            format!("{n} choices; a multiple-choice example needs at least 2"),
        ));
    }
    if gold >= n {
        return Err(bad_line(path, line, format!("gold index {gold} is outside 0..{n}")));
    }
    Ok(())
}

fn choices(path: &Path, line: usize, value: serde_json::Value) -> Result<Example> {
    let row: ChoicesRow = serde_json::from_value(value)
        .map_err(|e| bad_line(path, line, format!("{e} (expected {CHOICES_FORMAT})")))?;
    check_gold(path, line, row.gold, row.choices.len())?;
    Ok(Example::Choices { context: row.query, choices: row.choices, gold: row.gold })
}

fn contexts(path: &Path, line: usize, value: serde_json::Value) -> Result<Example> {
    let row: ContextsRow = serde_json::from_value(value)
        .map_err(|e| bad_line(path, line, format!("{e} (expected {CONTEXTS_FORMAT})")))?;
    check_gold(path, line, row.gold, row.context_options.len())?;
    if row.context_options.iter().any(String::is_empty) {
        return Err(bad_line(path, line, "an empty context option"));
    }
    Ok(Example::Contexts {
        contexts: row.context_options,
        continuation: row.continuation,
        gold: row.gold,
    })
}

/// The rows of a jsonl file through `parse`; blank lines are skipped, an empty file is an error.
fn rows(
    path: &Path,
    parse: impl Fn(usize, serde_json::Value) -> Result<Example>,
) -> Result<Vec<Example>> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => {
            Error::Data { message: format!("`{}` is not UTF-8 text", path.display()) }
        }
        _ => Error::io(path, e),
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| bad_line(path, i + 1, format!("not JSON ({e})")))?;
        out.push(parse(i + 1, value)?);
    }
    if out.is_empty() {
        return Err(Error::Data { message: format!("`{}` holds no example", path.display()) });
    }
    Ok(out)
}

/// A file of `{query, choices, gold}` rows.
pub fn read_choices(path: &Path) -> Result<Vec<Example>> {
    rows(path, |line, v| choices(path, line, v))
}

/// A file of `{context_options, continuation, gold}` rows.
pub fn read_contexts(path: &Path) -> Result<Vec<Example>> {
    rows(path, |line, v| contexts(path, line, v))
}

/// A user's file: each row in either format.
pub fn read_any(path: &Path) -> Result<Vec<Example>> {
    rows(path, |line, v| {
        if v.get("context_options").is_some() {
            contexts(path, line, v)
        } else {
            choices(path, line, v)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.jsonl");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn reads_both_formats_and_skips_blank_lines() {
        let (_d, p) = file(
            "{\"query\": \"Q\", \"choices\": [\"a\", \"b\"], \"gold\": 1}\n\n\
             {\"context_options\": [\"x _\", \"y _\"], \"continuation\": \"c\", \"gold\": 0}\n",
        );
        let ex = read_any(&p).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].requests(), vec![("Q".into(), " a".into()), ("Q".into(), " b".into())]);
        assert_eq!(ex[1].requests()[1], ("y _".to_string(), " c".to_string()));
        assert_eq!(ex[1].choice_texts(), ["x _", "y _"]);
    }

    #[test]
    fn bad_rows_name_the_file_and_line() {
        for (text, want) in [
            (
                "{\"query\": \"Q\", \"choices\": [\"a\", \"b\"], \"gold\": 2}\n",
                "line 1: gold index 2",
            ),
            ("\n{\"query\": \"Q\", \"choices\": [\"a\"], \"gold\": 0}\n", "line 2: 1 choices"),
            ("{\"query\": \"Q\", \"gold\": 0}\n", "line 1: missing field `choices`"),
            (
                "{\"query\": \"Q\", \"choices\": [\"a\", \"b\"], \"gold\": -1}\n",
                "line 1: invalid value",
            ),
            ("{\"query\": \"Q\"\n", "line 1: not JSON"),
            ("\n\n", "holds no example"),
        ] {
            let (_d, p) = file(text);
            let e = read_any(&p).unwrap_err();
            assert_eq!(e.code(), "E_DATA", "{e}");
            assert!(
                e.to_string().contains(want) && e.to_string().contains("t.jsonl"),
                "want {want}: {e}"
            );
        }
    }
}
