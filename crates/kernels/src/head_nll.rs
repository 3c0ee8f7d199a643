//! `head-nll`: for final states `h` `[n, d]`, the LM head `W` `[V, d]` and targets `[n]`, each
//! row's negative log-likelihood `logsumexp(h Wᵀ) − (h Wᵀ)[target]` and its greedy token
//! `argmax(h Wᵀ)`, without the `[n, V]` logits.
//!
//! Perplexity (METHODS.md §4.1), the calibration losses of SLEB and CoMe-P, and the zero-shot
//! log-likelihoods (§4.2) need only these two numbers per row, yet the logits of 512 rows over
//! SmolLM2's 49,152 tokens are 100 MB, allocated, written and read again for every chunk. On the
//! CPU (f32) each rayon task takes a range of the vocabulary: for each block of
//! [`VOCAB_BLOCK`] head rows (kept in cache) it multiplies every row block of `h` by it into a
//! small tile ([`crate::blas`]) and folds the tile into running per-row statistics (maximum and
//! sum of exponentials, as in online softmax; the best token; the target's logit). The tasks'
//! statistics are then combined. [`head_nll_slow`] is the definition: the logits, candle's
//! log-sum-exp, gather and argmax.

use candle_core::{CpuStorage, DType, Result, Storage, Tensor, D};
use rayon::prelude::*;

use crate::blas;
use crate::vec_exp::{self, dispatch};

/// Head rows per block: `[512, d]` f32 is 1.2 MB at d = 576, which stays in L2 while every row
/// block of `h` passes.
const VOCAB_BLOCK: usize = 512;
/// Rows of `h` per product: a `[128, 512]` f32 tile is 256 KB.
const ROW_BLOCK: usize = 128;

/// One row's statistics over the part of the vocabulary seen so far.
#[derive(Clone, Copy)]
struct RowStats {
    /// The largest logit and the first token that has it.
    max: f32,
    best: u32,
    /// `Σ e^(logit − max)`.
    sum: f32,
    /// The target's logit, once its block has been seen.
    target: f32,
}

impl RowStats {
    const EMPTY: RowStats =
        RowStats { max: f32::NEG_INFINITY, best: 0, sum: 0.0, target: f32::NAN };

    /// The statistics of two disjoint parts of the vocabulary, `self` covering the lower tokens.
    fn combine(self, other: RowStats) -> RowStats {
        let max = self.max.max(other.max);
        let rescale = |s: RowStats| if s.sum == 0.0 { 0.0 } else { s.sum * (s.max - max).exp() };
        RowStats {
            max,
            // A tie goes to the lower token, as argmax's first occurrence does.
            best: if other.max > self.max { other.best } else { self.best },
            sum: rescale(self) + rescale(other),
            target: if self.target.is_nan() { other.target } else { self.target },
        }
    }
}

dispatch! {
    // Folds a tile (`rows × width` logits of tokens `token0..token0 + width`) into `stats`, one
    // entry per tile row; `targets` are the rows' target tokens.
    fn fold_tile(tile: &[f32], width: usize, token0: usize, targets: &[u32], stats: &mut [RowStats]) {
        for ((row, st), &t) in tile.chunks_exact(width).zip(stats.iter_mut()).zip(targets) {
            let m = vec_exp::max(row);
            if m > st.max {
                let first = row.iter().position(|&x| x == m).unwrap_or(0);
                st.sum = if st.sum == 0.0 { 0.0 } else { st.sum * vec_exp::exp(st.max - m) };
                st.max = m;
                st.best = (token0 + first) as u32;
            }
            st.sum += vec_exp::sum_exp_shift(row, st.max);
            let t = t as usize;
            if (token0..token0 + width).contains(&t) {
                st.target = row[t - token0];
            }
        }
    }
}

/// The CPU pass over f32 slices: `h` `[n, d]`, `w` `[vocab, d]`.
fn cpu(
    h: &[f32],
    w: &[f32],
    targets: &[u32],
    (n, d, vocab): (usize, usize, usize),
) -> Vec<RowStats> {
    let tasks = (rayon::current_num_threads() * 4).min(vocab.div_ceil(VOCAB_BLOCK)).max(1);
    // Whole vocabulary blocks per task.
    let per_task = vocab.div_ceil(VOCAB_BLOCK).div_ceil(tasks) * VOCAB_BLOCK;
    let partials: Vec<Vec<RowStats>> = (0..vocab.div_ceil(per_task))
        .into_par_iter()
        .map(|task| {
            let mut stats = vec![RowStats::EMPTY; n];
            let mut tile = vec![0f32; ROW_BLOCK * VOCAB_BLOCK];
            let end = ((task + 1) * per_task).min(vocab);
            for v0 in (task * per_task..end).step_by(VOCAB_BLOCK) {
                let width = VOCAB_BLOCK.min(end - v0);
                let block = &w[v0 * d..(v0 + width) * d];
                for r0 in (0..n).step_by(ROW_BLOCK) {
                    let rows = ROW_BLOCK.min(n - r0);
                    let tile = &mut tile[..rows * width];
                    blas::sgemm(
                        (rows, width, d),
                        &h[r0 * d..],
                        d,
                        block,
                        d,
                        true,
                        tile,
                        width,
                        0.0,
                    );
                    let (t, st) = (&targets[r0..r0 + rows], &mut stats[r0..r0 + rows]);
                    fold_tile(tile, width, v0, t, st);
                }
            }
            stats
        })
        .collect();
    let mut total = vec![RowStats::EMPTY; n];
    for part in partials {
        for (t, p) in total.iter_mut().zip(part) {
            *t = t.combine(p);
        }
    }
    total
}

fn check(h: &Tensor, w: &Tensor, targets: &Tensor) -> Result<(usize, usize, usize)> {
    let ((n, d), (vocab, dw)) = (h.dims2()?, w.dims2()?);
    if d != dw || targets.dims1()? != n {
        candle_core::bail!(
            "head-nll: states {:?}, head {:?} and targets {:?} do not fit",
            h.shape(),
            w.shape(),
            targets.shape()
        )
    }
    if vocab == 0 {
        candle_core::bail!("head-nll: the head has no rows")
    }
    if targets.dtype() != DType::U32 {
        candle_core::bail!("head-nll: targets must be u32, got {:?}", targets.dtype())
    }
    Ok((n, d, vocab))
}

/// The f32 data of a contiguous CPU tensor, or `None`.
fn cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => Some(f(&v[a..b])),
        _ => None,
    }
}

/// For `h` `[n, d]`, the head `W` `[V, d]` and `targets` `[n]` (u32): each row's NLL of its target
/// (`[n]` f32) and its argmax token (`[n]` u32). On f32 CPU tensors without the logits; elsewhere
/// [`head_nll_slow`].
pub fn head_nll(h: &Tensor, w: &Tensor, targets: &Tensor) -> Result<(Tensor, Tensor)> {
    let (n, d, vocab) = check(h, w, targets)?;
    if !(h.device().is_cpu() && h.dtype() == DType::F32 && w.dtype() == DType::F32) {
        return head_nll_slow(h, w, targets);
    }
    let targets_v = targets.to_vec1::<u32>()?;
    if let Some(bad) = targets_v.iter().find(|&&t| t as usize >= vocab) {
        candle_core::bail!("head-nll: target {bad} is outside the vocabulary of {vocab}")
    }
    let (h, w) = (h.contiguous()?, w.contiguous()?);
    let stats = cpu_f32(&h, |h| cpu_f32(&w, |w| cpu(h, w, &targets_v, (n, d, vocab))))
        .flatten()
        .expect("contiguous f32 CPU tensors");
    let nll: Vec<f32> = stats.iter().map(|s| s.max + s.sum.ln() - s.target).collect();
    let best: Vec<u32> = stats.iter().map(|s| s.best).collect();
    Ok((Tensor::from_vec(nll, n, h.device())?, Tensor::from_vec(best, n, h.device())?))
}

/// The definition: logits `h Wᵀ` in f32, `logsumexp − logit[target]`, `argmax`.
pub fn head_nll_slow(h: &Tensor, w: &Tensor, targets: &Tensor) -> Result<(Tensor, Tensor)> {
    check(h, w, targets)?;
    let logits = h.matmul(&w.t()?)?.to_dtype(DType::F32)?;
    let picked = logits.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    let nll = (logits.log_sum_exp(D::Minus1)? - picked)?;
    Ok((nll, logits.argmax(D::Minus1)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{assert_close, uniform};
    use candle_core::Device;

    #[test]
    fn matches_the_definition_without_the_logits() {
        // Vocabularies that are not block multiples, one token, more rows than a row block, a
        // vocabulary smaller than one block; large logits (scale 8).
        for (n, d, vocab) in [(1, 8, 1), (3, 16, 17), (300, 24, 1500), (130, 7, 5000)] {
            let dev = &Device::Cpu;
            let h = uniform(&[n, d], 2.0, 1, dev);
            let w = uniform(&[vocab, d], 2.0, 2, dev);
            let targets: Vec<u32> = (0..n as u32).map(|i| (i * 7919) % vocab as u32).collect();
            let targets = Tensor::new(targets, dev).unwrap();
            let (nll, best) = head_nll(&h, &w, &targets).unwrap();
            let (want_nll, want_best) = head_nll_slow(&h, &w, &targets).unwrap();
            assert_close(&nll, &want_nll, 1e-5, 1e-5, &format!("nll, n {n}, d {d}, V {vocab}"));
            assert_eq!(
                best.to_vec1::<u32>().unwrap(),
                want_best.to_vec1::<u32>().unwrap(),
                "argmax, n {n}, d {d}, V {vocab}"
            );
        }
    }

    #[test]
    fn ties_go_to_the_first_token_and_bad_targets_are_refused() {
        let dev = &Device::Cpu;
        // Every head row equal: every logit ties, in every vocabulary block and task.
        let h = uniform(&[2, 4], 1.0, 3, dev);
        let w = Tensor::ones((2000, 4), DType::F32, dev).unwrap();
        let targets = Tensor::new(&[5u32, 1999], dev).unwrap();
        let (nll, best) = head_nll(&h, &w, &targets).unwrap();
        assert_eq!(best.to_vec1::<u32>().unwrap(), vec![0, 0]);
        assert_close(&nll, &Tensor::new(&[2000f32.ln(); 2], dev).unwrap(), 1e-6, 1e-6, "uniform");
        let bad = Tensor::new(&[5u32, 2000], dev).unwrap();
        let err = head_nll(&h, &w, &bad).unwrap_err().to_string();
        assert!(err.contains("outside the vocabulary"), "{err}");
    }
}
