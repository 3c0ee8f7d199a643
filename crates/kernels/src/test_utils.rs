//! Test helpers: seeded inputs, a tolerance check, and `test_device!`, which makes a `_cpu` test
//! and, in the `cuda` build, a `_cuda` test of one function taking a device (candle's pattern).
//! A `_cuda` test on a machine without a usable GPU prints why and does nothing else.

use candle_core::{DType, Device, Tensor};

/// Uniform values in `[-scale, scale)` from a seeded splitmix64 stream (candle cannot seed its
/// CPU generator), made on the CPU and moved to `device`.
pub fn uniform(shape: &[usize], scale: f32, seed: u64, device: &Device) -> Tensor {
    let mut state = seed;
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap().to_device(device).unwrap()
}

/// `|got − want| ≤ rel·|want| + abs` elementwise, compared in f32 on the CPU.
pub fn assert_close(got: &Tensor, want: &Tensor, rel: f32, abs: f32, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes");
    let flat = |t: &Tensor| -> Vec<f32> {
        t.to_dtype(DType::F32)
            .unwrap()
            .to_device(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    for (i, (g, w)) in flat(got).iter().zip(flat(want)).enumerate() {
        assert!((g - w).abs() <= rel * w.abs() + abs, "{what}[{i}]: {g} vs {w}");
    }
}

/// CUDA device 0, or `None` after printing why there is none.
#[cfg(feature = "cuda")]
pub fn cuda() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("skipped: no usable CUDA device ({e})");
            None
        }
    }
}

/// `test_device!(f, f_cpu, f_cuda)`: `f(&Device)` as a CPU test and, with `cuda`, a GPU test.
macro_rules! test_device {
    ($f:ident, $cpu:ident, $cuda:ident) => {
        #[test]
        fn $cpu() {
            $f(&candle_core::Device::Cpu)
        }

        #[cfg(feature = "cuda")]
        #[test]
        fn $cuda() {
            if let Some(device) = crate::test_utils::cuda() {
                $f(&device)
            }
        }
    };
}
pub(crate) use test_device;
