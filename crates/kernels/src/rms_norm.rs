//! `rms-norm`: `x / √(mean(x²) + ε) · w` over the last dimension, each layer's two norms and the
//! final one.
//!
//! On f32 CPU tensors a rayon task takes a block of rows and sums each row's squares on 16 lanes
//! ([`dispatch!`]), into an output it writes whole. candle-nn's CPU op, which other devices and
//! dtypes still run, sums one element at a time (a sequential f32 sum does not vectorise), in the
//! SSE2 code of a baseline x86-64 build, into an output zeroed on the calling thread. The sums of
//! squares differ from candle-nn's only in rounding. [`rms_norm_slow`] is the composed definition
//! (differentiable), which training runs.

use candle_core::{CpuStorage, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::{f32s, output_buffer};
use crate::vec_exp::{self, dispatch};

/// Rows per rayon task: 64 rows of a 4096-wide model are 1 MB, enough work to pay for a task.
const ROW_BLOCK: usize = 64;

struct RmsNorm {
    eps: f32,
}

dispatch! {
    // `out` gets the rows of `x` normalised with weight `w` (one row is `w.len()` wide).
    fn normalize_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        let d = w.len();
        for (row, dst) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let sum2 = vec_exp::sum_lanes(row, |v| v * v);
            let inv = 1.0 / (sum2 / d as f32 + eps).sqrt();
            for ((o, &v), &g) in dst.iter_mut().zip(row).zip(w) {
                *o = v * inv * g;
            }
        }
    }
}

impl candle_core::CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (x, w) = (f32s(op, "x", s1, l1)?, f32s(op, "the weight", s2, l2)?);
        // Every row written by normalize_rows (the caller checked that `w` spans a row).
        let mut out = output_buffer(x.len());
        if !out.is_empty() {
            let block = ROW_BLOCK * w.len();
            out.par_chunks_mut(block)
                .zip(x.par_chunks(block))
                .for_each(|(dst, rows)| normalize_rows(rows, w, self.eps, dst));
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// RMSNorm of `x` over its last dimension with weight `w` (as long as that dimension). The fused
/// op on f32 CPU tensors, candle-nn's fused one for other floats and devices, the composed one
/// for other dtypes. No backward pass: training uses
/// [`rms_norm_slow`].
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    let d = x.dims().last().copied().unwrap_or(0);
    if w.dims() != [d] {
        candle_core::bail!("rms-norm: weight {:?} for rows of {d}", w.shape())
    }
    let x = x.contiguous()?;
    match x.dtype() {
        DType::F32 if x.device().is_cpu() && w.dtype() == DType::F32 && d > 0 => {
            x.apply_op2_no_bwd(&w.contiguous()?, &RmsNorm { eps })
        }
        // candle-nn's fused op accumulates in f32 for these.
        DType::F32 | DType::F16 | DType::BF16 => candle_nn::ops::rms_norm(&x, w, eps),
        _ => rms_norm_slow(&x, w, eps),
    }
}

/// The composed definition (candle-nn's, differentiable).
pub fn rms_norm_slow(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    candle_nn::ops::rms_norm_slow(x, w, eps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_composed_definition() {
        // Widths below, at and off the lane count, row counts below and across a block.
        for (rows, d) in [(1, 5), (3, 16), (70, 33), (130, 576)] {
            let x = Tensor::randn(0f32, 3.0, (rows, d), &Device::Cpu).unwrap();
            let w = Tensor::randn(1f32, 0.5, d, &Device::Cpu).unwrap();
            let got = rms_norm(&x, &w, 1e-5).unwrap().flatten_all().unwrap().to_vec1::<f32>();
            let want = rms_norm_slow(&x, &w, 1e-5).unwrap().flatten_all().unwrap().to_vec1::<f32>();
            for (a, b) in got.unwrap().iter().zip(&want.unwrap()) {
                assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{rows}×{d}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn rejects_a_weight_of_another_width() {
        let x = Tensor::zeros((2, 8), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::ones(7, DType::F32, &Device::Cpu).unwrap();
        let err = rms_norm(&x, &w, 1e-5).unwrap_err().to_string();
        assert!(err.contains("rms-norm: weight [7] for rows of 8"), "{err}");
    }
}
