//! `layerfold analyze`: how similar the model's layers are to each other on calibration text —
//! all-pairs cosine and linear CKA of HF states (METHODS.md §2.4) and Block Influence (§2.1) — from
//! one calibration pass.

use serde::Serialize;

use crate::calib::{
    CalibrationConfig, CalibrationDefaults, CalibrationKind, CalibrationSet, CalibrationSummary,
};
use crate::context::{RunContext, Stage};
use crate::error::Result;
use crate::methods::calibration_pass;
use crate::model::decoder::Observers;
use crate::model::Model;
use crate::score::bi::{BlockInfluence, LastState};
use crate::score::cka::{LayerSimilarity, SimilarityMatrices};

/// **(ours)** 16 chunked windows of 256 tokens: CKA's Gram matrices stay small.
pub const CALIBRATION: CalibrationDefaults =
    CalibrationDefaults { kind: CalibrationKind::Chunked, seq_len: Some(256), n_samples: 16 };

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    pub calibration: CalibrationSummary,
    #[serde(flatten)]
    pub matrices: SimilarityMatrices,
    /// `cos(h_i, h_{i+1})` averaged over tokens, the matrix's first off-diagonal.
    pub adjacent_cosine: Vec<f64>,
    pub block_influence: Vec<f64>,
    pub warnings: Vec<String>,
}

pub fn analyze(
    model: &Model,
    calibration: &CalibrationConfig,
    ctx: &RunContext,
) -> Result<Analysis> {
    ctx.report(Stage::Tokenize, 0, 1);
    let calib =
        CalibrationSet::build(&model.tokenizer, model.max_seq_len(), calibration, CALIBRATION)?;
    ctx.report(Stage::Tokenize, 1, 1);
    let n = model.num_layers();
    let mut sim = LayerSimilarity::new(n);
    let mut bi = BlockInfluence::new(n, LastState::PostNorm);
    calibration_pass(model, &calib, &mut Observers(vec![&mut sim, &mut bi]), ctx)?;
    let matrices = sim.matrices();
    let adjacent_cosine = (0..n).map(|i| matrices.cosine[i][i + 1]).collect();
    Ok(Analysis {
        calibration: calib.summary,
        matrices,
        adjacent_cosine,
        block_influence: bi.mean(),
        warnings: calib.warnings,
    })
}
