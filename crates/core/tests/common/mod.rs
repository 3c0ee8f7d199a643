//! Shared by the integration tests: where fixtures live, and loud failures when one is missing.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

use layerfold_core::calib::{CalibrationConfig, CalibrationKind};
use layerfold_core::{LoadOptions, Model, RunContext};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root exists")
}

/// A file under `../shared` (or `$LAYERFOLD_SHARED`); panics naming it when missing.
pub fn shared(rel: &str) -> PathBuf {
    let base = std::env::var_os("LAYERFOLD_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared"));
    let p = base.join(rel);
    assert!(
        p.exists(),
        "missing shared fixture {}: the tests read ../shared beside the checkout",
        p.display()
    );
    p
}

/// The SmolLM2 GGUF in the model cache; panics with how to fetch it.
pub fn smollm2() -> PathBuf {
    let cache = std::env::var_os("LAYERFOLD_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/layerfold")
    });
    let p = cache.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.exists(), "missing {}: run `npm run fetch-model` first", p.display());
    p
}

/// A file beside the oracle script.
pub fn oracle(rel: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oracle").join(rel);
    assert!(
        p.exists(),
        "missing oracle fixture {}: run tests/oracle/make_fixtures.py",
        p.display()
    );
    p
}

pub fn oracle_json(name: &str) -> serde_json::Value {
    let p = oracle(&format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

pub fn load(path: &std::path::Path) -> Model {
    Model::load(path, &LoadOptions::default(), &RunContext::new())
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// `max |a − b| / max(1, max |b|)`: the relative error of a row against its reference.
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f64, f64::max) / scale
}

pub fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

pub fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("integer") as u32).collect()
}

/// `n` calibration samples of `seq_len` tokens of `kind` from the WikiText-2 validation text.
pub fn calibration(kind: CalibrationKind, seq_len: usize, n: usize) -> CalibrationConfig {
    CalibrationConfig {
        file: Some(shared("data/text/wikitext2_valid_tokenized.txt")),
        kind: Some(kind),
        seq_len: Some(seq_len),
        n_samples: Some(n),
        ..Default::default()
    }
}
