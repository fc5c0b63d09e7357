//! `x · Wᵀ` for a few rows of `x` against a torch-layout weight `[n, k]`, reading the weight
//! once and in place: an autoregressive decoder's step (T3's: the two CFG rows).
//!
//! The gemm crate packs both operands before its microkernel runs; for two rows against a
//! 1024 × 4096 weight that packing copies (and first zeroes) the whole weight on every call,
//! and T3's decode step on the CPU spent most of its time there (perf: 49 % in
//! `gemm_common::…::vectorize` against 9 % in the microkernel). Here each output is a dot product
//! of rows that are already contiguous, so the step is bound by reading the weights once.

use rayon::prelude::*;

/// Most rows [`few_rows_matmul`] takes; more should go to a packing GEMM, which amortises its
/// packing over them.
pub const MAX_ROWS: usize = 8;

/// Weight rows each parallel task handles (a multiple of the 4 the kernel does at once).
pub(crate) const TASK_ROWS: usize = 64;

/// `y[m, n] = x[m, k] · w[n, k]ᵀ`, `x` and `w` row-major and contiguous, `m ≤ MAX_ROWS`;
/// parallel over `w`'s rows on the current rayon pool.
pub fn few_rows_matmul(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
    assert!(
        (1..=MAX_ROWS).contains(&m),
        "few_rows_matmul takes 1..={MAX_ROWS} rows, not {m}"
    );
    assert_eq!(x.len(), m * k, "x is not [{m}, {k}]");
    assert_eq!(w.len(), n * k, "w is not [{n}, {k}]");
    // `[n, m]`: each task writes the outputs of its own weight rows.
    let mut yt = vec![0f32; n * m];
    yt.par_chunks_mut(TASK_ROWS * m)
        .zip(w.par_chunks(TASK_ROWS * k))
        .for_each(|(out, rows)| rows_times_x(x, m, k, rows, out));
    untranspose(&yt, m, n)
}

/// `[n, m]` outputs (each task's weight rows together) as `[m, n]`.
pub(crate) fn untranspose(yt: &[f32], m: usize, n: usize) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    for (j, outs) in yt.chunks_exact(m).enumerate() {
        for (i, &v) in outs.iter().enumerate() {
            y[i * n + j] = v;
        }
    }
    y
}

/// `out[j·m + i] = rows[j] · x[i]` for each of `rows`' rows.
fn rows_times_x(x: &[f32], m: usize, k: usize, rows: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: AVX-512F was detected at run time; every load is bounds-checked.
        unsafe { avx512::rows_times_x(x, m, k, rows, out) };
        return;
    }
    for (row, outs) in rows.chunks_exact(k).zip(out.chunks_exact_mut(m)) {
        for (i, o) in outs.iter_mut().enumerate() {
            *o = dot(row, &x[i * k..(i + 1) * k]);
        }
    }
}

/// A dot product in 16 independent lanes (the order the AVX-512 path sums in), which the
/// compiler vectorises.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (a, b) in ca.zip(cb) {
        for l in 0..16 {
            lanes[l] = a[l].mul_add(b[l], lanes[l]);
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for (a, b) in ra.iter().zip(rb) {
        sum = a.mul_add(*b, sum);
    }
    sum
}

/// Calls `$f::<M>(args)` with `M` the row count `$m` (1 to [`MAX_ROWS`]) as a constant, so a
/// kernel's accumulators for every row stay in registers.
macro_rules! by_rows {
    ($m:expr, $f:ident, $($arg:expr),*) => {
        match $m {
            1 => $f::<1>($($arg),*),
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            4 => $f::<4>($($arg),*),
            5 => $f::<5>($($arg),*),
            6 => $f::<6>($($arg),*),
            7 => $f::<7>($($arg),*),
            _ => $f::<8>($($arg),*),
        }
    };
}
pub(crate) use by_rows;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    /// Whether this CPU runs AVX-512F (detected once).
    pub(crate) fn available() -> bool {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
    }

    /// Four weight rows at a time against every row of `x`: each 16 weights loaded once feed
    /// `m` FMAs.
    #[target_feature(enable = "avx512f")]
    pub fn rows_times_x(x: &[f32], m: usize, k: usize, rows: &[f32], out: &mut [f32]) {
        by_rows!(m, block, x, k, rows, out)
    }

    /// 16 floats from `s`, which must hold at least 16 (checked).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn load16(s: &[f32]) -> __m512 {
        assert!(s.len() >= 16);
        // SAFETY: 16 floats are readable at `s`; AVX-512F is enabled for this function.
        unsafe { _mm512_loadu_ps(s.as_ptr()) }
    }

    #[target_feature(enable = "avx512f")]
    fn block<const M: usize>(x: &[f32], k: usize, rows: &[f32], out: &mut [f32]) {
        let n = rows.len() / k;
        let body = k - k % 16;
        let mut j = 0;
        while j + 4 <= n {
            let mut acc = [[_mm512_setzero_ps(); M]; 4];
            let mut p = 0;
            while p < body {
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let w = load16(&rows[(j + r) * k + p..]);
                    for (i, a) in acc_r.iter_mut().enumerate() {
                        let xv = load16(&x[i * k + p..]);
                        *a = _mm512_fmadd_ps(w, xv, *a);
                    }
                }
                p += 16;
            }
            for (r, acc_r) in acc.iter().enumerate() {
                for (i, a) in acc_r.iter().enumerate() {
                    let mut s = _mm512_reduce_add_ps(*a);
                    for q in body..k {
                        s = rows[(j + r) * k + q].mul_add(x[i * k + q], s);
                    }
                    out[(j + r) * M + i] = s;
                }
            }
            j += 4;
        }
        while j < n {
            for i in 0..M {
                let mut a = _mm512_setzero_ps();
                let mut p = 0;
                while p < body {
                    let w = load16(&rows[j * k + p..]);
                    a = _mm512_fmadd_ps(w, load16(&x[i * k + p..]), a);
                    p += 16;
                }
                let mut s = _mm512_reduce_add_ps(a);
                for q in body..k {
                    s = rows[j * k + q].mul_add(x[i * k + q], s);
                }
                out[j * M + i] = s;
            }
            j += 1;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `x · wᵀ` in f64.
    pub(crate) fn reference(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f64> {
        let mut y = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = (0..k)
                    .map(|p| f64::from(x[i * k + p]) * f64::from(w[j * k + p]))
                    .sum();
            }
        }
        y
    }

    /// `len` values in [−0.5, 0.5) from a linear congruential generator.
    pub(crate) fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Every row count, with `k` and `n` off the kernel's 16 and 4 (and the task size), against
    /// an f64 product; the portable path gives the same result.
    #[test]
    fn matches_an_f64_product_for_every_row_count() {
        for (k, n) in [(1024, 70), (37, 133), (16, 4), (5, 3)] {
            let w = values(n * k, 7);
            for m in 1..=MAX_ROWS {
                let x = values(m * k, m as u32);
                let got = few_rows_matmul(&x, m, k, &w, n);
                let want = reference(&x, m, k, &w, n);
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(g, w)| (f64::from(*g) - w).abs())
                    .fold(0f64, f64::max);
                assert!(
                    worst < 1e-4 * (k as f64).sqrt(),
                    "m {m}, k {k}, n {n}: {worst}"
                );
                let mut portable = vec![0f32; n * m];
                for (row, outs) in w.chunks_exact(k).zip(portable.chunks_exact_mut(m)) {
                    for (i, o) in outs.iter_mut().enumerate() {
                        *o = dot(row, &x[i * k..(i + 1) * k]);
                    }
                }
                for (j, outs) in portable.chunks_exact(m).enumerate() {
                    for (i, v) in outs.iter().enumerate() {
                        let d = (v - got[i * n + j]).abs();
                        assert!(
                            d < 1e-5,
                            "portable path differs by {d} at m {m}, k {k}, n {n}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "1..=8 rows")]
    fn too_many_rows_is_refused() {
        few_rows_matmul(&[0.0; 9], 9, 1, &[0.0], 1);
    }
}
