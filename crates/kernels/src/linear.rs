//! `linear`: `y = x · Wᵀ` for a 2-D `x` `[m, k]` and an HF-layout weight `W` `[n, k]`, the product
//! behind every projection and the LM head.
//!
//! With MKL built in ([`blas::MKL`]), f32 CPU tensors run one sequential `sgemm` per rayon thread,
//! each on its share of the rows (or, for the few rows of a generation step, of the weight's rows);
//! everything else is candle's matmul ([`linear_slow`], also the definition the op is tested
//! against). The op is differentiable: its backward pass is the two products of the definition,
//! each only for an input that tracks a gradient (a frozen weight gets none).

use candle_core::{CpuStorage, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::blas;
use crate::cpu::{f32s, output_buffer};

/// Fewest rows per thread worth splitting by rows; fewer rows split the weight instead.
const MIN_ROWS_PER_THREAD: usize = 32;

struct Linear;

/// `[m, k] · [n, k]ᵀ`, plus `r` `[m, n]` when given, into a new `[m, n]`, split across rayon's
/// threads.
fn forward(x: &[f32], w: &[f32], r: Option<&[f32]>, (m, n, k): (usize, usize, usize)) -> Vec<f32> {
    // Every element written below: by row blocks, or column blocks copied into each row.
    let mut y = output_buffer(m * n);
    if y.is_empty() {
        return y;
    }
    let threads = rayon::current_num_threads().max(1);
    if m >= threads * MIN_ROWS_PER_THREAD || n < threads {
        let rows = m.div_ceil(threads).max(1);
        y.par_chunks_mut(rows * n).enumerate().for_each(|(t, y)| {
            let r0 = t * rows;
            // The residual added by the product itself (beta = 1): no pass of its own.
            let beta = match r {
                Some(r) => {
                    y.copy_from_slice(&r[r0 * n..r0 * n + y.len()]);
                    1.0
                }
                None => 0.0,
            };
            blas::sgemm((y.len() / n, n, k), &x[r0 * k..], k, w, k, true, y, n, beta);
        });
    } else {
        // Each thread makes a block of output columns from its block of weight rows.
        let cols = n.div_ceil(threads);
        let blocks: Vec<(usize, Vec<f32>)> = (0..n.div_ceil(cols))
            .into_par_iter()
            .map(|t| {
                let (c0, nc) = (t * cols, cols.min(n - t * cols));
                // Written whole by sgemm (beta = 0).
                let mut block = output_buffer(m * nc);
                blas::sgemm((m, nc, k), x, k, &w[c0 * k..], k, true, &mut block, nc, 0.0);
                (c0, block)
            })
            .collect();
        for (c0, block) in blocks {
            let nc = block.len() / m.max(1);
            for (row, part) in y.chunks_mut(n).zip(block.chunks(nc.max(1))) {
                row[c0..c0 + nc].copy_from_slice(part);
            }
        }
        if let Some(r) = r {
            for (y, r) in y.iter_mut().zip(r) {
                *y += r;
            }
        }
    }
    y
}

impl candle_core::CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (f32s("linear", "x", s1, l1)?, f32s("linear", "the weight", s2, l2)?);
        let ((m, k), (n, _)) = (l1.shape().dims2()?, l2.shape().dims2()?);
        let y = forward(x, w, None, (m, n, k));
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // y = x Wᵀ: dL/dx = g W, dL/dW = gᵀ x. From detached inputs: candle detaches the gradient
        // of every node it walks but not of a variable, so a weight's gradient made from the
        // tracked `x` would hold this step's whole graph, and an optimiser's state built from it
        // every step's after (measured: +4.6 GB a step distilling SmolLM2).
        let dx = if x.track_op() { Some(grad.matmul(&w.detach())?) } else { None };
        let dw = if w.track_op() { Some(grad.t()?.matmul(&x.detach())?) } else { None };
        Ok((dx, dw))
    }
}

/// `r + x · Wᵀ`: a residual connection's sum made by the product.
struct LinearAdd;

impl candle_core::CustomOp3 for LinearAdd {
    fn name(&self) -> &'static str {
        "linear-add"
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
        let (x, w, r) =
            (f32s(op, "x", s1, l1)?, f32s(op, "the weight", s2, l2)?, f32s(op, "r", s3, l3)?);
        let ((m, k), (n, _)) = (l1.shape().dims2()?, l2.shape().dims2()?);
        let y = forward(x, w, Some(r), (m, n, k));
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        r: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // The product's gradients, and the residual's: the gradient itself.
        let (dx, dw) = candle_core::CustomOp2::bwd(&Linear, x, w, y, grad)?;
        Ok((dx, dw, r.track_op().then(|| grad.clone())))
    }
}

fn check(x: &Tensor, w: &Tensor) -> Result<()> {
    let ((_, k), (_, kw)) = (x.dims2()?, w.dims2()?);
    if k != kw {
        candle_core::bail!(
            "linear: x {:?} and the weight {:?} differ in width",
            x.shape(),
            w.shape()
        )
    }
    Ok(())
}

/// `x · Wᵀ` for `x` `[m, k]` and `W` `[n, k]`: `[m, n]`. MKL's products on f32 CPU tensors when it
/// is built in, candle's matmul otherwise.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    check(x, w)?;
    if blas::MKL && x.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32 {
        x.contiguous()?.apply_op2(&w.contiguous()?, Linear)
    } else {
        linear_slow(x, w)
    }
}

/// `r + x · Wᵀ` for `x` `[m, k]`, `W` `[n, k]` and `r` `[m, n]`: on f32 CPU tensors with MKL, the
/// product accumulates onto a copy of `r` (sgemm's `beta = 1`), so the sum takes no pass of its
/// own; otherwise [`linear_add_slow`].
pub fn linear_add(x: &Tensor, w: &Tensor, r: &Tensor) -> Result<Tensor> {
    check(x, w)?;
    let want = [x.dims()[0], w.dims()[0]];
    if r.dims() != want {
        candle_core::bail!("linear-add: r {:?} for a product of shape {want:?}", r.shape())
    }
    let f32s = [x, w, r].iter().all(|t| t.dtype() == DType::F32);
    if blas::MKL && x.device().is_cpu() && f32s {
        x.contiguous()?.apply_op3(&w.contiguous()?, &r.contiguous()?, LinearAdd)
    } else {
        linear_add_slow(x, w, r)
    }
}

/// The definition: `r + x.matmul(Wᵀ)`.
pub fn linear_add_slow(x: &Tensor, w: &Tensor, r: &Tensor) -> Result<Tensor> {
    r + linear_slow(x, w)?
}

/// The definition, candle's matmul: `x.matmul(Wᵀ)`.
pub fn linear_slow(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    check(x, w)?;
    x.matmul(&w.t()?)
}

/// The split product whatever the build, for tests: [`linear`] takes it only with MKL.
#[cfg(test)]
fn linear_split(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, Linear)
}

/// The split product with a residual whatever the build, for tests.
#[cfg(test)]
fn linear_add_split(x: &Tensor, w: &Tensor, r: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&w.contiguous()?, &r.contiguous()?, LinearAdd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::uniform;
    use candle_core::{Device, Var};

    fn seeded((m, n): (usize, usize), seed: u64) -> Tensor {
        uniform(&[m, n], 0.5, seed, &Device::Cpu)
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let s = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        d / s.max(1e-30)
    }

    #[test]
    fn split_product_matches_the_definition_by_rows_and_by_columns() {
        // 300 rows split by rows; 3 and 1 rows split the weight's 77 rows into column blocks.
        for (m, n, k) in [(300, 77, 45), (3, 77, 45), (1, 5, 3), (64, 1, 9)] {
            let (x, w) = (seeded((m, k), 1), seeded((n, k), 2));
            let got = linear_split(&x, &w).unwrap();
            let want = linear_slow(&x, &w).unwrap();
            assert_eq!(got.dims(), &[m, n]);
            let err = max_rel(&got, &want);
            assert!(err < 1e-5, "[{m}, {k}] x [{n}, {k}]ᵀ: max relative error {err}");
        }
    }

    #[test]
    fn residual_sum_matches_the_definition_by_rows_and_by_columns() {
        for (m, n, k) in [(300, 77, 45), (3, 77, 45), (1, 5, 3)] {
            let (x, w, r) = (seeded((m, k), 1), seeded((n, k), 2), seeded((m, n), 8));
            let got = linear_add_split(&x, &w, &r).unwrap();
            let want = linear_add_slow(&x, &w, &r).unwrap();
            let err = max_rel(&got, &want);
            assert!(err < 1e-5, "[{m}, {k}] x [{n}, {k}]ᵀ + r: max relative error {err}");
        }
        let err = linear_add(&seeded((4, 3), 1), &seeded((5, 3), 2), &seeded((4, 4), 3));
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("linear-add: r [4, 4] for a product of shape [4, 5]"));
    }

    #[test]
    fn residual_sum_backward_matches_the_definition() {
        let var = |t: Tensor| Var::from_tensor(&t).unwrap();
        let (x, w, r) =
            (var(seeded((40, 12), 3)), var(seeded((9, 12), 4)), var(seeded((40, 9), 9)));
        let probe = seeded((40, 9), 5);
        let loss = |y: Tensor| (y * &probe).unwrap().sum_all().unwrap();
        let (xt, wt, rt) = (x.as_tensor(), w.as_tensor(), r.as_tensor());
        let fast = loss(linear_add_split(xt, wt, rt).unwrap()).backward().unwrap();
        let slow = loss(linear_add_slow(xt, wt, rt).unwrap()).backward().unwrap();
        for v in [xt, wt, rt] {
            let err = max_rel(fast.get(v).unwrap(), slow.get(v).unwrap());
            assert!(err < 1e-5, "gradient differs by {err}");
        }
    }

    #[test]
    fn backward_matches_the_definition_and_skips_frozen_inputs() {
        let (x, w) = (Var::from_tensor(&seeded((40, 12), 3)).unwrap(), seeded((9, 12), 4));
        let wv = Var::from_tensor(&w).unwrap();
        let probe = seeded((40, 9), 5);
        let loss = |y: Tensor| (y * &probe).unwrap().sum_all().unwrap();
        let fast = loss(linear_split(x.as_tensor(), wv.as_tensor()).unwrap()).backward().unwrap();
        let slow = loss(linear_slow(x.as_tensor(), wv.as_tensor()).unwrap()).backward().unwrap();
        for v in [x.as_tensor(), wv.as_tensor()] {
            let err = max_rel(fast.get(v).unwrap(), slow.get(v).unwrap());
            assert!(err < 1e-5, "gradient differs by {err}");
        }
        // A plain (frozen) weight: the input still gets its gradient, the weight none.
        let grads = loss(linear_split(x.as_tensor(), &w).unwrap()).backward().unwrap();
        assert!(grads.get(x.as_tensor()).is_some());
        assert!(grads.get(&w).is_none());
    }

    #[test]
    fn gradients_hold_no_graph() {
        // `x` made by an op, as every activation is: the weight's gradient must not keep the
        // forward pass alive (an optimiser's state built from it would chain every step's graph).
        let (xv, wv) = (
            Var::from_tensor(&seeded((40, 12), 6)).unwrap(),
            Var::from_tensor(&seeded((9, 12), 7)).unwrap(),
        );
        let x = (xv.as_tensor() * 2.0).unwrap();
        let grads =
            linear_split(&x, wv.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [xv.as_tensor(), wv.as_tensor()] {
            assert!(!grads.get(v).unwrap().track_op(), "a gradient tracks the graph it came from");
        }
    }
}
