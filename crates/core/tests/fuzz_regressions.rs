//! Every input a fuzz target (crates/core/fuzz) crashed on, and the hand-made inputs behind the
//! fixes of issue 9, run through the same entry point as the target: each must now return, with any
//! error, instead of panicking or aborting. Inputs live in `tests/fuzz/<target>/`; the file name says
//! what the input was.

mod common;

use std::path::PathBuf;

use common::*;
use layerfold_core::fuzzing::Fixture;
use layerfold_core::Result;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz").join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("missing {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "{} holds no regression input", dir.display());
    out
}

/// Runs every input of `target`; returns the number that failed, so a test can also assert that
/// bad inputs are refused rather than accepted.
fn run(target: &str, f: fn(&Fixture, &[u8]) -> Result<()>) -> usize {
    let scratch = tempfile::tempdir().unwrap();
    let fixture = Fixture::new(scratch.path(), &shared("models/stories260K")).unwrap();
    let mut refused = 0;
    for (name, bytes) in inputs(target) {
        // A panic fails the test and names the input.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&fixture, &bytes)));
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                assert_ne!(e.code(), "E_INTERNAL", "{target}/{name}: {e}");
                refused += 1;
            }
            Err(_) => panic!("{target}/{name} panics again"),
        }
    }
    refused
}

#[test]
fn gguf() {
    assert!(run("gguf", Fixture::gguf) > 0);
}

#[test]
fn config() {
    assert!(run("config", Fixture::config) > 0);
}

#[test]
fn safetensors() {
    assert!(run("safetensors", Fixture::safetensors) > 0);
}

#[test]
fn safetensors_index() {
    assert!(run("safetensors_index", Fixture::safetensors_index) > 0);
}

#[test]
fn text() {
    run("text", Fixture::text);
}
