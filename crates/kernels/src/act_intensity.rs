//! `act-intensity`: the per-channel activation intensity of METHODS.md §2.5,
//! `Σ_t w_t·|x[t, c]|` over the rows of `x: [n, c]` with row weights `w: [n]` (1 for a real token,
//! 0 for padding; none for all real), in f32 whatever x's dtype, in one pass that never holds a
//! `[n, c]` temporary. With no weights and a weight matrix `W: [out, in]` as `x`, it gives the
//! column L1 norms `‖W[:, c]‖₁` the sensitivity multiplies by. [`act_intensity_slow`] is the
//! composed definition it is tested against.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Shape, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

use crate::cpu::{contiguous, f32s};
use crate::launch::Launch;
use crate::vec_exp::dispatch;

/// Columns per rayon task. Each task walks every row for its columns, so each column is summed in
/// row order, as a sequential sum would.
const COLUMNS: usize = 256;

struct ActIntensity {
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    launch: Launch,
}

/// `acc[j] += w_r·|x[r, c0 + j]|` over the rows `r` of `x` (`n × c`), in row order.
#[inline(always)]
fn add_rows<T: Copy>(
    x: &[T],
    w: Option<&[f32]>,
    (n, c, c0): (usize, usize, usize),
    acc: &mut [f32],
    to_f32: impl Fn(T) -> f32,
) {
    let len = acc.len();
    for r in 0..n {
        let wr = w.map_or(1.0, |w| w[r]);
        if wr == 0.0 {
            continue;
        }
        for (a, &v) in acc.iter_mut().zip(&x[r * c + c0..r * c + c0 + len]) {
            *a += wr * to_f32(v).abs();
        }
    }
}

/// `c` column sums, a block of [`COLUMNS`] per task: `block(c0, acc)` fills the block of
/// columns from `c0`.
fn column_sums(c: usize, block: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = vec![0f32; c];
    out.par_chunks_mut(COLUMNS).enumerate().for_each(|(k, acc)| block(k * COLUMNS, acc));
    out
}

dispatch! {
    // [`add_rows`] for f32 in vector code, a whole block's sums held in registers across the rows
    // (COLUMNS f32 are 16 AVX-512 registers: a local array of constant length) instead of loaded
    // and stored again for every row. The same additions in the same order.
    fn sum_block_f32(x: &[f32], w: Option<&[f32]>, n: usize, c: usize, c0: usize, acc: &mut [f32]) {
        if acc.len() == COLUMNS {
            let mut block = [0f32; COLUMNS];
            add_rows(x, w, (n, c, c0), &mut block, |v| v);
            acc.copy_from_slice(&block);
        } else {
            add_rows(x, w, (n, c, c0), acc, |v| v);
        }
    }
}

impl ActIntensity {
    fn cpu(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        w: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c) = lx.shape().dims2()?;
        const OP: &str = "act-intensity";
        let w = w.map(|(w, lw)| f32s(OP, "the token weights", w, lw)).transpose()?;
        let out = match x {
            CpuStorage::F32(x) => {
                let x = contiguous(OP, x, lx)?;
                column_sums(c, |c0, acc| sum_block_f32(x, w, n, c, c0, acc))
            }
            CpuStorage::F16(x) => {
                let x = contiguous(OP, x, lx)?;
                column_sums(c, |c0, acc| add_rows(x, w, (n, c, c0), acc, f16::to_f32))
            }
            CpuStorage::BF16(x) => {
                let x = contiguous(OP, x, lx)?;
                column_sums(c, |c0, acc| add_rows(x, w, (n, c, c0), acc, bf16::to_f32))
            }
            other => candle_core::bail!(
                "act-intensity: needs f32, f16 or bf16 input, got {:?}",
                other.dtype()
            ),
        };
        Ok((CpuStorage::F32(out), Shape::from(c)))
    }

    #[cfg(feature = "cuda")]
    fn cuda(
        &self,
        x: &candle_core::CudaStorage,
        lx: &Layout,
        w: Option<(&candle_core::CudaStorage, &Layout)>,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use crate::cuda::{self, dispatch_float, Float};
        use candle_core::cuda_backend::cudarc::driver::{
            CudaSlice, CudaView, LaunchConfig, PushKernelArg,
        };
        use candle_core::cuda_backend::WrapErr;

        /// One `act_intensity_<dtype>_v<vec>` launch into `partial: [row_blocks, c]`.
        fn partial<T: Float>(
            (x, lx): (&candle_core::CudaStorage, &Layout),
            w: Option<&CudaView<f32>>,
            partial: &CudaSlice<f32>,
            (cfg, vec): (LaunchConfig, u32),
            (n, c, items): (i32, i32, i32),
        ) -> Result<()> {
            let dev = &x.device;
            let x = cuda::view("act-intensity", x.as_cuda_slice::<T>()?, lx)?;
            let name = format!("act_intensity_{}_v{vec}", T::NAME);
            let f =
                dev.get_or_load_custom_func(&name, cuda::ACT_INTENSITY.0, cuda::ACT_INTENSITY.1)?;
            let null = 0u64;
            let mut b = f.builder();
            b.arg(&x);
            match w {
                Some(w) => b.arg(w),
                None => b.arg(&null),
            };
            b.arg(partial).arg(&n).arg(&c).arg(&items);
            // SAFETY: the kernel checks its column against `c` and reads rows below `n`;
            // `partial` holds one row per block row of the grid.
            unsafe { b.launch(cfg) }.w()?;
            Ok(())
        }

        let (n, c) = lx.shape().dims2()?;
        let dev = &x.device;
        let w = w
            .map(|(w, lw)| cuda::view("act-intensity", w.as_cuda_slice::<f32>()?, lw))
            .transpose()?;
        let Launch { block, items, vec } = self.launch;
        let row_blocks = n.div_ceil(items as usize).max(1);
        let out_partial = dev.alloc_zeros::<f32>(row_blocks * c)?;
        // A vector load needs the row length and the start to be multiples of its width; f32 has
        // no 8-wide kernel (32 bytes is past the widest load).
        let widest = if x.dtype() == DType::F32 { 4 } else { 8 };
        let vec = vec.min(widest);
        let vec =
            if c.is_multiple_of(vec as usize) && lx.start_offset().is_multiple_of(vec as usize) {
                vec
            } else {
                1
            };
        let cfg = LaunchConfig {
            grid_dim: (
                c.div_ceil(vec as usize).div_ceil(block as usize) as u32,
                row_blocks as u32,
                1,
            ),
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        };
        let dims = (n as i32, c as i32, items as i32);
        dispatch_float!(
            "act-intensity",
            x.dtype(),
            partial((x, lx), w.as_ref(), &out_partial, (cfg, vec), dims)
        )?;
        let out = dev.alloc_zeros::<f32>(c)?;
        let f = dev.get_or_load_custom_func(
            "act_intensity_reduce",
            cuda::ACT_INTENSITY.0,
            cuda::ACT_INTENSITY.1,
        )?;
        let (rb, ci) = (row_blocks as i32, c as i32);
        let mut b = f.builder();
        b.arg(&out_partial).arg(&out).arg(&rb).arg(&ci);
        // SAFETY: one thread per column of `partial: [row_blocks, c]` and of `out: [c]`.
        unsafe { b.launch(LaunchConfig::for_num_elems(c as u32)) }.w()?;
        Ok((cuda::storage(out, dev), Shape::from(c)))
    }
}

/// With no token weights.
struct Unweighted(ActIntensity);

impl candle_core::CustomOp1 for Unweighted {
    fn name(&self) -> &'static str {
        "act-intensity"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.0.cpu(s, l, None)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.0.cuda(s, l, None)
    }
}

impl candle_core::CustomOp2 for ActIntensity {
    fn name(&self) -> &'static str {
        "act-intensity"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.cpu(s1, l1, Some((s2, l2)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.cuda(s1, l1, Some((s2, l2)))
    }
}

/// `Σ_t w_t·|x[t, c]|`, `[c]` f32, for `x: [n, c]` (f32, f16 or bf16) and token weights
/// `w: [n]` f32 (none: every row counts once). No gradient.
pub fn act_intensity(x: &Tensor, w: Option<&Tensor>) -> Result<Tensor> {
    act_intensity_with(x, w, crate::launch::ACT_INTENSITY)
}

/// [`act_intensity`] with explicit CUDA launch parameters (the tuning harness).
pub fn act_intensity_with(x: &Tensor, w: Option<&Tensor>, launch: Launch) -> Result<Tensor> {
    let (n, _) = x.dims2()?;
    let x = x.detach().contiguous()?;
    let op = ActIntensity { launch };
    match w {
        None => x.apply_op1_no_bwd(&Unweighted(op)),
        Some(w) => {
            if w.dims1()? != n || w.dtype() != DType::F32 {
                candle_core::bail!(
                    "act-intensity: token weights must be [{n}] f32, got {:?} {:?}",
                    w.shape(),
                    w.dtype()
                )
            }
            x.apply_op2_no_bwd(&w.detach().contiguous()?, &op)
        }
    }
}

/// The composed definition, in f32.
pub fn act_intensity_slow(x: &Tensor, w: Option<&Tensor>) -> Result<Tensor> {
    let a = x.to_dtype(DType::F32)?.abs()?;
    let a = match w {
        Some(w) => a.broadcast_mul(&w.unsqueeze(1)?)?,
        None => a,
    };
    a.sum(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{assert_close, test_device, uniform};
    use candle_core::Device;

    /// Against the composed definition on the CPU in f32, on the same (rounded) input; the
    /// sizes include ones that are not multiples of a block, a vector width or a row block.
    fn matches_composed_definition(device: &Device) {
        for (n, c) in [(1, 1), (7, 33), (130, 576), (300, 1000), (1030, 64)] {
            let x = uniform(&[n, c], 3.0, 1, device);
            let w: Vec<f32> = (0..n).map(|r| if r % 5 == 3 { 0.0 } else { 1.0 }).collect();
            let w = Tensor::new(w, device).unwrap();
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                let x = x.to_dtype(dtype).unwrap();
                let (xc, wc) =
                    (x.to_device(&Device::Cpu).unwrap(), w.to_device(&Device::Cpu).unwrap());
                for weighted in [false, true] {
                    let got = act_intensity(&x, weighted.then_some(&w)).unwrap();
                    let want = act_intensity_slow(&xc, weighted.then_some(&wc)).unwrap();
                    let what = format!("{device:?} {dtype:?} n{n} c{c} weighted {weighted}");
                    assert_close(&got, &want, 1e-5, 1e-6, &what);
                }
            }
        }
    }
    test_device!(
        matches_composed_definition,
        matches_composed_definition_cpu,
        matches_composed_definition_cuda
    );

    /// Every CUDA launch configuration the tuning harness tries gives the CPU's result.
    #[cfg(feature = "cuda")]
    #[test]
    fn every_launch_configuration_agrees_cuda() {
        let Some(device) = crate::test_utils::cuda() else { return };
        let x = uniform(&[517, 1024], 2.0, 3, &device).to_dtype(DType::BF16).unwrap();
        let want = act_intensity_slow(&x.to_device(&Device::Cpu).unwrap(), None).unwrap();
        for block in [64, 128, 256, 512, 1024] {
            for items in [1, 16, 64, 256] {
                for vec in [1, 2, 4, 8] {
                    let got = act_intensity_with(&x, None, Launch { block, items, vec }).unwrap();
                    assert_close(
                        &got,
                        &want,
                        1e-5,
                        1e-6,
                        &format!("block {block} items {items} vec {vec}"),
                    );
                }
            }
        }
    }

    #[test]
    fn rejects_bad_weights() {
        let x = uniform(&[4, 3], 1.0, 2, &Device::Cpu);
        let w = Tensor::new(&[1f32, 1.0], &Device::Cpu).unwrap();
        assert!(act_intensity(&x, Some(&w)).unwrap_err().to_string().contains("token weights"));
    }
}
