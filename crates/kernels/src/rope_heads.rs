//! `rope-heads`: a projection's output `[b, s, h·d_h]` split into heads `[b, h, s, d_h]` with
//! rotary position embeddings (transformers' rotate-half layout) applied, in one pass.
//!
//! Row `p`'s tables `cos`, `sin` `[s, d_h/2]` rotate the pairs `(x_j, x_{j + d_h/2})`:
//! `(x_j·cos − x_{j+d_h/2}·sin, x_j·sin + x_{j+d_h/2}·cos)`, the products of candle's `rope` in the
//! same order, so the result is bit-identical to it. Replaces reshape → transpose → contiguous copy
//! → candle's `rope` (a second pass, with index arithmetic per element) for queries and keys.
//! [`rope_heads_slow`] is that composition with candle's differentiable `rope_slow`.

use candle_core::{CpuStorage, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::{f32s, output_buffer};
use crate::vec_exp::dispatch;

struct RopeHeads {
    heads: usize,
}

dispatch! {
    // One head of one sequence: `x` the sequence's `[s, h·d_h]` rows, `dst` its `[s, d_h]` block.
    fn rotate_head(x: &[f32], width: usize, head: usize, dh: usize, cos: &[f32], sin: &[f32], dst: &mut [f32]) {
        let half = dh / 2;
        for (p, out) in dst.chunks_exact_mut(dh).enumerate() {
            let row = &x[p * width + head * dh..p * width + (head + 1) * dh];
            let (c, s) = (&cos[p * half..(p + 1) * half], &sin[p * half..(p + 1) * half]);
            let (x1, x2) = row.split_at(half);
            let (o1, o2) = out.split_at_mut(half);
            for j in 0..half {
                o1[j] = x1[j] * c[j] - x2[j] * s[j];
                o2[j] = x1[j] * s[j] + x2[j] * c[j];
            }
        }
    }
}

impl candle_core::CustomOp3 for RopeHeads {
    fn name(&self) -> &'static str {
        "rope-heads"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (x, cos, sin) =
            (f32s(op, "x", s1, l1)?, f32s(op, "cos", s2, l2)?, f32s(op, "sin", s3, l3)?);
        let (b, s, width) = l1.shape().dims3()?;
        let (h, dh) = (self.heads, width / self.heads);
        // Every (sequence, head) block written by rotate_head.
        let mut out = output_buffer(b * s * width);
        if !out.is_empty() {
            out.par_chunks_mut(s * dh).enumerate().for_each(|(bh, dst)| {
                let (bi, head) = (bh / h, bh % h);
                rotate_head(
                    &x[bi * s * width..(bi + 1) * s * width],
                    width,
                    head,
                    dh,
                    cos,
                    sin,
                    dst,
                )
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((b, h, s, dh))))
    }
}

/// Checks the shapes; returns `d_h`.
fn check(x: &Tensor, heads: usize, cos: &Tensor, sin: &Tensor) -> Result<usize> {
    let (_, s, width) = x.dims3()?;
    if heads == 0 || !width.is_multiple_of(heads) || !(width / heads).is_multiple_of(2) {
        candle_core::bail!("rope-heads: width {width} is not {heads} heads of an even size")
    }
    let dh = width / heads;
    for t in [cos, sin] {
        if t.dims() != [s, dh / 2] {
            candle_core::bail!(
                "rope-heads: tables must be [{s}, {}] for x {:?}, got {:?}",
                dh / 2,
                x.shape(),
                t.shape()
            )
        }
    }
    Ok(dh)
}

/// `x` `[b, s, heads·d_h]` → `[b, heads, s, d_h]`, each row rotated by its tables `cos`, `sin`
/// `[s, d_h/2]`. The fused op on f32 CPU tensors; elsewhere the split heads go through candle's
/// `rope` (its own kernel on each device). No backward pass: training uses [`rope_heads_slow`].
pub fn rope_heads(x: &Tensor, heads: usize, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    check(x, heads, cos, sin)?;
    let f32s = [x, cos, sin].iter().all(|t| t.dtype() == DType::F32);
    if x.device().is_cpu() && f32s {
        let op = RopeHeads { heads };
        x.contiguous()?.apply_op3_no_bwd(&cos.contiguous()?, &sin.contiguous()?, &op)
    } else {
        candle_nn::rotary_emb::rope(&split_heads(x, heads)?, cos, sin)
    }
}

/// The composition, differentiable: split heads, make them contiguous, candle's `rope_slow`.
pub fn rope_heads_slow(x: &Tensor, heads: usize, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    check(x, heads, cos, sin)?;
    candle_nn::rotary_emb::rope_slow(&split_heads(x, heads)?, cos, sin)
}

/// `[b, s, heads·d_h]` → `[b, heads, s, d_h]`, contiguous.
fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, s, width) = x.dims3()?;
    x.reshape((b, s, heads, width / heads))?.transpose(1, 2)?.contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{assert_close, uniform};
    use candle_core::Device;

    #[test]
    fn equals_candles_rope_of_the_split_heads_bit_for_bit() {
        // Head sizes that are not lane multiples, one row, one head, batches.
        for (b, s, heads, dh) in [(2, 37, 3, 64), (1, 1, 9, 6), (3, 5, 1, 18)] {
            let d = &Device::Cpu;
            let x = uniform(&[b, s, heads * dh], 2.0, 1, d);
            let (cos, sin) = (uniform(&[s, dh / 2], 1.0, 2, d), uniform(&[s, dh / 2], 1.0, 3, d));
            let got = rope_heads(&x, heads, &cos, &sin).unwrap();
            let want =
                candle_nn::rotary_emb::rope(&split_heads(&x, heads).unwrap(), &cos, &sin).unwrap();
            assert_close(&got, &want, 0.0, 0.0, &format!("b {b}, s {s}, heads {heads}, d_h {dh}"));
            let slow = rope_heads_slow(&x, heads, &cos, &sin).unwrap();
            assert_close(&got, &slow, 1e-6, 1e-6, "against rope_slow");
        }
    }

    #[test]
    fn rejects_shapes_that_do_not_fit() {
        let d = &Device::Cpu;
        let x = uniform(&[1, 4, 12], 1.0, 1, d);
        let t = uniform(&[4, 2], 1.0, 2, d);
        let err = rope_heads(&x, 5, &t, &t).unwrap_err().to_string();
        assert!(err.contains("not 5 heads"), "{err}");
        let wrong = uniform(&[4, 3], 1.0, 3, d);
        let err = rope_heads(&x, 3, &wrong, &wrong).unwrap_err().to_string();
        assert!(err.contains("tables must be [4, 2]"), "{err}");
    }
}
