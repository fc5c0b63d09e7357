//! A decoder step's weights in fewer bytes: `x · Wᵀ` for a few rows of `x` against a weight
//! stored as bf16, or as int8 with one f32 scale per 32 weights of a row (ggml's `Q8_0` blocks).
//!
//! A step of a 0.5 B-parameter decoder on a few CPU cores is bound by reading its weights
//! (`few_rows_matmul` reads 4 bytes a weight); bf16 reads 2, int8 1.125.
//! - bf16: widened to f32 in registers against f32 activations; the only error is the weights'
//!   rounding.
//! - int8: the activations are quantized too, per block of 32 with their own scale (ggml's
//!   `Q8_0 × Q8_0`, as llama.cpp runs 8-bit models), so the products are integer dot products:
//!   AVX-512 VNNI's `vpdpbusd` does 64 multiply-adds an instruction, where widening each weight
//!   to f32 left the step bound by the widening, not by memory. Every path rounds the
//!   activations alike ([`int8_activations`]), so results do not depend on the CPU's features
//!   beyond float summation order.

use rayon::prelude::*;

use crate::few_rows::{untranspose, MAX_ROWS, TASK_ROWS};

/// Weights per int8 block, each with its own scale.
pub const INT8_BLOCK: usize = 32;

/// How a [`PackedRows`] stores its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowFormat {
    /// The f32 weights as they are (no packing: `few_rows_matmul` reads them in place).
    F32,
    /// bfloat16, rounded to nearest even.
    Bf16,
    /// Symmetric int8 per block of [`INT8_BLOCK`] weights, scale `max |w| / 127`.
    Int8,
}

impl RowFormat {
    /// Bytes read per weight.
    pub fn bytes_per_weight(self) -> f64 {
        match self {
            Self::F32 => 4.0,
            Self::Bf16 => 2.0,
            Self::Int8 => 1.0 + 4.0 / INT8_BLOCK as f64,
        }
    }

    /// The name the environment and reports use: `f32`, `bf16`, `int8`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::Int8 => "int8",
        }
    }
}

impl std::str::FromStr for RowFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "int8" | "i8" | "q8" | "q8_0" => Ok(Self::Int8),
            other => Err(format!("unknown weight format {other:?} (f32, bf16, int8)")),
        }
    }
}

#[derive(Debug, Clone)]
enum Data {
    Bf16(Vec<u16>),
    Int8 { q: Vec<i8>, scales: Vec<f32> },
}

/// A torch-layout weight `[n, k]` packed once for few-row products.
#[derive(Debug, Clone)]
pub struct PackedRows {
    n: usize,
    k: usize,
    data: Data,
}

impl PackedRows {
    /// Packs `w` `[n, k]` row-major as `format` (`Bf16` or `Int8`; `F32` is refused: it needs
    /// no packing).
    pub fn pack(w: &[f32], n: usize, k: usize, format: RowFormat) -> Result<Self, String> {
        if w.len() != n * k {
            return Err(format!("weight of {} values is not [{n}, {k}]", w.len()));
        }
        let data = match format {
            RowFormat::F32 => return Err("f32 weights are read in place, not packed".into()),
            RowFormat::Bf16 => Data::Bf16(w.par_iter().map(|&v| to_bf16(v)).collect()),
            RowFormat::Int8 => {
                let blocks = k.div_ceil(INT8_BLOCK);
                let mut q = vec![0i8; n * k];
                let mut scales = vec![0f32; n * blocks];
                q.par_chunks_mut(k)
                    .zip(scales.par_chunks_mut(blocks))
                    .zip(w.par_chunks(k))
                    .for_each(|((q, s), w)| quantize_row(w, q, s));
                Data::Int8 { q, scales }
            }
        };
        Ok(Self { n, k, data })
    }

    /// Output features.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features.
    pub fn k(&self) -> usize {
        self.k
    }

    pub fn format(&self) -> RowFormat {
        match self.data {
            Data::Bf16(_) => RowFormat::Bf16,
            Data::Int8 { .. } => RowFormat::Int8,
        }
    }

    /// Bytes the packed weight holds.
    pub fn bytes(&self) -> usize {
        match &self.data {
            Data::Bf16(w) => w.len() * 2,
            Data::Int8 { q, scales } => q.len() + scales.len() * 4,
        }
    }

    /// The weight as f32 again, `[n, k]` (what the products multiply by).
    pub fn unpack(&self) -> Vec<f32> {
        match &self.data {
            Data::Bf16(w) => w.iter().map(|&b| from_bf16(b)).collect(),
            Data::Int8 { q, scales } => {
                let blocks = self.k.div_ceil(INT8_BLOCK);
                let mut out = Vec::with_capacity(q.len());
                for (row, s) in q.chunks_exact(self.k).zip(scales.chunks_exact(blocks)) {
                    out.extend(
                        row.iter()
                            .enumerate()
                            .map(|(p, &v)| f32::from(v) * s[p / INT8_BLOCK]),
                    );
                }
                out
            }
        }
    }

    /// `y[m, n] = x[m, k] · Wᵀ`, `m ≤` [`MAX_ROWS`], parallel over the weight's rows on the
    /// current rayon pool.
    pub fn matmul(&self, x: &[f32], m: usize) -> Result<Vec<f32>, String> {
        let (n, k) = (self.n, self.k);
        if !(1..=MAX_ROWS).contains(&m) || x.len() != m * k {
            return Err(format!(
                "packed rows take 1..={MAX_ROWS} rows of {k}, not {} values in {m} rows",
                x.len()
            ));
        }
        let mut yt = vec![0f32; n * m];
        match &self.data {
            Data::Bf16(w) => yt
                .par_chunks_mut(TASK_ROWS * m)
                .zip(w.par_chunks(TASK_ROWS * k))
                .for_each(|(out, rows)| bf16_rows(x, m, k, rows, out)),
            Data::Int8 { q, scales } => {
                let blocks = k.div_ceil(INT8_BLOCK);
                let xq = QuantizedRows::new(x, m, k);
                #[cfg(target_arch = "x86_64")]
                if vnni::available() && k % vnni::CHUNK == 0 {
                    yt.par_chunks_mut(TASK_ROWS * m)
                        .zip(q.par_chunks(TASK_ROWS * k))
                        .zip(scales.par_chunks(TASK_ROWS * blocks))
                        // SAFETY: AVX-512 VNNI was detected at run time; loads are bounds-checked.
                        .for_each(|((out, rows), s)| unsafe {
                            vnni::int8_rows(&xq, m, k, rows, s, out)
                        });
                    return Ok(untranspose(&yt, m, n));
                }
                let x = xq.dequantized();
                yt.par_chunks_mut(TASK_ROWS * m)
                    .zip(q.par_chunks(TASK_ROWS * k))
                    .zip(scales.par_chunks(TASK_ROWS * blocks))
                    .for_each(|((out, rows), s)| int8_rows(&x, m, k, rows, s, out));
            }
        }
        Ok(untranspose(&yt, m, n))
    }
}

/// `x` `[m, k]` as the int8 products read it: each block of [`INT8_BLOCK`] values rounded to
/// int8 with the scale `max |x| / 127` (what a test multiplies by to get the products'
/// result).
pub fn int8_activations(x: &[f32], m: usize, k: usize) -> Vec<f32> {
    QuantizedRows::new(x, m, k).dequantized()
}

/// Activation rows quantized per block for the int8 products.
struct QuantizedRows {
    k: usize,
    /// `[m, k]`.
    q: Vec<i8>,
    /// `[m, blocks]`.
    scales: Vec<f32>,
    /// `[m, k / 4]`: `−128 ·` the sum of each 4 consecutive values, which turns `vpdpbusd`'s
    /// product of weights offset to unsigned (`q + 128`) back into the signed product.
    offsets: Vec<i32>,
}

impl QuantizedRows {
    fn new(x: &[f32], m: usize, k: usize) -> Self {
        let blocks = k.div_ceil(INT8_BLOCK);
        let mut q = vec![0i8; m * k];
        let mut scales = vec![0f32; m * blocks];
        for ((x, q), s) in x
            .chunks_exact(k)
            .zip(q.chunks_exact_mut(k))
            .zip(scales.chunks_exact_mut(blocks))
        {
            quantize_row(x, q, s);
        }
        let offsets = q
            .chunks(4)
            .map(|g| -128 * g.iter().map(|&v| i32::from(v)).sum::<i32>())
            .collect();
        Self {
            k,
            q,
            scales,
            offsets,
        }
    }

    fn dequantized(&self) -> Vec<f32> {
        let blocks = self.k.div_ceil(INT8_BLOCK);
        let mut out = Vec::with_capacity(self.q.len());
        for (row, s) in self
            .q
            .chunks_exact(self.k)
            .zip(self.scales.chunks_exact(blocks))
        {
            out.extend(
                row.iter()
                    .enumerate()
                    .map(|(p, &v)| f32::from(v) * s[p / INT8_BLOCK]),
            );
        }
        out
    }
}

fn quantize_row(w: &[f32], q: &mut [i8], scales: &mut [f32]) {
    for ((w, q), s) in w
        .chunks(INT8_BLOCK)
        .zip(q.chunks_mut(INT8_BLOCK))
        .zip(scales.iter_mut())
    {
        let max = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        *s = max / 127.0;
        let inv = if max > 0.0 { 127.0 / max } else { 0.0 };
        for (q, &v) in q.iter_mut().zip(w) {
            *q = (v * inv).round().clamp(-127.0, 127.0) as i8;
        }
    }
}

/// f32 to bfloat16, rounded to nearest even (NaN stays NaN).
pub fn to_bf16(v: f32) -> u16 {
    let b = v.to_bits();
    if v.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

pub fn from_bf16(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// `out[j·m + i] = rows[j] · x[i]`, the rows bf16.
fn bf16_rows(x: &[f32], m: usize, k: usize, rows: &[u16], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: AVX-512F was detected at run time; every load is bounds-checked.
        unsafe { avx512::bf16_rows(x, m, k, rows, out) };
        return;
    }
    for (row, outs) in rows.chunks_exact(k).zip(out.chunks_exact_mut(m)) {
        for (i, o) in outs.iter_mut().enumerate() {
            *o = row
                .iter()
                .zip(&x[i * k..(i + 1) * k])
                .fold(0f32, |s, (&w, &x)| from_bf16(w).mul_add(x, s));
        }
    }
}

/// `out[j·m + i] = rows[j] · x[i]`, the rows int8 with a scale per block.
fn int8_rows(x: &[f32], m: usize, k: usize, rows: &[i8], scales: &[f32], out: &mut [f32]) {
    let blocks = k.div_ceil(INT8_BLOCK);
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: AVX-512F was detected at run time; every load is bounds-checked.
        unsafe { avx512::int8_rows(x, m, k, rows, scales, out) };
        return;
    }
    for ((row, s), outs) in rows
        .chunks_exact(k)
        .zip(scales.chunks_exact(blocks))
        .zip(out.chunks_exact_mut(m))
    {
        for (i, o) in outs.iter_mut().enumerate() {
            *o = int8_dot_tail(row, s, &x[i * k..(i + 1) * k], 0);
        }
    }
}

/// `row · x` over the blocks from `first_block` on, scalar.
fn int8_dot_tail(row: &[i8], scales: &[f32], x: &[f32], first_block: usize) -> f32 {
    let from = first_block * INT8_BLOCK;
    row[from..]
        .chunks(INT8_BLOCK)
        .zip(x[from..].chunks(INT8_BLOCK))
        .zip(&scales[first_block..])
        .fold(0f32, |acc, ((q, x), &s)| {
            let dot = q
                .iter()
                .zip(x)
                .fold(0f32, |d, (&q, &x)| f32::from(q).mul_add(x, d));
            dot.mul_add(s, acc)
        })
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{from_bf16, int8_dot_tail, INT8_BLOCK};
    pub(super) use crate::few_rows::avx512::available;
    use crate::few_rows::avx512::load16;
    use crate::few_rows::by_rows;

    #[target_feature(enable = "avx512f")]
    pub fn bf16_rows(x: &[f32], m: usize, k: usize, rows: &[u16], out: &mut [f32]) {
        by_rows!(m, bf16_block, x, k, rows, out)
    }

    #[target_feature(enable = "avx512f")]
    pub fn int8_rows(x: &[f32], m: usize, k: usize, rows: &[i8], s: &[f32], out: &mut [f32]) {
        by_rows!(m, int8_block, x, k, rows, s, out)
    }

    /// 16 bf16 from `s` widened to f32.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load16_bf16(s: &[u16]) -> __m512 {
        assert!(s.len() >= 16);
        // SAFETY: 16 u16 are readable at `s`; AVX-512F is enabled for this function.
        unsafe {
            let h = _mm256_loadu_si256(s.as_ptr().cast());
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
    }

    /// 16 int8 from `s` widened to f32.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load16_i8(s: &[i8]) -> __m512 {
        assert!(s.len() >= 16);
        // SAFETY: 16 bytes are readable at `s`; AVX-512F is enabled for this function.
        unsafe { _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(s.as_ptr().cast()))) }
    }

    /// Four weight rows at a time: each 16 weights widened once feed `M` FMAs.
    #[target_feature(enable = "avx512f")]
    fn bf16_block<const M: usize>(x: &[f32], k: usize, rows: &[u16], out: &mut [f32]) {
        let n = rows.len() / k;
        let body = k - k % 16;
        let tail = |row: &[u16], i: usize, s: f32| {
            (body..k).fold(s, |s, q| from_bf16(row[q]).mul_add(x[i * k + q], s))
        };
        let mut j = 0;
        while j < n {
            let group = (n - j).min(4);
            let mut acc = [[_mm512_setzero_ps(); M]; 4];
            let mut p = 0;
            while p < body {
                for (r, acc_r) in acc.iter_mut().enumerate().take(group) {
                    let w = load16_bf16(&rows[(j + r) * k + p..]);
                    for (i, a) in acc_r.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(w, load16(&x[i * k + p..]), *a);
                    }
                }
                p += 16;
            }
            for (r, acc_r) in acc.iter().enumerate().take(group) {
                let row = &rows[(j + r) * k..(j + r + 1) * k];
                for (i, a) in acc_r.iter().enumerate() {
                    out[(j + r) * M + i] = tail(row, i, _mm512_reduce_add_ps(*a));
                }
            }
            j += group;
        }
    }

    /// Four weight rows at a time; per block of 32 the two widened halves' products are summed
    /// and then scaled into the accumulator.
    #[target_feature(enable = "avx512f")]
    fn int8_block<const M: usize>(x: &[f32], k: usize, rows: &[i8], s: &[f32], out: &mut [f32]) {
        let n = rows.len() / k;
        let blocks = k.div_ceil(INT8_BLOCK);
        let whole = k / INT8_BLOCK;
        let mut j = 0;
        while j < n {
            let group = (n - j).min(4);
            let mut acc = [[_mm512_setzero_ps(); M]; 4];
            for b in 0..whole {
                let p = b * INT8_BLOCK;
                for (r, acc_r) in acc.iter_mut().enumerate().take(group) {
                    let row = &rows[(j + r) * k + p..];
                    let (lo, hi) = (load16_i8(row), load16_i8(&row[16..]));
                    let scale = _mm512_set1_ps(s[(j + r) * blocks + b]);
                    for (i, a) in acc_r.iter_mut().enumerate() {
                        let xs = &x[i * k + p..];
                        let d =
                            _mm512_fmadd_ps(hi, load16(&xs[16..]), _mm512_mul_ps(lo, load16(xs)));
                        *a = _mm512_fmadd_ps(d, scale, *a);
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate().take(group) {
                let row = &rows[(j + r) * k..(j + r + 1) * k];
                let scales = &s[(j + r) * blocks..(j + r + 1) * blocks];
                for (i, a) in acc_r.iter().enumerate() {
                    let rest = int8_dot_tail(row, scales, &x[i * k..(i + 1) * k], whole);
                    out[(j + r) * M + i] = _mm512_reduce_add_ps(*a) + rest;
                }
            }
            j += group;
        }
    }
}

/// The int8 product on AVX-512 VNNI: 64 weights (two blocks) per `vpdpbusd`, whose 16 lanes
/// each sum 4 products; lanes 0–7 are the first block's, 8–15 the second's, each scaled by its
/// weight and activation scales.
#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{QuantizedRows, INT8_BLOCK};
    use crate::few_rows::by_rows;

    /// Weights per `vpdpbusd`.
    pub const CHUNK: usize = 64;

    pub fn available() -> bool {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            crate::few_rows::avx512::available()
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
        })
    }

    /// `out[j·m + i] = rows[j] · x[i]` for `k` a multiple of [`CHUNK`].
    ///
    /// # Safety
    /// AVX-512F, BW and VNNI must be available.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn int8_rows(
        x: &QuantizedRows,
        m: usize,
        k: usize,
        rows: &[i8],
        s: &[f32],
        out: &mut [f32],
    ) {
        by_rows!(m, block, x, k, rows, s, out)
    }

    /// 64 bytes from `s` (checked).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load64<T>(s: &[T]) -> __m512i {
        assert!(std::mem::size_of_val(s) >= 64);
        // SAFETY: 64 bytes are readable at `s`; AVX-512F is enabled for this function.
        unsafe { _mm512_loadu_si512(s.as_ptr().cast()) }
    }

    /// Two scales from `s` (checked), each spread over 8 lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn pair(s: &[f32]) -> __m512 {
        assert!(s.len() >= 2);
        _mm512_setr_ps(
            s[0], s[0], s[0], s[0], s[0], s[0], s[0], s[0], s[1], s[1], s[1], s[1], s[1], s[1],
            s[1], s[1],
        )
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn block<const M: usize>(x: &QuantizedRows, k: usize, rows: &[i8], s: &[f32], out: &mut [f32]) {
        let n = rows.len() / k;
        let blocks = k / INT8_BLOCK;
        let chunks = k / CHUNK;
        let flip = _mm512_set1_epi8(-128);
        // Each activation row's scales spread per chunk: the same for every weight row.
        let mut xs = vec![_mm512_setzero_ps(); M * chunks];
        for i in 0..M {
            for c in 0..chunks {
                xs[i * chunks + c] = pair(&x.scales[i * blocks + 2 * c..]);
            }
        }
        let mut j = 0;
        while j < n {
            let group = (n - j).min(4);
            let mut acc = [[_mm512_setzero_ps(); M]; 4];
            for c in 0..chunks {
                let p = c * CHUNK;
                for (r, acc_r) in acc.iter_mut().enumerate().take(group) {
                    // The weights offset to unsigned: q + 128 is q with its sign bit flipped.
                    let w = _mm512_xor_si512(load64(&rows[(j + r) * k + p..]), flip);
                    let ws = pair(&s[(j + r) * blocks + 2 * c..]);
                    for (i, a) in acc_r.iter_mut().enumerate() {
                        let offset = load64(&x.offsets[(i * k + p) / 4..]);
                        let xq = load64(&x.q[i * k + p..]);
                        let dot = _mm512_dpbusd_epi32(offset, w, xq);
                        let scale = _mm512_mul_ps(ws, xs[i * chunks + c]);
                        *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, *a);
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate().take(group) {
                for (i, a) in acc_r.iter().enumerate() {
                    out[(j + r) * M + i] = _mm512_reduce_add_ps(*a);
                }
            }
            j += group;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::few_rows::tests::{reference, values};

    fn worst(a: &[f32], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(a, b)| (f64::from(*a) - b).abs())
            .fold(0f64, f64::max)
    }

    /// Every row count and shapes off the kernel's blocks (k not a multiple of 16 or 32, n not
    /// of 4 or of the task size): the product equals the f64 product with the unpacked weight,
    /// and the unpacked weight is within the format's rounding of the original.
    #[test]
    fn products_equal_the_unpacked_weights_product() {
        for format in [RowFormat::Bf16, RowFormat::Int8] {
            for (k, n) in [(1024, 70), (37, 133), (64, 4), (5, 3), (80, 65)] {
                let w = values(n * k, 7);
                let packed = PackedRows::pack(&w, n, k, format).unwrap();
                let unpacked = packed.unpack();
                let step = match format {
                    RowFormat::Bf16 => 2f32.powi(-8),
                    _ => 1.0 / 127.0,
                };
                for (a, b) in w.iter().zip(&unpacked) {
                    // |w| ≤ 0.5: bf16's relative half-ulp, int8's half step of a 0.5 max.
                    assert!(
                        (a - b).abs() <= 0.5 * step * 0.5 + 1e-7,
                        "{format:?}: {a} → {b}"
                    );
                }
                for m in 1..=MAX_ROWS {
                    let x = values(m * k, m as u32);
                    let got = packed.matmul(&x, m).unwrap();
                    let read = match format {
                        RowFormat::Int8 => int8_activations(&x, m, k),
                        _ => x.clone(),
                    };
                    let want = reference(&read, m, k, &unpacked, n);
                    let err = worst(&got, &want);
                    assert!(
                        err < 1e-4 * (k as f64).sqrt(),
                        "{format:?} m {m} k {k} n {n}: {err}"
                    );
                }
            }
        }
    }

    /// The VNNI path and the portable one give the same int8 products (where the CPU has VNNI;
    /// elsewhere both sides are the portable path).
    #[test]
    fn int8_paths_agree() {
        let (m, k, n) = (3, 256, 70);
        let w = values(n * k, 11);
        let x = values(m * k, 5);
        let packed = PackedRows::pack(&w, n, k, RowFormat::Int8).unwrap();
        let got = packed.matmul(&x, m).unwrap();
        let Data::Int8 { q, scales } = &packed.data else {
            unreachable!()
        };
        let mut portable = vec![0f32; n * m];
        let xd = int8_activations(&x, m, k);
        for ((row, s), outs) in q
            .chunks_exact(k)
            .zip(scales.chunks_exact(k / INT8_BLOCK))
            .zip(portable.chunks_exact_mut(m))
        {
            for (i, o) in outs.iter_mut().enumerate() {
                *o = int8_dot_tail(row, s, &xd[i * k..(i + 1) * k], 0);
            }
        }
        let portable = untranspose(&portable, m, n);
        for (a, b) in got.iter().zip(&portable) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        // The activations' rounding is a half step of each block's scale.
        for (a, b) in x.iter().zip(&xd) {
            assert!((a - b).abs() <= 0.5 / 127.0 * 0.5 + 1e-7);
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // Halfway between 0x3f80 and 0x3f81: to the even one.
        assert_eq!(to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
    }

    #[test]
    fn an_all_zero_block_stays_zero_and_bad_shapes_are_refused() {
        let mut w = values(2 * 64, 3);
        w[..32].fill(0.0);
        let p = PackedRows::pack(&w, 2, 64, RowFormat::Int8).unwrap();
        assert!(p.unpack()[..32].iter().all(|v| *v == 0.0));
        assert!(PackedRows::pack(&w, 3, 64, RowFormat::Int8).is_err());
        assert!(PackedRows::pack(&w, 2, 64, RowFormat::F32).is_err());
        assert!(p.matmul(&[0.0; 64 * 9], 9).is_err());
        assert!(p.matmul(&[0.0; 63], 1).is_err());
    }

    #[test]
    fn formats_parse_by_name() {
        for f in [RowFormat::F32, RowFormat::Bf16, RowFormat::Int8] {
            assert_eq!(f.name().parse::<RowFormat>().unwrap(), f);
        }
        assert!("fp8".parse::<RowFormat>().unwrap_err().contains("fp8"));
    }
}
