//! The two terms of the distillation loss (METHODS.md §3.5), per row, with a CPU forward and
//! backward:
//!
//! - [`kl_div`]: `τ²·KL(softmax(z_T/τ) ‖ softmax(z_S/τ))` for student and teacher logits `[n, V]`.
//!   The forward is two log-sum-exps and one weighted sum per row; the backward writes
//!   `∂/∂z_S = τ·(softmax(z_S/τ) − softmax(z_T/τ))·g` straight into the gradient. Neither holds a
//!   `[n, V]` probability tensor, so training memory is the logits and their gradient only.
//! - [`hidden_mse`]: `‖s − t‖² / ‖t‖²` for student and teacher states `[n, d]`, backward
//!   `∂/∂s = 2(s − t)/‖t‖²·g`.
//!
//! The teacher is frozen: neither op returns a gradient for its second argument. Rows come out
//! separately so that callers weight (mask) and reduce them. The `_slow` versions are the composed,
//! differentiable definitions the fused ones are tested against.
//!
//! Fused on the CPU in f32 and, with the `cuda` feature, on a GPU in f32, f16 and bf16 (one block
//! per row, f32 accumulation: `distill_loss.cu`); other dtypes take the composed definition.

#[cfg(feature = "cuda")]
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Device, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use crate::cpu::f32s;
use crate::launch::Launch;
use crate::vec_exp::{self, dispatch};

/// Rows per rayon task: enough work per task for the vocabulary sizes of real models.
const ROWS: usize = 4;

/// `‖t‖²` below this counts as this (ours): a zero teacher state would otherwise give NaN.
pub const MIN_TEACHER_NORM_SQ: f32 = 1e-12;

/// The log-sum-exp of `row / tau`.
#[inline(always)]
fn lse_scaled(row: &[f32], inv_tau: f32) -> f32 {
    // max(x/τ) = max(x)/τ for τ > 0, so the shift is taken on the raw row.
    let m = vec_exp::max(row) * inv_tau;
    m + vec_exp::sum_exp_scaled(row, inv_tau, m).ln()
}

dispatch! {
    fn kl_rows(student: &[f32], teacher: &[f32], vocab: usize, tau: f32, out: &mut [f32]) {
        let inv_tau = 1.0 / tau;
        for ((s, t), o) in student.chunks_exact(vocab).zip(teacher.chunks_exact(vocab)).zip(out) {
            let (lse_s, lse_t) = (lse_scaled(s, inv_tau), lse_scaled(t, inv_tau));
            // KL = Σ p_t·(log p_t − log p_s) = Σ p_t·(t − s)/τ + lse_s − lse_t, since Σ p_t = 1.
            let mut acc = [0f32; vec_exp::LANES];
            let (sc, tc) = (s.chunks_exact(vec_exp::LANES), t.chunks_exact(vec_exp::LANES));
            let (s_rest, t_rest) = (sc.remainder(), tc.remainder());
            for (a, b) in sc.zip(tc) {
                for k in 0..vec_exp::LANES {
                    let p = vec_exp::exp(b[k] * inv_tau - lse_t);
                    acc[k] += p * (b[k] - a[k]);
                }
            }
            let mut sum: f64 = acc.iter().map(|&v| v as f64).sum();
            for (&a, &b) in s_rest.iter().zip(t_rest) {
                sum += (vec_exp::exp(b * inv_tau - lse_t) * (b - a)) as f64;
            }
            let kl = sum * inv_tau as f64 + lse_s as f64 - lse_t as f64;
            // Rounding can leave a tiny negative value where the distributions are equal.
            *o = (tau as f64 * tau as f64 * kl.max(0.0)) as f32;
        }
    }
}

dispatch! {
    fn kl_grad_rows(student: &[f32], teacher: &[f32], vocab: usize, tau: f32, g: &[f32], out: &mut [f32]) {
        let inv_tau = 1.0 / tau;
        let rows = student.chunks_exact(vocab).zip(teacher.chunks_exact(vocab));
        for (((s, t), &g), o) in rows.zip(g).zip(out.chunks_exact_mut(vocab)) {
            let (lse_s, lse_t) = (lse_scaled(s, inv_tau), lse_scaled(t, inv_tau));
            let scale = tau * g;
            for ((o, &a), &b) in o.iter_mut().zip(s).zip(t) {
                *o = scale * (vec_exp::exp(a * inv_tau - lse_s) - vec_exp::exp(b * inv_tau - lse_t));
            }
        }
    }
}

/// One f32 per row of `[n, width]` student/teacher pairs: `rows_fn(student_rows, teacher_rows,
/// out)` runs on `per_task` rows at a time, in parallel.
fn per_row(
    student: &[f32],
    teacher: &[f32],
    n: usize,
    width: usize,
    per_task: usize,
    rows_fn: impl Fn(&[f32], &[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut out = vec![0f32; n];
    out.par_chunks_mut(per_task).enumerate().for_each(|(k, o)| {
        let rows = k * per_task * width..(k * per_task + o.len()) * width;
        rows_fn(&student[rows.clone()], &teacher[rows], o)
    });
    out
}

/// `(student, teacher)` as contiguous f32 slices of `[n, width]`, or an error naming `op`.
fn pair<'a>(
    op: &str,
    s1: &'a CpuStorage,
    l1: &Layout,
    s2: &'a CpuStorage,
    l2: &Layout,
) -> Result<(&'a [f32], &'a [f32], usize, usize)> {
    let (n, width) = (l1.dims()[0], l1.dims()[1]);
    Ok((f32s(op, "the student", s1, l1)?, f32s(op, "the teacher", s2, l2)?, n, width))
}

fn check_pair(op: &str, student: &Tensor, teacher: &Tensor) -> Result<()> {
    student.dims2()?;
    if student.shape() != teacher.shape() {
        candle_core::bail!(
            "{op}: student {:?} and teacher {:?} differ",
            student.shape(),
            teacher.shape()
        )
    }
    Ok(())
}

/// Whether the fused op applies (f32 on the CPU; f32, f16 or bf16 on CUDA; one dtype for both);
/// other devices and dtypes take the composed definition.
fn fused(student: &Tensor, teacher: &Tensor) -> bool {
    let dtype = student.dtype();
    dtype == teacher.dtype()
        && match student.device() {
            Device::Cpu => dtype == DType::F32,
            Device::Cuda(_) => matches!(dtype, DType::F32 | DType::F16 | DType::BF16),
            _ => false,
        }
}

/// The CUDA launchers: one block of `launch.block` threads per row.
#[cfg(feature = "cuda")]
mod gpu {
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CudaStorage, Layout, Result, Shape};

    use crate::cuda::{self, Float};
    use crate::launch::Launch;

    fn per_row_grid(n: usize, launch: Launch) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (n as u32, 1, 1),
            block_dim: (launch.block, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// `<kernel>_<T>(s, t, out, width, floats…)`: one f32 per row of `[n, width]` pairs.
    pub fn per_row<T: Float>(
        (op, kernel): (&str, &str),
        (s1, l1): (&CudaStorage, &Layout),
        (s2, l2): (&CudaStorage, &Layout),
        launch: Launch,
        floats: &[f32],
    ) -> Result<(CudaStorage, Shape)> {
        let (n, width) = l1.shape().dims2()?;
        let dev = &s1.device;
        let out = dev.alloc_zeros::<f32>(n)?;
        if n > 0 {
            let s = cuda::view(op, s1.as_cuda_slice::<T>()?, l1)?;
            let t = cuda::view(op, s2.as_cuda_slice::<T>()?, l2)?;
            let name = format!("{kernel}_{}", T::NAME);
            let f =
                dev.get_or_load_custom_func(&name, cuda::DISTILL_LOSS.0, cuda::DISTILL_LOSS.1)?;
            let width = width as i32;
            let mut b = f.builder();
            b.arg(&s).arg(&t).arg(&out).arg(&width);
            for x in floats {
                b.arg(x);
            }
            // SAFETY: block r reads row r of both `[n, width]` inputs and writes `out[r]`.
            unsafe { b.launch(per_row_grid(n, launch)) }.w()?;
        }
        Ok((cuda::storage(out, dev), Shape::from(n)))
    }

    /// `kl_div_bwd_<T>`: `∂/∂s`, `[n, V]` of `T`, from the row gradient `g: [n]` f32.
    pub fn kl_grad<T: Float>(
        (s1, l1): (&CudaStorage, &Layout),
        (s2, l2): (&CudaStorage, &Layout),
        (s3, l3): (&CudaStorage, &Layout),
        launch: Launch,
        tau: f32,
    ) -> Result<(CudaStorage, Shape)> {
        let op = "kl-div-grad";
        let (n, vocab) = l1.shape().dims2()?;
        let dev = &s1.device;
        let out = dev.alloc_zeros::<T>(n * vocab)?;
        if n > 0 {
            let s = cuda::view(op, s1.as_cuda_slice::<T>()?, l1)?;
            let t = cuda::view(op, s2.as_cuda_slice::<T>()?, l2)?;
            let g = cuda::view(op, s3.as_cuda_slice::<f32>()?, l3)?;
            let name = format!("kl_div_bwd_{}", T::NAME);
            let f =
                dev.get_or_load_custom_func(&name, cuda::DISTILL_LOSS.0, cuda::DISTILL_LOSS.1)?;
            let (v, inv_tau) = (vocab as i32, 1.0 / tau);
            let mut b = f.builder();
            b.arg(&s).arg(&t).arg(&g).arg(&out).arg(&v).arg(&inv_tau).arg(&tau);
            // SAFETY: block r reads row r of both inputs and `g[r]`, and writes row r of `out`.
            unsafe { b.launch(per_row_grid(n, launch)) }.w()?;
        }
        Ok((cuda::storage(out, dev), l1.shape().clone()))
    }
}

struct KlDiv {
    tau: f32,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    launch: Launch,
}

impl candle_core::CustomOp2 for KlDiv {
    fn name(&self) -> &'static str {
        "kl-div"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (student, teacher, n, vocab) = pair(self.name(), s1, l1, s2, l2)?;
        let out =
            per_row(student, teacher, n, vocab, ROWS, |s, t, o| kl_rows(s, t, vocab, self.tau, o));
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (op, tau) = (self.name(), self.tau);
        crate::cuda::dispatch_float!(
            op,
            s1.dtype(),
            gpu::per_row((op, "kl_div_fwd"), (s1, l1), (s2, l2), self.launch, &[1.0 / tau, tau])
        )
    }

    fn bwd(
        &self,
        student: &Tensor,
        teacher: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = kl_div_grad_with(student, teacher, grad_res, self.tau as f64, self.launch)?;
        Ok((Some(grad), None))
    }
}

/// `∂ kl_div / ∂ student`, given the gradient of each row's loss.
struct KlGrad {
    tau: f32,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    launch: Launch,
}

impl candle_core::CustomOp3 for KlGrad {
    fn name(&self) -> &'static str {
        "kl-div-grad"
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
        let (student, teacher, n, vocab) = pair(self.name(), s1, l1, s2, l2)?;
        let g = f32s(self.name(), "the row gradient", s3, l3)?;
        let mut out = vec![0f32; n * vocab];
        out.par_chunks_mut(ROWS * vocab).enumerate().for_each(|(k, o)| {
            let (r0, r1) = (k * ROWS, k * ROWS + o.len() / vocab);
            let rows = r0 * vocab..r1 * vocab;
            kl_grad_rows(&student[rows.clone()], &teacher[rows], vocab, self.tau, &g[r0..r1], o)
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    #[allow(clippy::too_many_arguments)] // CustomOp3's signature
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::dispatch_float!(
            self.name(),
            s1.dtype(),
            gpu::kl_grad((s1, l1), (s2, l2), (s3, l3), self.launch, self.tau)
        )
    }
}

/// `τ²·KL(softmax(teacher/τ) ‖ softmax(student/τ))` per row, `[n]`, for logits `[n, V]`; the
/// gradient flows to `student` only.
pub fn kl_div(student: &Tensor, teacher: &Tensor, tau: f64) -> Result<Tensor> {
    kl_div_with(student, teacher, tau, crate::launch::KL_DIV)
}

/// [`kl_div`] with explicit CUDA launch parameters (the tuning harness); the backward pass takes
/// the same ones.
pub fn kl_div_with(student: &Tensor, teacher: &Tensor, tau: f64, launch: Launch) -> Result<Tensor> {
    check_pair("kl-div", student, teacher)?;
    if !(tau > 0.0 && tau.is_finite()) {
        candle_core::bail!("kl-div: the temperature must be positive and finite, got {tau}")
    }
    if fused(student, teacher) {
        let op = KlDiv { tau: tau as f32, launch };
        student.contiguous()?.apply_op2(&teacher.detach().contiguous()?, op)
    } else {
        kl_div_slow(student, &teacher.detach(), tau)
    }
}

/// `∂/∂student` of `Σ_r g_r·kl_div(student, teacher, τ)_r`: `τ·g_r·(softmax(z_S/τ) − softmax(z_T/τ))`,
/// `[n, V]`. Callers that chunk the LM head over positions take the logits' gradient from here
/// and never keep a chunk's logits for the backward pass.
pub fn kl_div_grad(
    student: &Tensor,
    teacher: &Tensor,
    row_grad: &Tensor,
    tau: f64,
) -> Result<Tensor> {
    kl_div_grad_with(student, teacher, row_grad, tau, crate::launch::KL_DIV)
}

/// [`kl_div_grad`] with explicit CUDA launch parameters.
pub fn kl_div_grad_with(
    student: &Tensor,
    teacher: &Tensor,
    row_grad: &Tensor,
    tau: f64,
    launch: Launch,
) -> Result<Tensor> {
    check_pair("kl-div-grad", student, teacher)?;
    if row_grad.dims1()? != student.dim(0)? {
        candle_core::bail!(
            "kl-div-grad: {} row gradients for {} rows",
            row_grad.dims1()?,
            student.dim(0)?
        )
    }
    if fused(student, teacher) {
        let (s, t) = (student.detach().contiguous()?, teacher.detach().contiguous()?);
        let g = row_grad.detach().to_dtype(DType::F32)?.contiguous()?;
        s.apply_op3_no_bwd(&t, &g, &KlGrad { tau: tau as f32, launch })
    } else {
        let p = |z: &Tensor| candle_nn_free::log_softmax(&(z.detach() / tau)?)?.exp();
        (p(student)? - p(teacher)?)?
            .broadcast_mul(&(row_grad.detach().to_dtype(student.dtype())? * tau)?.unsqueeze(1)?)
    }
}

/// The composed definition (differentiable), as PyTorch's `kl_div(log_target=True)` computes it.
pub fn kl_div_slow(student: &Tensor, teacher: &Tensor, tau: f64) -> Result<Tensor> {
    let log_p_s = candle_nn_free::log_softmax(&(student / tau)?)?;
    let log_p_t = candle_nn_free::log_softmax(&(teacher / tau)?)?;
    let kl = (log_p_t.exp()? * (log_p_t - log_p_s)?)?.sum(D::Minus1)?;
    kl * (tau * tau)
}

/// Differentiable log-softmax from candle-core ops (candle-nn's is the same composition; this crate
/// depends on candle-core only).
mod candle_nn_free {
    use candle_core::{Result, Tensor, D};

    pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
        let m = x.max_keepdim(D::Minus1)?.detach();
        let shifted = x.broadcast_sub(&m)?;
        let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
        shifted.broadcast_sub(&lse)
    }
}

dispatch! {
    fn mse_rows(student: &[f32], teacher: &[f32], width: usize, out: &mut [f32]) {
        for ((s, t), o) in student.chunks_exact(width).zip(teacher.chunks_exact(width)).zip(out) {
            let (mut diff, mut norm) = (0f64, 0f64);
            for (&a, &b) in s.iter().zip(t) {
                diff += ((a - b) * (a - b)) as f64;
                norm += (b * b) as f64;
            }
            *o = (diff / norm.max(MIN_TEACHER_NORM_SQ as f64)) as f32;
        }
    }
}

struct HiddenMse {
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    launch: Launch,
}

impl candle_core::CustomOp2 for HiddenMse {
    fn name(&self) -> &'static str {
        "hidden-mse"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (student, teacher, n, width) = pair(self.name(), s1, l1, s2, l2)?;
        // Hidden rows are narrow (d, not V): more of them per task.
        let out = per_row(student, teacher, n, width, 64, |s, t, o| mse_rows(s, t, width, o));
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let op = self.name();
        crate::cuda::dispatch_float!(
            op,
            s1.dtype(),
            gpu::per_row(
                (op, "hidden_mse_fwd"),
                (s1, l1),
                (s2, l2),
                self.launch,
                &[MIN_TEACHER_NORM_SQ]
            )
        )
    }

    fn bwd(
        &self,
        student: &Tensor,
        teacher: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // d/ds ‖s − t‖²/‖t‖² = 2(s − t)/‖t‖²: [n, d] work, composed from candle ops.
        let norm = teacher_norm_sq(teacher)?.unsqueeze(1)?;
        let scale = (grad_res.unsqueeze(1)? * 2.0)?.div(&norm)?;
        let grad = (student - teacher)?.broadcast_mul(&scale)?;
        Ok((Some(grad), None))
    }
}

/// `‖s − t‖² / ‖t‖²` per row, `[n]`, for hidden states `[n, d]`; the gradient flows to `student`
/// only.
pub fn hidden_mse(student: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    hidden_mse_with(student, teacher, crate::launch::HIDDEN_MSE)
}

/// [`hidden_mse`] with explicit CUDA launch parameters.
pub fn hidden_mse_with(student: &Tensor, teacher: &Tensor, launch: Launch) -> Result<Tensor> {
    check_pair("hidden-mse", student, teacher)?;
    if fused(student, teacher) {
        student.contiguous()?.apply_op2(&teacher.detach().contiguous()?, HiddenMse { launch })
    } else {
        hidden_mse_slow(student, &teacher.detach())
    }
}

/// The composed definition (differentiable).
pub fn hidden_mse_slow(student: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    let diff = (student - teacher)?.sqr()?.sum(D::Minus1)?;
    diff / teacher_norm_sq(teacher)?
}

/// `max(‖t‖², MIN_TEACHER_NORM_SQ)` per row, `[n]`.
fn teacher_norm_sq(teacher: &Tensor) -> Result<Tensor> {
    teacher.sqr()?.sum(D::Minus1)?.clamp(MIN_TEACHER_NORM_SQ, f32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Seeded uniform logits in `[-scale, scale)` (the kernels' shared test input).
    fn logits(n: usize, vocab: usize, scale: f32, seed: u64) -> Tensor {
        crate::test_utils::uniform(&[n, vocab], scale, seed, &Device::Cpu)
    }

    fn assert_close(got: &[f32], want: &[f32], rel: f32, abs: f32, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= rel * w.abs() + abs, "{what}[{i}]: {g} vs {w}");
        }
    }

    /// Value and gradient of `Σ_rows w_r·loss_r` through `f`, with row weights `w` so that the
    /// row gradient `g` is not all ones.
    fn value_and_grad(
        f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
        student: &Tensor,
        teacher: &Tensor,
    ) -> (Vec<f32>, Vec<f32>) {
        let (rows, g) = device_value_and_grad(f, student, teacher);
        (rows.to_vec1().unwrap(), g.flatten_all().unwrap().to_vec1().unwrap())
    }

    #[test]
    fn kl_matches_composed_definition_value_and_gradient() {
        for (n, vocab, tau) in [(1, 1, 1.0), (3, 17, 1.0), (9, 1000, 2.0), (5, 4099, 0.5)] {
            let s = logits(n, vocab, 4.0, 1);
            let t = logits(n, vocab, 4.0, 2);
            let (v_fast, g_fast) = value_and_grad(|s, t| kl_div(s, t, tau), &s, &t);
            let (v_slow, g_slow) = value_and_grad(|s, t| kl_div_slow(s, t, tau), &s, &t);
            assert_close(&v_fast, &v_slow, 1e-5, 1e-6, &format!("kl n{n} V{vocab} τ{tau}"));
            assert_close(&g_fast, &g_slow, 1e-4, 1e-7, &format!("kl grad n{n} V{vocab} τ{tau}"));
        }
    }

    #[test]
    fn kl_grad_on_other_dtypes_takes_the_composed_path() {
        let (s, t) = (logits(3, 40, 3.0, 10), logits(3, 40, 3.0, 11));
        let g = Tensor::new(&[1f32, -2.0, 0.5], &Device::Cpu).unwrap();
        let fast = kl_div_grad(&s, &t, &g, 2.0).unwrap();
        let f64_ = |x: &Tensor| x.to_dtype(DType::F64).unwrap();
        let slow = kl_div_grad(&f64_(&s), &f64_(&t), &f64_(&g), 2.0).unwrap();
        let (a, b): (Vec<f32>, Vec<f32>) = (
            fast.flatten_all().unwrap().to_vec1().unwrap(),
            slow.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert_close(&a, &b, 1e-4, 1e-7, "kl grad f32 vs f64");
    }

    #[test]
    fn kl_of_equal_logits_is_zero_with_zero_gradient() {
        let s = logits(4, 300, 5.0, 3);
        let (v, g) = value_and_grad(|s, t| kl_div(s, t, 1.0), &s, &s.copy().unwrap());
        assert!(v.iter().all(|&x| x.abs() < 1e-5), "{v:?}");
        assert!(g.iter().all(|&x| x.abs() < 1e-6));
    }

    #[test]
    fn teacher_gets_no_gradient() {
        let s = Var::from_tensor(&logits(2, 50, 1.0, 4)).unwrap();
        let t = Var::from_tensor(&logits(2, 50, 1.0, 5)).unwrap();
        let loss = (kl_div(s.as_tensor(), t.as_tensor(), 1.0).unwrap().sum_all().unwrap()
            + hidden_mse(s.as_tensor(), t.as_tensor()).unwrap().sum_all().unwrap())
        .unwrap();
        let grads = loss.backward().unwrap();
        assert!(grads.get(s.as_tensor()).is_some());
        assert!(grads.get(t.as_tensor()).is_none());
    }

    #[test]
    fn mse_matches_composed_definition_value_and_gradient() {
        for (n, d) in [(1, 1), (7, 33), (130, 576)] {
            let s = logits(n, d, 1.0, 6);
            let t = logits(n, d, 3.0, 7);
            let (v_fast, g_fast) = value_and_grad(hidden_mse, &s, &t);
            let (v_slow, g_slow) = value_and_grad(hidden_mse_slow, &s, &t);
            assert_close(&v_fast, &v_slow, 1e-5, 1e-7, &format!("mse n{n} d{d}"));
            assert_close(&g_fast, &g_slow, 1e-5, 1e-7, &format!("mse grad n{n} d{d}"));
        }
    }

    /// The rows of `f` and the gradient of `Σ_r w_r·row_r` for the student, on the inputs'
    /// device, with row weights `w_r = 0.5 + r` so that the row gradient is not all ones.
    fn device_value_and_grad(
        f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
        student: &Tensor,
        teacher: &Tensor,
    ) -> (Tensor, Tensor) {
        let var = Var::from_tensor(student).unwrap();
        let rows = f(var.as_tensor(), teacher).unwrap();
        let n = rows.dim(0).unwrap();
        let w: Vec<f32> = (0..n).map(|r| 0.5 + r as f32).collect();
        let w = Tensor::new(w, rows.device()).unwrap().to_dtype(rows.dtype()).unwrap();
        let grads = (rows.clone() * w).unwrap().sum_all().unwrap().backward().unwrap();
        let g = grads.get(var.as_tensor()).expect("a gradient for the student").clone();
        (rows, g)
    }

    /// The fused ops on `device` in each dtype against the composed definitions on the CPU in f32,
    /// on the same (rounded) inputs. Tolerances: f32 1e-5 relative on the rows, 1e-4 on the
    /// gradient; f16/bf16 the same on the rows (f32 accumulation) and, for the gradient, which
    /// comes back in the input's dtype, its rounding: 2⁻¹⁰ (f16) or 2⁻⁷ (bf16) relative. (The CPU
    /// fuses f32 only.)
    fn fused_ops_match_composed_definition(device: &Device) {
        use crate::test_utils::{assert_close, uniform};
        let dtypes: &[DType] =
            if device.is_cpu() { &[DType::F32] } else { &[DType::F32, DType::F16, DType::BF16] };
        for (n, vocab, tau) in [(1, 1, 1.0), (3, 17, 1.0), (9, 1000, 2.0), (4, 32000, 1.0)] {
            let s = uniform(&[n, vocab], 4.0, 21, device);
            let t = uniform(&[n, vocab], 4.0, 22, device);
            for &dtype in dtypes {
                let (s, t) = (s.to_dtype(dtype).unwrap(), t.to_dtype(dtype).unwrap());
                let cpu =
                    |x: &Tensor| x.to_dtype(DType::F32).unwrap().to_device(&Device::Cpu).unwrap();
                let (sc, tc) = (cpu(&s), cpu(&t));
                let grad_rel = match dtype {
                    DType::F16 => 1.0 / 1024.0,
                    DType::BF16 => 1.0 / 128.0,
                    _ => 1e-4,
                };
                let what = format!("{device:?} {dtype:?} n{n} V{vocab} τ{tau}");
                let (v, g) = device_value_and_grad(|s, t| kl_div(s, t, tau), &s, &t);
                let (v_ref, g_ref) = device_value_and_grad(|s, t| kl_div_slow(s, t, tau), &sc, &tc);
                assert_close(&v, &v_ref, 1e-5, 1e-6, &format!("kl {what}"));
                assert_close(&g, &g_ref, grad_rel, 1e-7, &format!("kl grad {what}"));
                let (v, g) = device_value_and_grad(hidden_mse, &s, &t);
                let (v_ref, g_ref) = device_value_and_grad(hidden_mse_slow, &sc, &tc);
                assert_close(&v, &v_ref, 1e-5, 1e-7, &format!("mse {what}"));
                assert_close(&g, &g_ref, grad_rel, 1e-7, &format!("mse grad {what}"));
            }
        }
    }
    crate::test_utils::test_device!(
        fused_ops_match_composed_definition,
        fused_ops_match_composed_definition_cpu,
        fused_ops_match_composed_definition_cuda
    );

    /// The backward passes against central differences of the definitions in f64 on the CPU, at
    /// every coordinate of small rows: `|g − fd| ≤ 1e-4·|fd| + 1e-6` (f32 gradients; the f64
    /// difference quotient with h = 1e-4 is exact to ~1e-8).
    fn backward_matches_finite_differences(device: &Device) {
        use crate::test_utils::uniform;
        let (n, width, h) = (3, 37, 1e-4);
        let s = uniform(&[n, width], 3.0, 31, device);
        let t = uniform(&[n, width], 3.0, 32, device);
        let as_f64 = |x: &Tensor| -> Vec<f64> {
            x.to_device(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let (s64, t64) = (as_f64(&s), as_f64(&t));
        let weights: Vec<f64> = (0..n).map(|r| 0.5 + r as f64).collect();
        let total = |f: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>, s: &[f64]| -> f64 {
            let s = Tensor::from_vec(s.to_vec(), (n, width), &Device::Cpu).unwrap();
            let t = Tensor::from_vec(t64.clone(), (n, width), &Device::Cpu).unwrap();
            let rows: Vec<f64> = f(&s, &t).unwrap().to_vec1().unwrap();
            rows.iter().zip(&weights).map(|(l, w)| l * w).sum()
        };
        type Loss = Box<dyn Fn(&Tensor, &Tensor) -> Result<Tensor>>;
        let cases: [(&str, Loss, Loss); 2] = [
            ("kl", Box::new(|s, t| kl_div(s, t, 1.5)), Box::new(|s, t| kl_div_slow(s, t, 1.5))),
            ("mse", Box::new(hidden_mse), Box::new(hidden_mse_slow)),
        ];
        for (what, fused_op, definition) in cases {
            let (_, g) = device_value_and_grad(&fused_op, &s, &t);
            let g = as_f64(&g);
            for i in 0..n * width {
                let (mut up, mut down) = (s64.clone(), s64.clone());
                up[i] += h;
                down[i] -= h;
                let fd = (total(&definition, &up) - total(&definition, &down)) / (2.0 * h);
                assert!(
                    (g[i] - fd).abs() <= 1e-4 * fd.abs() + 1e-6,
                    "{what} {device:?}: ∂/∂s[{i}] = {} against finite differences {fd}",
                    g[i]
                );
            }
        }
    }
    crate::test_utils::test_device!(
        backward_matches_finite_differences,
        backward_matches_finite_differences_cpu,
        backward_matches_finite_differences_cuda
    );

    #[test]
    fn rejects_mismatched_shapes_and_bad_temperatures() {
        let (a, b) = (logits(2, 5, 1.0, 8), logits(2, 6, 1.0, 9));
        assert!(kl_div(&a, &b, 1.0).unwrap_err().to_string().contains("differ"));
        assert!(hidden_mse(&a, &b).unwrap_err().to_string().contains("differ"));
        assert!(kl_div(&a, &a, 0.0).unwrap_err().to_string().contains("temperature"));
    }
}
