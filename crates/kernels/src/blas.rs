//! Single-threaded f32 matrix products for the CPU ops that split their own work across rayon's
//! threads ([`linear`](crate::linear), [`causal_attention`](crate::causal_attention)).
//!
//! With MKL (build.rs links the static sequential library when `LAYERFOLD_MKL_DIR` names it, and
//! sets `cfg(layerfold_mkl)`), this is `cblas_sgemm`; otherwise the gemm crate that candle's own
//! CPU matmul uses, without its thread pool. Sequential MKL, not its OpenMP build: an OpenMP pool
//! would spin beside rayon's after every product and take the cores rayon's ops need (measured on
//! 2 cores: sequential MKL on half the rows per thread is as fast as threaded MKL, about 150
//! GFLOPS per core on a Xeon with AVX-512 against the gemm crate's 105).

/// `c = a · op(b) + beta · c`: `a` is `[m, k]` row-major with row stride `lda`; `op(b)` is
/// `[k, n]`, stored as `b` `[n, k]` (stride `ldb`) and transposed when `b_transposed`, else as `b`
/// `[k, n]`; `c` is `[m, n]` with row stride `ldc`. With `beta = 0`, `c` is overwritten without
/// being read (BLAS's rule), so it may hold anything.
#[allow(clippy::too_many_arguments)] // BLAS's own argument list
pub(crate) fn sgemm(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    b_transposed: bool,
    c: &mut [f32],
    ldc: usize,
    beta: f32,
) {
    if m == 0 || n == 0 {
        return;
    }
    // The last row of each matrix may be short of its stride: only its first columns are read.
    assert!(a.len() >= (m - 1) * lda + k, "sgemm: a is too short");
    let (b_rows, b_cols) = if b_transposed { (n, k) } else { (k, n) };
    assert!(b_rows == 0 || b.len() >= (b_rows - 1) * ldb + b_cols, "sgemm: b is too short");
    assert!(c.len() >= (m - 1) * ldc + n, "sgemm: c is too short");
    assert!(lda >= k && ldb >= b_cols && ldc >= n, "sgemm: a stride is shorter than its row");
    if k == 0 {
        for row in c.chunks_mut(ldc).take(m) {
            for v in &mut row[..n] {
                *v = if beta == 0.0 { 0.0 } else { beta * *v };
            }
        }
        return;
    }
    imp::sgemm((m, n, k), a, lda, b, ldb, b_transposed, c, ldc, beta)
}

/// Whether [`sgemm`] is MKL's.
pub const MKL: bool = cfg!(layerfold_mkl);

#[cfg(layerfold_mkl)]
mod imp {
    use std::ffi::c_int;

    // CBLAS_LAYOUT / CBLAS_TRANSPOSE values (mkl_cblas.h); MKL_INT is 32-bit in the LP64 library.
    const ROW_MAJOR: c_int = 101;
    const NO_TRANS: c_int = 111;
    const TRANS: c_int = 112;

    extern "C" {
        #[allow(clippy::too_many_arguments)]
        fn cblas_sgemm(
            layout: c_int,
            trans_a: c_int,
            trans_b: c_int,
            m: c_int,
            n: c_int,
            k: c_int,
            alpha: f32,
            a: *const f32,
            lda: c_int,
            b: *const f32,
            ldb: c_int,
            beta: f32,
            c: *mut f32,
            ldc: c_int,
        );
    }

    fn int(x: usize) -> c_int {
        c_int::try_from(x).expect("sgemm: a dimension exceeds MKL's 32-bit LP64 indices")
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn sgemm(
        (m, n, k): (usize, usize, usize),
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
        b_transposed: bool,
        c: &mut [f32],
        ldc: usize,
        beta: f32,
    ) {
        let trans_b = if b_transposed { TRANS } else { NO_TRANS };
        // SAFETY: the caller checked that each slice holds its matrix at its stride (beta = 0
        // makes MKL write c without reading it).
        unsafe {
            cblas_sgemm(
                ROW_MAJOR,
                NO_TRANS,
                trans_b,
                int(m),
                int(n),
                int(k),
                1.0,
                a.as_ptr(),
                int(lda),
                b.as_ptr(),
                int(ldb),
                beta,
                c.as_mut_ptr(),
                int(ldc),
            )
        }
    }
}

#[cfg(not(layerfold_mkl))]
mod imp {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sgemm(
        (m, n, k): (usize, usize, usize),
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
        b_transposed: bool,
        c: &mut [f32],
        ldc: usize,
        beta: f32,
    ) {
        // gemm's rhs element (p, j) is at p·rhs_rs + j·rhs_cs.
        let (rhs_rs, rhs_cs) = if b_transposed { (1, ldb) } else { (ldb, 1) };
        // SAFETY: the caller checked that each slice holds its matrix at its stride; gemm computes
        // dst = beta·dst + 1·a·b, and with read_dst = false (beta = 0) writes c without reading it.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                ldc as isize,
                beta != 0.0,
                a.as_ptr(),
                1,
                lda as isize,
                b.as_ptr(),
                rhs_cs as isize,
                rhs_rs as isize,
                beta,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sgemm;

    /// The f64 product, for comparison.
    fn reference(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], bt: bool) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|p| {
                        let bv = if bt { b[j * k + p] } else { b[p * n + j] };
                        a[i * k + p] as f64 * bv as f64
                    })
                    .sum();
            }
        }
        c
    }

    #[test]
    fn products_match_the_definition_with_strides_and_both_layouts() {
        let (m, n, k) = (37, 29, 70);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 101) as f32 - 50.0) / 25.0).collect();
        let b: Vec<f32> = (0..n * k).map(|i| ((i * 104729 % 97) as f32 - 48.0) / 24.0).collect();
        for bt in [true, false] {
            let want = reference(m, n, k, &a, &b, bt);
            // c with a wider stride than its rows: the extra columns stay untouched.
            let ldc = n + 3;
            let mut c = vec![-7f32; m * ldc];
            let ldb = if bt { k } else { n };
            sgemm((m, n, k), &a, k, &b, ldb, bt, &mut c, ldc, 0.0);
            for i in 0..m {
                for j in 0..ldc {
                    let got = c[i * ldc + j];
                    if j >= n {
                        assert_eq!(got, -7.0, "column {j} beyond n was written");
                        continue;
                    }
                    let w = want[i * n + j];
                    assert!(
                        (got as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
                        "({i},{j}): {got} vs {w}"
                    );
                }
            }
        }
    }
}
