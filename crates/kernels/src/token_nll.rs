//! `token-nll`: the negative log-likelihood of each row's target token,
//! `logsumexp(logits[t]) − logits[t, target_t]`, in one pass per row with no `[n, V]` temporary.
//! Perplexity (METHODS.md §4.1) and the zero-shot log-likelihoods (§4.2) reduce to it.
//! [`token_nll_slow`] is the composed definition it is tested against.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use crate::vec_exp::{self, dispatch};

struct TokenNll;

dispatch! {
    fn nll_rows(logits: &[f32], vocab: usize, targets: &[u32], out: &mut [f32]) {
        for ((row, &t), o) in logits.chunks_exact(vocab).zip(targets).zip(out.iter_mut()) {
            let m = vec_exp::max(row);
            let lse = m + vec_exp::sum_exp_shift(row, m).ln();
            *o = lse - row[t as usize];
        }
    }
}

impl candle_core::CustomOp2 for TokenNll {
    fn name(&self) -> &'static str {
        "token-nll"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(logits), CpuStorage::U32(targets)) = (s1, s2) else {
            candle_core::bail!(
                "token-nll: needs f32 logits and u32 targets, got {:?} and {:?}",
                s1.dtype(),
                s2.dtype()
            )
        };
        let (Some((a, b)), Some((c, d))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("token-nll: logits and targets must be contiguous")
        };
        let (n, vocab) = (l1.dims()[0], l1.dims()[1]);
        let (logits, targets) = (&logits[a..b], &targets[c..d]);
        if let Some(bad) = targets.iter().find(|&&t| t as usize >= vocab) {
            candle_core::bail!("token-nll: target {bad} is outside the vocabulary of {vocab}")
        }
        let mut out = vec![0f32; n];
        const ROWS: usize = 8;
        out.par_chunks_mut(ROWS).enumerate().for_each(|(k, o)| {
            let r = k * ROWS;
            nll_rows(&logits[r * vocab..(r + o.len()) * vocab], vocab, &targets[r..r + o.len()], o)
        });
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }
}

fn check(logits: &Tensor, targets: &Tensor) -> Result<()> {
    let (n, _) = logits.dims2()?;
    if targets.dims1()? != n {
        candle_core::bail!("token-nll: {n} rows of logits but {} targets", targets.dims1()?)
    }
    if logits.dtype() != DType::F32 || targets.dtype() != DType::U32 {
        candle_core::bail!("token-nll: needs f32 logits and u32 targets")
    }
    Ok(())
}

/// NLL per row, `[n]` f32, for logits `[n, V]` f32 and targets `[n]` u32 (CPU).
pub fn token_nll(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    check(logits, targets)?;
    logits.contiguous()?.apply_op2_no_bwd(&targets.contiguous()?, &TokenNll)
}

/// The composed definition.
pub fn token_nll_slow(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    check(logits, targets)?;
    let picked = logits.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    logits.log_sum_exp(D::Minus1)? - picked
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_composed_definition() {
        for (n, vocab) in [(1, 1), (3, 17), (19, 1000)] {
            let logits =
                (Tensor::randn(0f32, 1.0, (n, vocab), &Device::Cpu).unwrap() * 8.0).unwrap();
            let targets: Vec<u32> = (0..n as u32).map(|i| (i * 7) % vocab as u32).collect();
            let targets = Tensor::new(targets, &Device::Cpu).unwrap();
            let got = token_nll(&logits, &targets).unwrap().to_vec1::<f32>().unwrap();
            let want = token_nll_slow(&logits, &targets).unwrap().to_vec1::<f32>().unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                    "{g} vs {w} (n {n}, vocab {vocab})"
                );
            }
        }
    }

    #[test]
    fn rejects_out_of_vocabulary_targets() {
        let logits = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
        let targets = Tensor::new(&[1u32, 4], &Device::Cpu).unwrap();
        assert!(token_nll(&logits, &targets)
            .unwrap_err()
            .to_string()
            .contains("outside the vocabulary"));
    }
}
