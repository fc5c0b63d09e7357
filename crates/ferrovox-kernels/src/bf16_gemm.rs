//! Products on bf16 inputs with f32 sums, for the large CPU products of flows and prefills.
//!
//! AVX-512 BF16's `vdpbf16ps` does two multiply-adds per f32 lane where an FMA does one, so a
//! product whose inputs are rounded to bf16 (8 bits of mantissa; the sums stay f32) runs up to
//! twice as fast as the f32 one on the same cores. The right-hand side (a layer's weight) is
//! packed once into panels of [`NR`] columns, each column's consecutive pairs of `k` in one
//! 32-bit word, the order `vdpbf16ps` reads them in; the left-hand side (activations) is rounded
//! row by row into the same pairs as it comes. A tile of [`MR`] rows × [`NR`] columns keeps its
//! 24 sums in registers over the whole of `k`.
//!
//! Where the CPU lacks AVX-512 BF16 the same packed data is multiplied by a portable loop
//! (exact to the same rounding, slow): models ask [`available`] before choosing bf16 products.

use rayon::prelude::*;

use super::packed_rows::{from_bf16, to_bf16};
use super::SendPtr;

/// Columns of a panel: two registers of 16 f32 sums.
pub const NR: usize = 32;
/// Rows of a tile: 12 × 2 sums, 2 panel registers and a broadcast fill 27 of the 32 registers.
pub const MR: usize = 12;
/// Rows a parallel job takes at once: its rounded rows stay in L2 while every panel passes.
const MC: usize = 4 * MR;

/// Whether this CPU multiplies bf16 pairs natively (AVX-512 BF16).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::direct::cpu_has_avx512f() && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// A right-hand side `[k, n]` rounded to bf16 and packed into panels of [`NR`] columns: panel
/// `j` holds `kp = ⌈k/2⌉` rows of [`NR`] words, word `c` of row `p` carrying column
/// `j·NR + c` at `k = 2p` (low half) and `2p + 1` (high half); padding is zero.
#[derive(Debug, Clone, Default)]
pub struct Bf16Panels {
    k: usize,
    n: usize,
    data: Vec<u32>,
}

impl Bf16Panels {
    /// From a torch-layout weight `[n, k]` (row `j` is column `j` of the product).
    pub fn from_weight(w: &[f32], n: usize, k: usize) -> Self {
        Self::pack(k, n, |kk, j| w[j * k + kk])
    }

    /// From a row-major matrix `[k, n]`.
    pub fn from_matrix(m: &[f32], k: usize, n: usize) -> Self {
        Self::pack(k, n, |kk, j| m[kk * n + j])
    }

    /// The `[k, n]` whose element `(kk, j)` is `at(kk, j)`, rounded and packed.
    fn pack(k: usize, n: usize, at: impl Fn(usize, usize) -> f32) -> Self {
        let kp = k.div_ceil(2);
        let mut data = vec![0u32; n.div_ceil(NR) * kp * NR];
        for (pi, panel) in data.chunks_exact_mut(kp * NR).enumerate() {
            for c in 0..NR.min(n - pi * NR) {
                let j = pi * NR + c;
                for p in 0..kp {
                    let hi = if 2 * p + 1 < k { at(2 * p + 1, j) } else { 0.0 };
                    panel[p * NR + c] =
                        u32::from(to_bf16(at(2 * p, j))) | u32::from(to_bf16(hi)) << 16;
                }
            }
        }
        Self { k, n, data }
    }

    /// The values as packed (bf16-rounded), as a row-major `[k, n]`.
    #[cfg(test)]
    fn unpacked(&self) -> Vec<f32> {
        let kp = self.k.div_ceil(2);
        let mut out = vec![0f32; self.k * self.n];
        for j in 0..self.n {
            let panel = &self.data[(j / NR) * kp * NR..];
            for kk in 0..self.k {
                let w = panel[(kk / 2) * NR + j % NR];
                out[kk * self.n + j] = from_bf16((w >> (16 * (kk % 2))) as u16);
            }
        }
        out
    }

    /// `x · self` (+ `bias`) for `x` `[m, k]` row-major, on the rayon pool: `[m, n]`.
    pub fn matmul(&self, x: &[f32], m: usize, bias: Option<&[f32]>) -> Result<Vec<f32>, String> {
        let (k, n) = (self.k, self.n);
        if x.len() != m * k {
            return Err(format!(
                "bf16 product: {} inputs for {m} rows of {k}",
                x.len()
            ));
        }
        if let Some(b) = bias {
            if b.len() != n {
                return Err(format!("bf16 product: bias of {} for {n} columns", b.len()));
            }
        }
        let kp = k.div_ceil(2);
        let mut out = vec![0f32; m * n];
        if out.is_empty() {
            return Ok(out);
        }
        let panels = n.div_ceil(NR);
        let row_blocks = m.div_ceil(MC);
        // Enough jobs to keep every worker busy, each at least two panels wide.
        let want = 4 * rayon::current_num_threads();
        let groups = want
            .div_ceil(row_blocks)
            .clamp(1, panels.div_ceil(2).max(1));
        let per_group = panels.div_ceil(groups);
        let groups = panels.div_ceil(per_group);
        let dst = SendPtr(out.as_mut_ptr());
        (0..row_blocks * groups).into_par_iter().for_each(|job| {
            let (rb, g) = (job / groups, job % groups);
            let r0 = rb * MC;
            let rows = MC.min(m - r0);
            LHS.with_borrow_mut(|lhs| {
                lhs.clear();
                lhs.resize(rows * kp, 0);
                round_rows(&x[r0 * k..(r0 + rows) * k], k, lhs);
                let p0 = g * per_group;
                let p1 = panels.min(p0 + per_group);
                // SAFETY: `out` is `m × n`; this job writes rows `r0..r0 + rows` of panels
                // `p0..p1`'s columns, which no other job writes.
                unsafe { self.product(lhs, rows, (p0, p1), dst.get().add(r0 * n), n, bias) };
            });
        });
        Ok(out)
    }

    /// `dst[rows × n] = lhs · self` (+ `bias`) over panels `p0..p1`, one thread; `lhs` holds
    /// `rows` rows of `⌈k/2⌉` pair words ([`round_rows`]).
    ///
    /// # Safety
    /// `dst` must be valid for `rows` rows of `dst_stride` floats covering the panels' columns.
    pub unsafe fn product(
        &self,
        lhs: &[u32],
        rows: usize,
        (p0, p1): (usize, usize),
        dst: *mut f32,
        dst_stride: usize,
        bias: Option<&[f32]>,
    ) {
        let kp = self.k.div_ceil(2);
        debug_assert!(lhs.len() >= rows * kp);
        for pi in p0..p1 {
            let panel = &self.data[pi * kp * NR..(pi + 1) * kp * NR];
            let c0 = pi * NR;
            let cols = NR.min(self.n - c0);
            let bias = bias.map(|b| &b[c0..c0 + cols]);
            for r0 in (0..rows).step_by(MR) {
                let tile_rows = MR.min(rows - r0);
                // SAFETY: forwarded from the caller; the tile lies inside `dst`'s extent.
                unsafe {
                    tile(&Tile {
                        rows: tile_rows,
                        cols,
                        kp,
                        lhs: &lhs[r0 * kp..],
                        panel,
                        dst: dst.add(r0 * dst_stride + c0),
                        dst_stride,
                        bias,
                    })
                };
            }
        }
    }

    /// Panels in the product: `⌈n / NR⌉`.
    pub fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }
}

thread_local! {
    /// Each worker's rounded rows, kept between jobs.
    static LHS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn pair_word(pair: &[f32]) -> u32 {
    let lo = u32::from(to_bf16(pair[0]));
    let hi = pair.get(1).map_or(0, |&h| u32::from(to_bf16(h)));
    lo | hi << 16
}

/// Rows of `x` (`k` wide) rounded to bf16 pairs, `⌈k/2⌉` words a row, into `out`.
pub fn round_rows(x: &[f32], k: usize, out: &mut [u32]) {
    let kp = k.div_ceil(2);
    for (src, dst) in x
        .chunks_exact(k.max(1))
        .zip(out.chunks_exact_mut(kp.max(1)))
    {
        #[cfg(target_arch = "x86_64")]
        if available() {
            // SAFETY: the CPU has the features the function is compiled for.
            unsafe { avx512::round_row(src, dst) };
            continue;
        }
        for (w, pair) in dst.iter_mut().zip(src.chunks(2)) {
            *w = pair_word(pair);
        }
    }
}

/// One tile's product: `dst[rows × cols] = lhs[rows × 2kp] · panel` (+ `bias`).
struct Tile<'a> {
    rows: usize,
    cols: usize,
    kp: usize,
    /// `rows` rows of `kp` pair words.
    lhs: &'a [u32],
    /// `kp` rows of [`NR`] pair words.
    panel: &'a [u32],
    dst: *mut f32,
    dst_stride: usize,
    bias: Option<&'a [f32]>,
}

/// Runs `t`.
///
/// # Safety
/// `t.dst` must be valid for `t.rows` rows of `t.cols` floats, `t.dst_stride` apart.
unsafe fn tile(t: &Tile<'_>) {
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: the CPU has the features; extents forwarded from the caller.
        return unsafe { avx512::tile(t) };
    }
    let half = |w: u32, i: usize| from_bf16((w >> (16 * i)) as u16);
    for r in 0..t.rows {
        for c in 0..t.cols {
            let mut s = t.bias.map_or(0.0, |b| b[c]);
            for p in 0..t.kp {
                let (a, b) = (t.lhs[r * t.kp + p], t.panel[p * NR + c]);
                s += half(a, 0) * half(b, 0) + half(a, 1) * half(b, 1);
            }
            // SAFETY: forwarded from the caller.
            unsafe { *t.dst.add(r * t.dst_stride + c) = s };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Tile, MR, NR};

    /// `src` rounded to bf16 pairs (to nearest even, as `to_bf16`), 32 values at a time.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn round_row(src: &[f32], dst: &mut [u32]) {
        let full = src.len() / 32;
        for i in 0..full {
            // SAFETY: 32 values at `32i` lie in `src`, 16 words at `16i` in `dst`.
            unsafe {
                let lo = _mm512_loadu_ps(src.as_ptr().add(32 * i));
                let hi = _mm512_loadu_ps(src.as_ptr().add(32 * i + 16));
                let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(dst.as_mut_ptr().add(16 * i).cast(), packed);
            }
        }
        for (w, pair) in dst[16 * full..].iter_mut().zip(src[32 * full..].chunks(2)) {
            *w = super::pair_word(pair);
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn tile(t: &Tile<'_>) {
        // SAFETY: forwarded.
        unsafe {
            macro_rules! rows {
                ($($r:literal)*) => {
                    match t.rows {
                        $($r => tile_rows::<$r>(t),)*
                        _ => unreachable!("a tile has 1 to {MR} rows"),
                    }
                };
            }
            rows!(1 2 3 4 5 6 7 8 9 10 11 12)
        }
    }

    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    unsafe fn tile_rows<const R: usize>(t: &Tile<'_>) {
        let Tile {
            cols,
            kp,
            lhs,
            panel,
            dst,
            dst_stride,
            bias,
            ..
        } = *t;
        debug_assert!(lhs.len() >= (R - 1) * kp + kp && panel.len() >= kp * NR);
        // SAFETY: `lhs` holds R rows of kp words, `panel` kp rows of NR words; `dst` is valid
        // for R rows of `cols` floats (the caller's contract).
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            let a = lhs.as_ptr();
            let b = panel.as_ptr();
            for p in 0..kp {
                let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR).cast()));
                let b1: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + 16).cast()));
                for r in 0..R {
                    let av: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(*a.add(r * kp + p) as i32));
                    acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, b0);
                    acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, b1);
                }
            }
            let m0: __mmask16 = if cols >= 16 {
                0xffff
            } else {
                (1u32 << cols) as u16 - 1
            };
            let m1: __mmask16 = if cols >= 32 {
                0xffff
            } else if cols > 16 {
                (1u32 << (cols - 16)) as u16 - 1
            } else {
                0
            };
            let (bias0, bias1) = match bias {
                Some(b) => (
                    _mm512_maskz_loadu_ps(m0, b.as_ptr()),
                    _mm512_maskz_loadu_ps(m1, b.as_ptr().wrapping_add(16)),
                ),
                None => (_mm512_setzero_ps(), _mm512_setzero_ps()),
            };
            for r in 0..R {
                let row = dst.add(r * dst_stride);
                _mm512_mask_storeu_ps(row, m0, _mm512_add_ps(acc[r][0], bias0));
                _mm512_mask_storeu_ps(row.wrapping_add(16), m1, _mm512_add_ps(acc[r][1], bias1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    fn rounded(v: &[f32]) -> Vec<f32> {
        v.iter().map(|&x| from_bf16(to_bf16(x))).collect()
    }

    /// The product of the bf16-rounded inputs in f64: what the kernel must give up to the f32
    /// sums' own rounding.
    fn reference(
        x: &[f32],
        w_kn: &[f32],
        m: usize,
        k: usize,
        n: usize,
        bias: Option<&[f32]>,
    ) -> Vec<f32> {
        let (x, w) = (rounded(x), rounded(w_kn));
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|kk| x[i * k + kk] as f64 * w[kk * n + j] as f64)
                    .sum();
                out[i * n + j] = (s + bias.map_or(0.0, |b| b[j] as f64)) as f32;
            }
        }
        out
    }

    #[test]
    fn matches_the_product_of_the_rounded_inputs() {
        // Odd k, rows and columns that end partway through a tile, a panel and a job.
        for (m, k, n) in [
            (1, 1, 1),
            (13, 7, 33),
            (50, 256, 96),
            (97, 65, 40),
            (5, 300, 17),
        ] {
            let x = lcg(m * k, 1 + m as u32);
            let w_nk = lcg(n * k, 7 + n as u32);
            let bias = lcg(n, 3);
            let mut w_kn = vec![0f32; k * n];
            for j in 0..n {
                for kk in 0..k {
                    w_kn[kk * n + j] = w_nk[j * k + kk];
                }
            }
            let want = reference(&x, &w_kn, m, k, n, Some(&bias));
            for packed in [
                Bf16Panels::from_weight(&w_nk, n, k),
                Bf16Panels::from_matrix(&w_kn, k, n),
            ] {
                assert_eq!(packed.unpacked(), rounded(&w_kn), "{m}×{k}×{n} packing");
                let got = packed.matmul(&x, m, Some(&bias)).unwrap();
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(err < 1e-4 * (k as f32).sqrt(), "{m}×{k}×{n}: {err}");
            }
        }
    }

    #[test]
    fn rounding_rows_matches_the_scalar_rounding() {
        let x = lcg(3 * 75, 11);
        let mut fast = vec![0u32; 3 * 38];
        round_rows(&x, 75, &mut fast);
        for (r, row) in x.chunks(75).enumerate() {
            for (p, pair) in row.chunks(2).enumerate() {
                assert_eq!(fast[r * 38 + p], pair_word(pair), "row {r} pair {p}");
            }
        }
    }

    /// No rows, or a weight of no outputs: an empty product, not a division by zero.
    #[test]
    fn empty_products_are_empty() {
        let p = Bf16Panels::from_weight(&[0.5; 6], 2, 3);
        assert_eq!(p.matmul(&[], 0, None).unwrap(), Vec::<f32>::new());
        let none = Bf16Panels::from_weight(&[], 0, 3);
        assert_eq!(none.matmul(&[1.0; 6], 2, None).unwrap(), Vec::<f32>::new());
    }

    #[test]
    fn wrong_sizes_are_refused() {
        let p = Bf16Panels::from_weight(&[0.0; 6], 2, 3);
        assert!(p.matmul(&[0.0; 5], 2, None).is_err());
        assert!(p.matmul(&[0.0; 6], 2, Some(&[0.0; 3])).is_err());
    }
}
