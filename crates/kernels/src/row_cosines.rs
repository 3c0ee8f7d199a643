//! `row-cosines`: `cos(a[r], b[r]) = a·b / (‖a‖‖b‖)` for each row `r` of two equal-shape tensors,
//! over the last dimension (NaN where a norm is 0): Block Influence's per-token similarity of two
//! layers' states, taken at every layer of every calibration pass.
//!
//! On f32 CPU tensors a rayon task takes a block of rows and accumulates the dot product and both
//! squared norms on 16 lanes in one read of each row. The composed definition
//! ([`row_cosines_slow`], other devices and dtypes) makes five passes and four temporaries of the
//! inputs' size, with its sums on the calling thread.

use candle_core::{CpuStorage, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use crate::cpu::{f32s, output_buffer};
use crate::vec_exp::{dispatch, LANES};

/// Rows per rayon task.
const ROW_BLOCK: usize = 64;

struct RowCosines;

dispatch! {
    // `out[r]` = the cosine of rows r of `a` and `b`, each `d` wide.
    fn cosine_rows(a: &[f32], b: &[f32], d: usize, out: &mut [f32]) {
        for ((x, y), o) in a.chunks_exact(d).zip(b.chunks_exact(d)).zip(out.iter_mut()) {
            let (mut dot, mut xx, mut yy) = ([0f32; LANES], [0f32; LANES], [0f32; LANES]);
            let (xc, yc) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
            let (xr, yr) = (xc.remainder(), yc.remainder());
            for (u, v) in xc.zip(yc) {
                for k in 0..LANES {
                    dot[k] += u[k] * v[k];
                    xx[k] += u[k] * u[k];
                    yy[k] += v[k] * v[k];
                }
            }
            let (mut d0, mut x0, mut y0) =
                (dot.iter().sum::<f32>(), xx.iter().sum::<f32>(), yy.iter().sum::<f32>());
            for (&u, &v) in xr.iter().zip(yr) {
                d0 += u * v;
                x0 += u * u;
                y0 += v * v;
            }
            *o = d0 / (x0.sqrt() * y0.sqrt());
        }
    }
}

impl candle_core::CustomOp2 for RowCosines {
    fn name(&self) -> &'static str {
        "row-cosines"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (a, b) = (f32s(op, "a", s1, l1)?, f32s(op, "b", s2, l2)?);
        let dims = l1.shape().dims();
        let d = dims[dims.len() - 1];
        // One value per row, each written by cosine_rows.
        let mut out = output_buffer(a.len() / d);
        out.par_chunks_mut(ROW_BLOCK)
            .zip(a.par_chunks(ROW_BLOCK * d).zip(b.par_chunks(ROW_BLOCK * d)))
            .for_each(|(o, (a, b))| cosine_rows(a, b, d, o));
        Ok((CpuStorage::F32(out), Shape::from(&dims[..dims.len() - 1])))
    }
}

/// The cosine of each pair of rows (last dimension) of `a` and `b`, of equal shapes, as f32 with
/// the last dimension dropped. The fused op on f32 CPU tensors, the composed one elsewhere.
pub fn row_cosines(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape() != b.shape() || a.rank() == 0 {
        candle_core::bail!(
            "row-cosines: needs equal shapes with rows, got {:?} and {:?}",
            a.shape(),
            b.shape()
        )
    }
    let f32s = a.dtype() == DType::F32 && b.dtype() == DType::F32;
    if a.device().is_cpu() && f32s && a.dims()[a.rank() - 1] > 0 && a.elem_count() > 0 {
        a.contiguous()?.apply_op2_no_bwd(&b.contiguous()?, &RowCosines)
    } else {
        row_cosines_slow(a, b)
    }
}

/// The composed definition, in f32.
pub fn row_cosines_slow(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (a, b) = (a.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?);
    let dot = (&a * &b)?.sum(D::Minus1)?;
    let na = a.sqr()?.sum(D::Minus1)?.sqrt()?;
    let nb = b.sqr()?.sum(D::Minus1)?.sqrt()?;
    dot / (na * nb)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::uniform;
    use candle_core::Device;

    #[test]
    fn matches_composed_definition() {
        // Widths off and on the lane count, row counts below and across a block; a zero row.
        for dims in [[1, 1, 5], [2, 3, 16], [2, 70, 33], [1, 130, 576]] {
            let a = uniform(&dims, 1.0, 1, &Device::Cpu);
            let b = uniform(&dims, 1.0, 2, &Device::Cpu);
            let b = (&b + (&a * 0.5).unwrap()).unwrap();
            let got = row_cosines(&a, &b).unwrap();
            let want = row_cosines_slow(&a, &b).unwrap();
            assert_eq!(got.dims(), &dims[..2]);
            let (got, want) = (got.flatten_all().unwrap(), want.flatten_all().unwrap());
            for (g, w) in got.to_vec1::<f32>().unwrap().iter().zip(want.to_vec1::<f32>().unwrap()) {
                assert!((g - w).abs() <= 1e-5, "{dims:?}: {g} vs {w}");
            }
        }
        let zero = Tensor::zeros((1, 2, 40), DType::F32, &Device::Cpu).unwrap();
        let got = row_cosines(&zero, &zero).unwrap().flatten_all().unwrap().to_vec1::<f32>();
        assert!(got.unwrap().iter().all(|c| c.is_nan()), "a zero norm gives NaN");
    }

    #[test]
    fn rejects_different_shapes() {
        let a = Tensor::zeros((2, 8), DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros((2, 7), DType::F32, &Device::Cpu).unwrap();
        let err = row_cosines(&a, &b).unwrap_err().to_string();
        assert!(err.contains("row-cosines: needs equal shapes"), "{err}");
    }
}
