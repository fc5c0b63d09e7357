//! The AVX-512 steps of [`super::winograd::Winograd`]: channels-last window in, transforms
//! over channel vectors, one register-blocked GEMM per evaluation point, channels-first out.
//!
//! Every function needs AVX-512F and buffers of the extents its documentation gives.

use std::arch::x86_64::*;

use super::winograd::{Outer, Term};

/// The sizes of one job.
pub(super) struct Shape {
    pub cin: usize,
    pub cout: usize,
    /// Outputs per tile.
    pub m: usize,
    pub dilation: usize,
    pub tiles: usize,
    /// `tiles` rounded up to [`rows_per_tile`]: the GEMM's row blocks.
    pub tiles_padded: usize,
    /// Rows of transformed input, and how many of them lie on the window (the rest are zero).
    pub in_rows: usize,
    pub valid_in_rows: usize,
}

impl Shape {
    /// First window sample of tile `t`: tiles `d·b .. d·b + d` cover block `b`.
    fn tile_start(&self, t: usize) -> usize {
        (t / self.dilation) * self.m * self.dilation + t % self.dilation
    }
}

/// The sizes of [`Outer`]'s products: row `q = group·d + phase` stands for tiles
/// `(g·group + o)·d + phase`, `o < g` (`g` blocks per group).
pub(super) struct OuterShape {
    /// Evaluation points: at most [`MAX_ALPHA`].
    pub alpha: usize,
    pub groups: usize,
    /// `groups` rounded up to [`rows_per_tile`].
    pub groups_padded: usize,
    pub products: usize,
}

/// Tiles per GEMM register block for `cout` output channels (a multiple of 32): 6 tiles × 64
/// channels or 12 × 32, 24 accumulators either way.
pub(super) fn rows_per_tile(cout: usize) -> usize {
    if cout.is_multiple_of(64) {
        6
    } else {
        12
    }
}

/// Transposes a 16×16 block held as 16 row vectors.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn transpose16(r: &mut [__m512; 16]) {
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // Now, within each 128-bit lane L, vector 4g + c holds rows 4g..4g+4 of column 4L + c.
    for g in 0..4 {
        let (a, b, c, d) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
        r[4 * g] = _mm512_shuffle_ps::<0x44>(a, c);
        r[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(a, c);
        r[4 * g + 2] = _mm512_shuffle_ps::<0x44>(b, d);
        r[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(b, d);
    }
    // A 4×4 transpose of 128-bit lanes across vectors c, 4 + c, 8 + c, 12 + c.
    for c in 0..4 {
        let (a, b, e, f) = (r[c], r[4 + c], r[8 + c], r[12 + c]);
        let p = _mm512_shuffle_f32x4::<0x88>(a, b);
        let q = _mm512_shuffle_f32x4::<0xDD>(a, b);
        let s = _mm512_shuffle_f32x4::<0x88>(e, f);
        let u = _mm512_shuffle_f32x4::<0xDD>(e, f);
        t[c] = _mm512_shuffle_f32x4::<0x88>(p, s);
        t[4 + c] = _mm512_shuffle_f32x4::<0x88>(q, u);
        t[8 + c] = _mm512_shuffle_f32x4::<0xDD>(p, s);
        t[12 + c] = _mm512_shuffle_f32x4::<0xDD>(q, u);
    }
    *r = t;
}

/// Mask of the first `n` (≤ 16) lanes.
#[inline(always)]
fn first_lanes(n: usize) -> u16 {
    ((1u32 << n.min(16)) - 1) as u16
}

/// `window[s][ci] = act(x[ci][first + s])` for `s < samples` (a multiple of 16), zero where
/// `first + s` lies outside `[0, len)`; `act` is `max(v, slope·v)` (leaky ReLU, slope < 1).
///
/// # Safety
/// AVX-512F; `x` holds `cin` rows of `len`; `window` holds `samples · cin` values.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn load_window(
    x: &[f32],
    len: usize,
    first: isize,
    samples: usize,
    cin: usize,
    slope: Option<f32>,
    window: &mut [f32],
) {
    let slope = _mm512_set1_ps(slope.unwrap_or(1.0));
    let out = window.as_mut_ptr();
    for sb in (0..samples).step_by(16) {
        let g0 = first + sb as isize;
        let lo = (-g0).clamp(0, 16) as usize;
        let hi = (len as isize - g0).clamp(0, 16) as usize;
        let mask = if lo < hi {
            first_lanes(hi) & !first_lanes(lo)
        } else {
            0
        };
        for cb in (0..cin).step_by(16) {
            let mut rows = [_mm512_setzero_ps(); 16];
            if mask != 0 {
                for (r, row) in rows.iter_mut().enumerate() {
                    // Masked-off lanes are not read, so the start may lie before row `cb + r`.
                    let p = x.as_ptr().wrapping_offset(((cb + r) * len) as isize + g0);
                    let v = unsafe { _mm512_maskz_loadu_ps(mask, p) };
                    *row = _mm512_max_ps(v, _mm512_mul_ps(v, slope));
                }
                unsafe { transpose16(&mut rows) };
            }
            for (l, row) in rows.iter().enumerate() {
                unsafe { _mm512_storeu_ps(out.add((sb + l) * cin + cb), *row) };
            }
        }
    }
}

/// [`load_window`] from a channels-last input `x[t][ci]` (`len` rows of `cin`): rows are
/// copied through the activation, no transpose.
///
/// # Safety
/// AVX-512F; `cin` a multiple of 16; `x` holds `len · cin` values; `window` `samples · cin`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn load_window_channels_last(
    x: &[f32],
    len: usize,
    first: isize,
    samples: usize,
    cin: usize,
    slope: Option<f32>,
    window: &mut [f32],
) {
    let slope = _mm512_set1_ps(slope.unwrap_or(1.0));
    let (src, out) = (x.as_ptr(), window.as_mut_ptr());
    for s in 0..samples {
        let t = first + s as isize;
        let inside = t >= 0 && (t as usize) < len;
        for cb in (0..cin).step_by(16) {
            let v = if inside {
                let v = unsafe { _mm512_loadu_ps(src.add(t as usize * cin + cb)) };
                _mm512_max_ps(v, _mm512_mul_ps(v, slope))
            } else {
                _mm512_setzero_ps()
            };
            unsafe { _mm512_storeu_ps(out.add(s * cin + cb), v) };
        }
    }
}

/// `points[ξ][t][ci] = Σ c · window[start(t) + d·j][ci]` over the terms of ξ, for every
/// one of `in_rows` rows, zero from `valid_in_rows` on.
///
/// # Safety
/// AVX-512F; `window` covers every valid row's `α` samples; `points` holds
/// `α · in_rows · cin` values.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn input_transform(
    shape: &Shape,
    terms: &[Vec<Term>],
    window: &[f32],
    points: &mut [f32],
) {
    let (rows, valid) = (shape.in_rows, shape.valid_in_rows);
    let full = valid - valid % TILE_BLOCK;
    for t in (0..full).step_by(TILE_BLOCK) {
        unsafe { input_tiles::<TILE_BLOCK>(shape, terms, window, points, t) };
    }
    for t in full..valid {
        unsafe { input_tiles::<1>(shape, terms, window, points, t) };
    }
    let cin = shape.cin;
    for xi in 0..terms.len() {
        points[(xi * rows + valid) * cin..(xi * rows + rows) * cin].fill(0.0);
    }
}

/// Tiles a transform takes together: each point's sum over its terms then runs as that many
/// independent FMA chains, which hide the FMA latency one chain would wait on.
const TILE_BLOCK: usize = 8;

/// [`input_transform`] of tiles `t0 .. t0 + U`: tile `u`'s window rows `index · d` apart, to
/// row `t0 + u` of each evaluation point.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn input_tiles<const U: usize>(
    shape: &Shape,
    terms: &[Vec<Term>],
    window: &[f32],
    points: &mut [f32],
    t0: usize,
) {
    let (cin, d, rows) = (shape.cin, shape.dilation, shape.in_rows);
    let starts: [usize; U] = std::array::from_fn(|u| shape.tile_start(t0 + u) * cin);
    unsafe {
        transform_tiles::<U>(
            terms,
            cin,
            window.as_ptr(),
            points.as_mut_ptr(),
            |u, index| starts[u] + d * index * cin,
            |u, xi| (xi * rows + t0 + u) * cin,
        )
    }
}

/// One Winograd transform over `U` tiles at once: for every vector of 16 channels and every
/// row `r` of `terms`, `dst[store(u, r) + c] = Σ_term coefficient · src[load(u, index) + c]`.
/// The `U` tiles' sums are independent FMA chains.
///
/// # Safety
/// AVX-512F; every offset `load` and `store` give, plus `channels` (a multiple of 16), lies
/// inside `src` and `dst`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn transform_tiles<const U: usize>(
    terms: &[Vec<Term>],
    channels: usize,
    src: *const f32,
    dst: *mut f32,
    load: impl Fn(usize, usize) -> usize,
    store: impl Fn(usize, usize) -> usize,
) {
    for cv in (0..channels).step_by(16) {
        for (r, row) in terms.iter().enumerate() {
            let mut acc = [_mm512_setzero_ps(); U];
            for term in row {
                let c = _mm512_set1_ps(term.coefficient);
                for (u, a) in acc.iter_mut().enumerate() {
                    let v = unsafe { _mm512_loadu_ps(src.add(load(u, term.index) + cv)) };
                    *a = _mm512_fmadd_ps(c, v, *a);
                }
            }
            for (u, a) in acc.iter().enumerate() {
                unsafe { _mm512_storeu_ps(dst.add(store(u, r) + cv), *a) };
            }
        }
    }
}

/// `outer[ξ][i][q][ci] = Σ a · points[ξ][(g·group + block)·d + phase][ci]` over the terms of
/// product `i`, where `q = group·d + phase`; zero for the padding rows.
///
/// # Safety
/// AVX-512F; `points` holds `α · in_rows · cin` values, with every row the terms reach;
/// `outer` holds `α · products · groups_padded · cin`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn outer_input(
    shape: &Shape,
    os: &OuterShape,
    outer: &Outer,
    points: &[f32],
    out: &mut [f32],
) {
    let (cin, d) = (shape.cin, shape.dilation);
    let (src, dst) = (points.as_ptr(), out.as_mut_ptr());
    for xi in 0..os.alpha {
        for (i, sum) in outer.input.iter().enumerate() {
            let panel = (xi * os.products + i) * os.groups_padded;
            for q in 0..os.groups_padded {
                let (group, phase) = (q / d, q % d);
                for cv in (0..cin).step_by(16) {
                    let mut acc = _mm512_setzero_ps();
                    if q < os.groups {
                        for term in sum {
                            let row = (outer.blocks * group + term.index) * d + phase;
                            let at = (xi * shape.in_rows + row) * cin + cv;
                            let v = unsafe { _mm512_loadu_ps(src.add(at)) };
                            acc = _mm512_fmadd_ps(_mm512_set1_ps(term.coefficient), v, acc);
                        }
                    }
                    unsafe { _mm512_storeu_ps(dst.add((panel + q) * cin + cv), acc) };
                }
            }
        }
    }
}

/// Evaluation points a transform holds in registers at most.
const MAX_ALPHA: usize = 8;

/// `out[start(t) + d·s][co] = Σ h · Σ c · products[ξ][i][q][co]` for the blocks of every
/// group row `q` that lie in the job: [`Outer`]'s output sums, then the output transform.
///
/// # Safety
/// AVX-512F; `products` holds `α · products · groups_padded · cout` values and
/// `out` covers every tile's `m` outputs.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn outer_output_transform(
    shape: &Shape,
    os: &OuterShape,
    outer: &Outer,
    terms: &[Vec<Term>],
    products: &[f32],
    out: &mut [f32],
) {
    let (cout, d) = (shape.cout, shape.dilation);
    let alpha = os.alpha;
    assert!(alpha <= MAX_ALPHA, "{alpha} evaluation points");
    let blocks = shape.tiles / d;
    let (src, dst) = (products.as_ptr(), out.as_mut_ptr());
    for q in 0..os.groups {
        let (group, phase) = (q / d, q % d);
        for (o, sum) in outer.output.iter().enumerate() {
            let block = outer.blocks * group + o;
            if block >= blocks {
                continue;
            }
            let start = shape.tile_start(block * d + phase);
            for cv in (0..cout).step_by(16) {
                let mut at_points = [_mm512_setzero_ps(); MAX_ALPHA];
                for (xi, p) in at_points.iter_mut().enumerate().take(alpha) {
                    for term in sum {
                        let panel = xi * os.products + term.index;
                        let at = (panel * os.groups_padded + q) * cout + cv;
                        let v = unsafe { _mm512_loadu_ps(src.add(at)) };
                        *p = _mm512_fmadd_ps(_mm512_set1_ps(term.coefficient), v, *p);
                    }
                }
                for (s, sample) in terms.iter().enumerate() {
                    let mut acc = _mm512_setzero_ps();
                    for term in sample {
                        let c = _mm512_set1_ps(term.coefficient);
                        acc = _mm512_fmadd_ps(c, at_points[term.index], acc);
                    }
                    unsafe { _mm512_storeu_ps(dst.add((start + d * s) * cout + cv), acc) };
                }
            }
        }
    }
}

/// `out[t][co] = Σ_j Σ_ci points[t + j·d][ci] · weight[j][ci][co]` for `rows` rows (a
/// multiple of [`rows_per_tile`]): the chunks' products summed in registers.
///
/// # Safety
/// AVX-512F; `points` holds `(rows − 1) · cin + (count − 1) · chunks.rows + cin`, `weight`
/// `count · cin · cout` and `out` `rows · cout` values.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn point_gemm(
    cin: usize,
    cout: usize,
    rows: usize,
    chunks: &Chunks,
    points: &[f32],
    weight: &[f32],
    out: &mut [f32],
) {
    let (v, w, y) = (points.as_ptr(), weight.as_ptr(), out.as_mut_ptr());
    if cout.is_multiple_of(64) {
        for cg in (0..cout).step_by(64) {
            for tb in (0..rows).step_by(6) {
                unsafe {
                    gemm_block::<4, 6>(
                        v.add(tb * cin),
                        cin,
                        w.add(cg),
                        cout,
                        chunks,
                        y.add(tb * cout + cg),
                    )
                };
            }
        }
    } else {
        for cg in (0..cout).step_by(32) {
            for tb in (0..rows).step_by(12) {
                unsafe {
                    gemm_block::<2, 12>(
                        v.add(tb * cin),
                        cin,
                        w.add(cg),
                        cout,
                        chunks,
                        y.add(tb * cout + cg),
                    )
                };
            }
        }
    }
}

/// The operands of a GEMM's successive chunks: `rows` values apart in the transformed input,
/// `weights` apart in the weight.
pub(super) struct Chunks {
    pub count: usize,
    pub rows: usize,
    pub weights: usize,
}

impl Chunks {
    pub const ONE: Chunks = Chunks {
        count: 1,
        rows: 0,
        weights: 0,
    };
}

/// `R` tiles × `16·NV` output channels, reduced over every chunk's input channels in registers.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn gemm_block<const NV: usize, const R: usize>(
    v: *const f32,
    cin: usize,
    w: *const f32,
    cout: usize,
    chunks: &Chunks,
    y: *mut f32,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; R];
    for chunk in 0..chunks.count {
        let (v, w) = unsafe { (v.add(chunk * chunks.rows), w.add(chunk * chunks.weights)) };
        for ci in 0..cin {
            let mut wv = [_mm512_setzero_ps(); NV];
            for (k, lane) in wv.iter_mut().enumerate() {
                *lane = unsafe { _mm512_loadu_ps(w.add(ci * cout + 16 * k)) };
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_ps(unsafe { *v.add(r * cin + ci) });
                for (k, cell) in row.iter_mut().enumerate() {
                    *cell = _mm512_fmadd_ps(a, wv[k], *cell);
                }
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (k, &cell) in row.iter().enumerate() {
            unsafe { _mm512_storeu_ps(y.add(r * cout + 16 * k), cell) };
        }
    }
}

/// `out[start(t) + d·i][co] = Σ c · points[ξ][t][co]` over the terms of output sample i.
///
/// # Safety
/// AVX-512F; `points` holds `α · tiles_padded · cout` values and `out` covers every tile's
/// `m` outputs.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn output_transform(
    shape: &Shape,
    terms: &[Vec<Term>],
    points: &[f32],
    out: &mut [f32],
) {
    let full = shape.tiles - shape.tiles % TILE_BLOCK;
    for t in (0..full).step_by(TILE_BLOCK) {
        unsafe { output_tiles::<TILE_BLOCK>(shape, terms, points, out, t) };
    }
    for t in full..shape.tiles {
        unsafe { output_tiles::<1>(shape, terms, points, out, t) };
    }
}

/// [`output_transform`] of tiles `t0 .. t0 + U`: row `t0 + u` of each evaluation point to
/// tile `u`'s outputs, `d` apart.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn output_tiles<const U: usize>(
    shape: &Shape,
    terms: &[Vec<Term>],
    points: &[f32],
    out: &mut [f32],
    t0: usize,
) {
    let (cout, d, tp) = (shape.cout, shape.dilation, shape.tiles_padded);
    let starts: [usize; U] = std::array::from_fn(|u| shape.tile_start(t0 + u) * cout);
    unsafe {
        transform_tiles::<U>(
            terms,
            cout,
            points.as_ptr(),
            out.as_mut_ptr(),
            |u, index| (index * tp + t0 + u) * cout,
            |u, i| starts[u] + d * i * cout,
        )
    }
}

/// `y[co][t0 + p] = out[p][co] + bias[co] (+ each residual[co][t0 + p])` for `p < t1 − t0`.
///
/// # Safety
/// AVX-512F; `out` holds `(t1 − t0)` rounded up to 16 rows of `cout`; `y` and the residuals
/// are `cout` rows of `out_len`, of which columns `[t0, t1)` belong to the caller.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn store_output(
    out: &[f32],
    cout: usize,
    bias: &[f32],
    residuals: [Option<&[f32]>; 2],
    y: *mut f32,
    out_len: usize,
    t0: usize,
    t1: usize,
) {
    let src = out.as_ptr();
    for pb in (0..t1 - t0).step_by(16) {
        let mask = first_lanes(t1 - t0 - pb);
        for cb in (0..cout).step_by(16) {
            let mut rows = [_mm512_setzero_ps(); 16];
            for (r, row) in rows.iter_mut().enumerate() {
                *row = unsafe { _mm512_loadu_ps(src.add((pb + r) * cout + cb)) };
            }
            unsafe { transpose16(&mut rows) };
            for (c, row) in rows.iter().enumerate() {
                let at = (cb + c) * out_len + t0 + pb;
                let mut v = _mm512_add_ps(*row, _mm512_set1_ps(bias[cb + c]));
                for r in residuals.iter().flatten() {
                    let r = unsafe { _mm512_maskz_loadu_ps(mask, r.as_ptr().add(at)) };
                    v = _mm512_add_ps(v, r);
                }
                unsafe { _mm512_mask_storeu_ps(y.add(at), mask, v) };
            }
        }
    }
}

/// `y[t0 + p][co] = out[p][co] + bias[co] (+ each residual[t0 + p][co])` for `p < t1 − t0`:
/// a channels-last output (`out_len` rows of `cout`, and residuals alike), no transpose.
///
/// # Safety
/// AVX-512F; `cout` a multiple of 16; `out` holds `(t1 − t0) · cout` values; rows
/// `[t0, t1)` of `y` belong to the caller and the residuals hold them.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn store_output_channels_last(
    out: &[f32],
    cout: usize,
    bias: &[f32],
    residuals: [Option<&[f32]>; 2],
    y: *mut f32,
    t0: usize,
    t1: usize,
) {
    let src = out.as_ptr();
    for p in 0..t1 - t0 {
        for cb in (0..cout).step_by(16) {
            let at = (t0 + p) * cout + cb;
            let v = unsafe { _mm512_loadu_ps(src.add(p * cout + cb)) };
            let mut v = _mm512_add_ps(v, unsafe { _mm512_loadu_ps(bias.as_ptr().add(cb)) });
            for r in residuals.iter().flatten() {
                v = _mm512_add_ps(v, unsafe { _mm512_loadu_ps(r.as_ptr().add(at)) });
            }
            unsafe { _mm512_storeu_ps(y.add(at), v) };
        }
    }
}

/// `dst[c][r] = src[r][c]` for a `rows × cols` matrix, columns `[c0, c1)`, in 16×16 blocks.
///
/// # Safety
/// AVX-512F; `src` holds `rows · cols` values; `dst` is writable for `cols · rows` values,
/// of which rows `[c0, c1)` belong to the caller.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transpose(
    src: &[f32],
    rows: usize,
    cols: usize,
    dst: *mut f32,
    c0: usize,
    c1: usize,
) {
    let (src, dst) = (src.as_ptr().wrapping_add(c0), dst.wrapping_add(c0 * rows));
    unsafe { transpose_strided(src, cols, dst, rows, rows, c1 - c0) };
}

/// `dst[c·dst_stride + r] = src[r·src_stride + c]` for `r < rows`, `c < cols`: a transpose
/// between two strided matrices, in 16×16 blocks.
///
/// # Safety
/// AVX-512F; `src` holds every `(r, c)` it reads and `dst` is writable at every one it writes.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transpose_strided(
    src: *const f32,
    src_stride: usize,
    dst: *mut f32,
    dst_stride: usize,
    rows: usize,
    cols: usize,
) {
    for rb in (0..rows).step_by(16) {
        let valid_rows = (rows - rb).min(16);
        let row_mask = first_lanes(valid_rows);
        for cb in (0..cols).step_by(16) {
            let valid_cols = (cols - cb).min(16);
            let mask = first_lanes(valid_cols);
            let mut block = [_mm512_setzero_ps(); 16];
            for (r, v) in block.iter_mut().enumerate().take(valid_rows) {
                *v = unsafe { _mm512_maskz_loadu_ps(mask, src.add((rb + r) * src_stride + cb)) };
            }
            unsafe { transpose16(&mut block) };
            for (c, v) in block.iter().enumerate().take(valid_cols) {
                let at = (cb + c) * dst_stride + rb;
                unsafe { _mm512_mask_storeu_ps(dst.add(at), row_mask, *v) };
            }
        }
    }
}

/// `y[c / phases][(t0 + p)·phases + c % phases] = out[p][c] + bias[c]` for `p < t1 − t0`:
/// channels-last, each row's phases are already adjacent, so a row takes `phases` lanes.
///
/// # Safety
/// AVX-512F; `phases` divides 16 and `cout`; `out` holds `t1 − t0` rows of `cout`; `bias`
/// `cout` values; `y` is `cout / phases` rows of `row_len ≥ t1·phases`, of which samples
/// `[t0·phases, t1·phases)` belong to the caller.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn store_phased(
    out: &[f32],
    cout: usize,
    phases: usize,
    bias: &[f32],
    y: *mut f32,
    row_len: usize,
    t0: usize,
    t1: usize,
) {
    let rows_per_vector = 16 / phases;
    let lanes = first_lanes(phases);
    for p in 0..t1 - t0 {
        let at = (t0 + p) * phases;
        for cb in (0..cout).step_by(16) {
            let v = unsafe { _mm512_loadu_ps(out.as_ptr().add(p * cout + cb)) };
            let v = _mm512_add_ps(v, unsafe { _mm512_loadu_ps(bias.as_ptr().add(cb)) });
            for g in 0..rows_per_vector {
                let row = cb / phases + g;
                // Lane g·phases + r lands on sample `at + r` of `row`; the lanes outside the
                // mask are not written, so the start may lie before the row.
                let start = y.wrapping_add(row * row_len + at).wrapping_sub(g * phases);
                unsafe { _mm512_mask_storeu_ps(start, lanes << (g * phases), v) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose16_transposes() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let m: Vec<f32> = (0..256).map(|v| v as f32).collect();
        let mut out = [0f32; 256];
        #[target_feature(enable = "avx512f")]
        unsafe fn run(m: &[f32], out: &mut [f32; 256]) {
            let mut rows = [_mm512_setzero_ps(); 16];
            for (r, row) in rows.iter_mut().enumerate() {
                *row = unsafe { _mm512_loadu_ps(m.as_ptr().add(16 * r)) };
            }
            unsafe { transpose16(&mut rows) };
            for (r, row) in rows.iter().enumerate() {
                unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(16 * r), *row) };
            }
        }
        unsafe { run(&m, &mut out) };
        for r in 0..16 {
            for c in 0..16 {
                assert_eq!(out[16 * r + c], m[16 * c + r], "row {r} col {c}");
            }
        }
    }
}
