//! `concat-rows` and `concat-cols`: the concatenated-layer construction of METHODS.md §3.4. From
//! two layers' matrices `a`, `b` and one index list, the picked rows (columns) of `a` then of `b`
//! in one op: index `i < a.rows` (`a.cols`) picks from `a`, otherwise row (column) `i − a.rows` of
//! `b`. A CoMe merge builds gate/up, q/k/v (and their biases) from rows and down/o from columns.
//! A pure copy in any dtype, so every device gives the same bits; [`concat_rows_slow`] and
//! [`concat_cols_slow`] are the `index_select` + `cat` compositions it replaces.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::contiguous;
use crate::launch::Launch;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Axis {
    Rows,
    Cols,
}

struct Concat {
    axis: Axis,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    launch: Launch,
}

/// Checked `(a: [ra, ca], b: [rb, cb], idx)` with every index in range.
fn dims(
    axis: Axis,
    la: &Layout,
    lb: &Layout,
    idx: &[u32],
) -> Result<((usize, usize), (usize, usize))> {
    let (a, b) = (la.shape().dims2()?, lb.shape().dims2()?);
    let (width_ok, limit) = match axis {
        Axis::Rows => (a.1 == b.1, a.0 + b.0),
        Axis::Cols => (a.0 == b.0, a.1 + b.1),
    };
    if !width_ok {
        candle_core::bail!("concat-{axis:?}: {a:?} and {b:?} do not line up")
    }
    if let Some(bad) = idx.iter().find(|&&i| i as usize >= limit) {
        candle_core::bail!("concat-{axis:?}: index {bad} is past the {limit} of both inputs")
    }
    Ok((a, b))
}

fn copy<T: Copy + Send + Sync>(
    axis: Axis,
    a: &[T],
    b: &[T],
    (ra, ca): (usize, usize),
    cb: usize,
    idx: &[u32],
) -> Vec<T> {
    match axis {
        Axis::Rows => idx
            .par_iter()
            .flat_map_iter(|&i| {
                let i = i as usize;
                if i < ra { &a[i * ca..(i + 1) * ca] } else { &b[(i - ra) * ca..(i - ra + 1) * ca] }
                    .iter()
                    .copied()
            })
            .collect(),
        Axis::Cols => {
            let m = idx.len();
            let mut out = Vec::with_capacity(ra * m);
            for r in 0..ra {
                out.extend(idx.iter().map(|&i| {
                    let i = i as usize;
                    if i < ca {
                        a[r * ca + i]
                    } else {
                        b[r * cb + i - ca]
                    }
                }));
            }
            out
        }
    }
}

impl candle_core::CustomOp3 for Concat {
    fn name(&self) -> &'static str {
        match self.axis {
            Axis::Rows => "concat-rows",
            Axis::Cols => "concat-cols",
        }
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
        let CpuStorage::U32(idx) = s3 else {
            candle_core::bail!("{}: indices must be u32", self.name())
        };
        let idx = contiguous("concat", idx, l3)?;
        let ((ra, ca), (_, cb)) = dims(self.axis, l1, l2, idx)?;
        let shape = match self.axis {
            Axis::Rows => Shape::from((idx.len(), ca)),
            Axis::Cols => Shape::from((ra, idx.len())),
        };
        let out = match (s1, s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => CpuStorage::F32(copy(
                self.axis,
                contiguous("concat", a, l1)?,
                contiguous("concat", b, l2)?,
                (ra, ca),
                cb,
                idx,
            )),
            (CpuStorage::F16(a), CpuStorage::F16(b)) => CpuStorage::F16(copy(
                self.axis,
                contiguous("concat", a, l1)?,
                contiguous("concat", b, l2)?,
                (ra, ca),
                cb,
                idx,
            )),
            (CpuStorage::BF16(a), CpuStorage::BF16(b)) => CpuStorage::BF16(copy(
                self.axis,
                contiguous("concat", a, l1)?,
                contiguous("concat", b, l2)?,
                (ra, ca),
                cb,
                idx,
            )),
            (a, b) => candle_core::bail!(
                "{}: needs two f32, f16 or bf16 inputs of one dtype, got {:?} and {:?}",
                self.name(),
                a.dtype(),
                b.dtype()
            ),
        };
        Ok((out, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use crate::cuda::{self, dispatch_float, Float};
        use candle_core::cuda_backend::cudarc::driver::{CudaView, LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;

        let op = self.name();
        let dev = &s1.device;
        let idx = cuda::view(op, s3.as_cuda_slice::<u32>()?, l3)?;
        let m = l3.shape().elem_count();
        // The bounds check runs on the host copy of the indices: a bad index would read past `b`.
        let host: Vec<u32> = dev.cuda_stream().clone_dtoh(&idx).w()?;
        let ((ra, ca), (_, cb)) = dims(self.axis, l1, l2, &host)?;
        let Launch { block, items, vec } = self.launch;

        /// One launch of kernel `name(dtype)` over `a`, `b` into a new `[m, ca]` or `[ra, m]`.
        fn go<T: Float>(
            name: &dyn Fn(&str) -> String,
            cfg: LaunchConfig,
            ((a, la), (b, lb)): Pair,
            idx: &CudaView<u32>,
            len: usize,
            ints: &[i32],
        ) -> Result<candle_core::CudaStorage> {
            let (op, dev) = ("concat", &a.device);
            let a = cuda::view(op, a.as_cuda_slice::<T>()?, la)?;
            let b = cuda::view(op, b.as_cuda_slice::<T>()?, lb)?;
            let f = dev.get_or_load_custom_func(
                &name(T::NAME),
                cuda::CONCAT_LAYERS.0,
                cuda::CONCAT_LAYERS.1,
            )?;
            // SAFETY: every element is written by the kernel below before it is read.
            let out = unsafe { dev.alloc::<T>(len)? };
            let mut builder = f.builder();
            builder.arg(&a).arg(&b).arg(idx).arg(&out);
            for v in ints {
                builder.arg(v);
            }
            // SAFETY: the indices were checked against both inputs' extents; the grid covers the
            // output and the kernel checks its column.
            unsafe { builder.launch(cfg) }.w()?;
            Ok(cuda::storage(out, dev))
        }
        type Pair<'a> = (
            (&'a candle_core::CudaStorage, &'a Layout),
            (&'a candle_core::CudaStorage, &'a Layout),
        );

        if s1.dtype() != s2.dtype() {
            candle_core::bail!("{op}: the two inputs differ in dtype")
        }
        // 16-byte loads at most: 4 f32, and 4 of the 16-bit types as the kernels are built.
        let widest = 4;
        type Name = Box<dyn Fn(&str) -> String>;
        let (name, cfg, len, ints): (Name, _, _, _) = match self.axis {
            Axis::Rows => {
                let vec = vec.min(widest);
                let aligned = |l: &Layout| l.start_offset().is_multiple_of(vec as usize);
                let vec = if ca.is_multiple_of(vec as usize) && aligned(l1) && aligned(l2) {
                    vec
                } else {
                    1
                };
                let cfg = LaunchConfig {
                    grid_dim: (
                        ca.div_ceil(vec as usize).div_ceil(block as usize) as u32,
                        m as u32,
                        1,
                    ),
                    block_dim: (block, 1, 1),
                    shared_mem_bytes: 0,
                };
                let name = Box::new(move |dtype: &str| format!("concat_rows_{dtype}_v{vec}"));
                (name, cfg, m * ca, vec![ra as i32, ca as i32])
            }
            Axis::Cols => {
                let cfg = LaunchConfig {
                    grid_dim: (
                        m.div_ceil(block as usize) as u32,
                        ra.div_ceil(items as usize) as u32,
                        1,
                    ),
                    block_dim: (block, 1, 1),
                    shared_mem_bytes: 0,
                };
                let ints = vec![ra as i32, ca as i32, cb as i32, m as i32, items as i32];
                (Box::new(|dtype: &str| format!("concat_cols_{dtype}")), cfg, ra * m, ints)
            }
        };
        let out = dispatch_float!(
            op,
            s1.dtype(),
            go(&name, cfg, ((s1, l1), (s2, l2)), &idx, len, &ints)
        )?;
        let shape = match self.axis {
            Axis::Rows => Shape::from((m, ca)),
            Axis::Cols => Shape::from((ra, m)),
        };
        Ok((out, shape))
    }
}

/// `[a; b]` rows at `idx` (`i < a.rows` from `a`, else row `i − a.rows` of `b`), for 2-D `a`, `b`
/// of one width and dtype, or 1-D ones (biases). No gradient.
pub fn concat_rows(a: &Tensor, b: &Tensor, idx: &[u32]) -> Result<Tensor> {
    concat_with(Axis::Rows, a, b, idx, crate::launch::CONCAT_ROWS)
}

/// `[a | b]` columns at `idx` (`i < a.cols` from `a`, else column `i − a.cols` of `b`), for 2-D
/// `a`, `b` of one height and dtype. No gradient.
pub fn concat_cols(a: &Tensor, b: &Tensor, idx: &[u32]) -> Result<Tensor> {
    concat_with(Axis::Cols, a, b, idx, crate::launch::CONCAT_COLS)
}

/// [`concat_rows`] with explicit CUDA launch parameters (the tuning harness).
pub fn concat_rows_with(a: &Tensor, b: &Tensor, idx: &[u32], launch: Launch) -> Result<Tensor> {
    concat_with(Axis::Rows, a, b, idx, launch)
}

/// [`concat_cols`] with explicit CUDA launch parameters.
pub fn concat_cols_with(a: &Tensor, b: &Tensor, idx: &[u32], launch: Launch) -> Result<Tensor> {
    concat_with(Axis::Cols, a, b, idx, launch)
}

fn concat_with(axis: Axis, a: &Tensor, b: &Tensor, idx: &[u32], launch: Launch) -> Result<Tensor> {
    let vector = a.rank() == 1;
    if vector && axis == Axis::Cols {
        candle_core::bail!("concat-cols: needs matrices, got {:?}", a.shape())
    }
    let as2d = |t: &Tensor| if vector { t.unsqueeze(1) } else { Ok(t.clone()) };
    let (a2, b2) = (as2d(&a.detach())?.contiguous()?, as2d(&b.detach())?.contiguous()?);
    let idx = Tensor::new(idx, a.device())?;
    let out = a2.apply_op3_no_bwd(&b2, &idx, &Concat { axis, launch })?;
    if vector {
        out.squeeze(1)
    } else {
        Ok(out)
    }
}

/// The composed definition of [`concat_rows`].
pub fn concat_rows_slow(a: &Tensor, b: &Tensor, idx: &[u32]) -> Result<Tensor> {
    let idx = Tensor::new(idx, a.device())?;
    Tensor::cat(&[a, b], 0)?.index_select(&idx, 0)
}

/// The composed definition of [`concat_cols`].
pub fn concat_cols_slow(a: &Tensor, b: &Tensor, idx: &[u32]) -> Result<Tensor> {
    let idx = Tensor::new(idx, a.device())?;
    Tensor::cat(&[a, b], 1)?.index_select(&idx, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{test_device, uniform};
    use candle_core::{DType, Device};

    fn bits(t: &Tensor) -> Vec<u32> {
        let t = t.to_device(&Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
    }

    /// Bit for bit the `index_select` + `cat` composition, on shapes of real merges (odd widths,
    /// a's picks then b's) and in every dtype.
    fn matches_composition(device: &Device) {
        for (ra, rb, k) in [(1, 1, 1), (8, 8, 3), (172, 172, 64), (37, 50, 129)] {
            let idx: Vec<u32> =
                (0..ra as u32).step_by(2).chain((ra as u32..(ra + rb) as u32).step_by(3)).collect();
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                let a = uniform(&[ra, k], 1.0, 1, device).to_dtype(dtype).unwrap();
                let b = uniform(&[rb, k], 1.0, 2, device).to_dtype(dtype).unwrap();
                let rows = concat_rows(&a, &b, &idx).unwrap();
                assert_eq!(rows.dtype(), dtype);
                assert_eq!(
                    bits(&rows),
                    bits(&concat_rows_slow(&a, &b, &idx).unwrap()),
                    "rows {ra} {rb} {k} {dtype:?}"
                );
                let (at, bt) =
                    (a.t().unwrap().contiguous().unwrap(), b.t().unwrap().contiguous().unwrap());
                let cols = concat_cols(&at, &bt, &idx).unwrap();
                assert_eq!(
                    bits(&cols),
                    bits(&concat_cols_slow(&at, &bt, &idx).unwrap()),
                    "cols {ra} {rb} {k} {dtype:?}"
                );
                let (va, vb) = (
                    a.narrow(1, 0, 1).unwrap().squeeze(1).unwrap(),
                    b.narrow(1, 0, 1).unwrap().squeeze(1).unwrap(),
                );
                let bias = concat_rows(&va, &vb, &idx).unwrap();
                assert_eq!(
                    bits(&bias),
                    bits(&concat_rows_slow(&va, &vb, &idx).unwrap()),
                    "bias {ra} {rb} {dtype:?}"
                );
            }
        }
    }
    test_device!(matches_composition, matches_composition_cpu, matches_composition_cuda);

    /// Every launch configuration the tuning harness tries gives the same bits.
    #[cfg(feature = "cuda")]
    #[test]
    fn every_launch_configuration_agrees_cuda() {
        let Some(device) = crate::test_utils::cuda() else { return };
        let a = uniform(&[300, 576], 1.0, 4, &device).to_dtype(DType::BF16).unwrap();
        let b = uniform(&[300, 576], 1.0, 5, &device).to_dtype(DType::BF16).unwrap();
        let idx: Vec<u32> = (0..600).step_by(2).collect();
        let rows = bits(&concat_rows_slow(&a, &b, &idx).unwrap());
        let cols = bits(&concat_cols_slow(&a, &b, &idx[..500]).unwrap());
        for block in [64, 128, 256, 512, 1024] {
            for items in [1, 4, 16, 64] {
                for vec in [1, 2, 4] {
                    let l = Launch { block, items, vec };
                    assert_eq!(bits(&concat_rows_with(&a, &b, &idx, l).unwrap()), rows, "{l:?}");
                    assert_eq!(
                        bits(&concat_cols_with(&a, &b, &idx[..500], l).unwrap()),
                        cols,
                        "{l:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn rejects_out_of_range_indices_and_mismatched_widths() {
        let a = uniform(&[3, 4], 1.0, 1, &Device::Cpu);
        let b = uniform(&[2, 4], 1.0, 2, &Device::Cpu);
        assert!(concat_rows(&a, &b, &[0, 5]).unwrap_err().to_string().contains("index 5"));
        let c = uniform(&[2, 5], 1.0, 3, &Device::Cpu);
        assert!(concat_rows(&a, &c, &[0]).unwrap_err().to_string().contains("line up"));
    }
}
