//! Winograd minimal-filtering convolution for [`super::PackedConv1d`] on AVX-512 machines.
//!
//! A `k`-tap convolution computes `m` outputs of a tile from `α = m + k − 1` products per
//! channel pair instead of `m·k`: the input tile and the weight are taken to `α` evaluation
//! points (Toom-Cook), multiplied there (one GEMM over channels per point) and brought back.
//! For 3 taps in tiles of 6 and 5 taps in tiles of 4 that is 2.25× and 2.5× fewer
//! multiply-adds than the direct kernel, which already runs near the core's FMA peak.
//! Dilation `d` is handled by tiles whose samples are `d` apart: the `d` tiles of a block
//! cover `m·d` consecutive outputs.
//!
//! Longer kernels (6 to 12 taps) are split into 2 or 3 chunks of `m` taps, the last padded
//! with zero taps. Chunk `j` of tile `t` reads the input that chunk 0 of tile `t + j·d` reads,
//! so the input is transformed once and, per evaluation point, a block's output is a short
//! convolution over blocks: `Σ_j V[b + j] · W_j`. From 64 input channels that convolution is
//! itself computed by Winograd's F(4, n) over groups of 4 blocks ([`Outer`]): 11 taps cost
//! 10.5 products per 4 outputs (7 points × 6 GEMMs per 4 blocks) instead of 44, 7 taps 8.75
//! instead of 28. Below 64 channels each point's GEMM sums the chunks (21 and 14 products).
//!
//! Inside a job the data is channels-last (`[time][channel]`), so the transforms are vector
//! adds over channels and need no shuffles; the input and output are transposed in 16×16
//! register blocks on the way in and out, with the leaky ReLU, bias and residual fused there.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::winograd_avx512 as simd;
use super::SendPtr;

/// Finite evaluation points beyond ∞, in the order used: small and reciprocal pairs, which keep
/// the f32 transforms' rounding error near 1e-6 relative for `α ≤ 8`.
const POINTS: [f64; 7] = [0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0];

/// How a `k`-tap kernel is computed: `m` outputs per tile from chunks of `taps` taps, `chunks`
/// of them, with at most 8 evaluation points (more need points that cost f32 accuracy):
/// - 3 taps in tiles of 6 (α = 8) where input and output channels are equal, as in HiFi-GAN's
///   residual convs (13% faster than tiles of 4 at 256 channels), else in tiles of 4, whose
///   weight at the points is a quarter smaller (the text encoder's twelve 192 × 768 FFN convs
///   would hold 14 MiB more);
/// - 5 taps in tiles of 4;
/// - 6 to 12 taps in 2 or 3 chunks of 4 taps in tiles of 4 (α = 7).
///
/// Chunks are combined by [`Outer`] in groups of 4 blocks from 64 input channels on (at 2
/// threads, 11 taps: 128 channels 72–74 ms against 78–88 ms in pairs of blocks and 98 ms
/// with the chunks summed in the GEMM). Below 64 channels its extra passes over the
/// transformed data cost more than its products save (32 channels, 11 taps: 1.13–1.16× over
/// the direct kernel in pairs, 1.27× without), so each point's GEMM sums the chunks' products
/// in registers, rows `t + j·d` against chunk `j`'s weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    m: usize,
    taps: usize,
    chunks: usize,
    /// Blocks per group of [`Outer`]; 0 where the chunks are summed in the GEMM.
    outer_blocks: usize,
}

fn plan(kernel: usize, in_channels: usize, out_channels: usize) -> Option<Plan> {
    let m = 4;
    let (m, taps, chunks) = match kernel {
        3 if in_channels == out_channels => (6, 3, 1),
        3 => (m, 3, 1),
        5 => (m, 5, 1),
        6..=12 => (m, m, kernel.div_ceil(m)),
        _ => return None,
    };
    Some(Plan {
        m,
        taps,
        chunks,
        outer_blocks: if chunks > 1 && (in_channels >= 64 || chunks >= 3) {
            4
        } else {
            0
        },
    })
}

/// Winograd's F(g, n) over blocks: `g` consecutive blocks' outputs `y_o = Σ_j D_{o+j} · W_j`
/// (`D` the transformed input of a block, `W_j` chunk `j`'s weight) from `g + n − 1` GEMMs
/// `M_i = U_i · G_i`, where `U_i = Σ a·D`, `G_i = Σ b·W` and `y_o = Σ c·M_i`: the same
/// Toom-Cook construction as the tiles', on the first points of [`POINTS`].
#[derive(Debug)]
pub(super) struct Outer {
    /// Blocks per group.
    pub blocks: usize,
    /// Per product, `(block, a)`: `U_i = Σ a · D_block`.
    pub input: Vec<Vec<Term>>,
    /// Per product, `(chunk, b)`: `G_i = Σ b · W_chunk`.
    weight: Vec<Vec<(usize, f64)>>,
    /// Per output block, `(product, c)`: `y_o = Σ c · M_i`.
    pub output: Vec<Vec<Term>>,
}

impl Outer {
    fn new(blocks: usize, chunks: usize) -> Self {
        let alpha = blocks + chunks - 1;
        let g = evaluation(alpha, chunks);
        let h = evaluation(alpha, blocks);
        let c = invert(evaluation(alpha, alpha));
        Self {
            blocks,
            input: (0..alpha)
                .map(|xi| terms((0..alpha).map(|j| (j, c[j][xi]))))
                .collect(),
            weight: g
                .iter()
                .map(|row| {
                    row.iter()
                        .copied()
                        .enumerate()
                        .filter(|&(_, b)| b != 0.0)
                        .collect()
                })
                .collect(),
            output: (0..blocks)
                .map(|o| terms((0..alpha).map(|xi| (xi, h[xi][o]))))
                .collect(),
        }
    }
}

/// The plan for a convolution of this shape where the kernel can run it at all: AVX-512,
/// `FERROVOX_CONV_WINOGRAD` not off, a kernel size with an accurate tile, and channel counts
/// the register blocks fit.
fn runs(in_channels: usize, out_channels: usize, kernel: usize) -> Option<Plan> {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let plan = plan(kernel, in_channels, out_channels)?;
    let on = *ON.get_or_init(|| {
        super::direct::available() && !super::switched_off("FERROVOX_CONV_WINOGRAD")
    });
    (on && in_channels.is_multiple_of(16) && out_channels.is_multiple_of(32)).then_some(plan)
}

/// Whether a convolution of this shape runs on [`Winograd`] rather than the direct kernel:
/// where it [`runs`] and pays.
///
/// Below 64 input channels the transposes and transforms cost about what the GEMM saves, so
/// only kernels of several chunks, which share one transform, win there: at 32 channels and
/// 2 threads, 11 taps 1.27× and 7 taps 1.14× over the direct kernel, 5 taps 1.02×, 3 taps
/// 0.85× (`cargo xtask bench kernels`, channels-first).
pub fn supports(in_channels: usize, out_channels: usize, kernel: usize) -> bool {
    runs(in_channels, out_channels, kernel)
        .is_some_and(|plan| in_channels >= 64 || (in_channels >= 32 && plan.chunks > 1))
}

/// One term of a transform: `coefficient · operand[index]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Term {
    pub index: usize,
    pub coefficient: f32,
}

/// A convolution as Winograd chunks summed over one input window.
#[derive(Debug)]
pub struct Winograd {
    plan: Plan,
    alpha: usize,
    dilation: usize,
    padding: usize,
    in_channels: usize,
    out_channels: usize,
    /// Output channels per row of the result: 1, or a transposed convolution's stride when
    /// channel `c·phases + r` holds phase `r` of row `c` (see [`Winograd::phased`]).
    phases: usize,
    /// `[α][in][out]`, or `[α][chunk][in][out]` with chunks summed in the GEMM, or
    /// `[α][product][in][out]` with [`Outer`].
    weight: Vec<f32>,
    outer: Option<Outer>,
    /// Per evaluation point ξ, the input samples j and coefficients of `V_ξ = Σ c·d_j`.
    input_terms: Vec<Vec<Term>>,
    /// Per output sample i, the points ξ and coefficients of `y_i = Σ c·M_ξ`.
    output_terms: Vec<Vec<Term>>,
}

/// Rows of `[1, p, p², …, p^(n−1)]` for the finite points and `[0, …, 0, 1]` for ∞: the values
/// of a polynomial of `n` coefficients at the `α` points.
fn evaluation(alpha: usize, n: usize) -> Vec<Vec<f64>> {
    let mut rows: Vec<Vec<f64>> = POINTS[..alpha - 1]
        .iter()
        .map(|&p| (0..n).map(|e| p.powi(e as i32)).collect())
        .collect();
    rows.push((0..n).map(|e| if e == n - 1 { 1.0 } else { 0.0 }).collect());
    rows
}

/// The inverse of a square matrix (Gauss-Jordan with partial pivoting, f64).
fn invert(mut a: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    let n = a.len();
    let mut inv: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        inv.swap(col, pivot);
        let p = a[col][col];
        for j in 0..n {
            a[col][j] /= p;
            inv[col][j] /= p;
        }
        for row in 0..n {
            if row != col {
                let f = a[row][col];
                for j in 0..n {
                    a[row][j] -= f * a[col][j];
                    inv[row][j] -= f * inv[col][j];
                }
            }
        }
    }
    inv
}

fn terms(coefficients: impl Iterator<Item = (usize, f64)>) -> Vec<Term> {
    coefficients
        .filter(|&(_, c)| c.abs() > 1e-12)
        .map(|(index, c)| Term {
            index,
            coefficient: c as f32,
        })
        .collect()
}

/// Scratch bytes a job is sized for. Larger jobs read each point's weight panel for more
/// tiles; the MMS decoder's paragraph at 2 threads ran in 6.81 s (median of 3, interleaved)
/// at 4 MiB, 7.20 s at 2 MiB and 7.50 s at 1 MiB; the joe voice is the same at 1 and 4 MiB.
const JOB_BYTES: usize = 4 << 20;

/// Scratch buffers of one job, reused by each rayon thread.
#[derive(Default)]
struct Scratch {
    window: Vec<f32>,
    points_in: Vec<f32>,
    outer_in: Vec<f32>,
    points_out: Vec<f32>,
    out: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Whether a convolution's input and output are channels-last (`[b, t, c]`) rather than
/// channels-first (`[b, c, t]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Layouts {
    pub input_channels_last: bool,
    pub output_channels_last: bool,
}

/// What one job computes: outputs `[t0, t1)` of one item.
pub(super) struct Job<'a> {
    pub x: &'a [f32],
    pub len: usize,
    pub y: *mut f32,
    pub residuals: [Option<&'a [f32]>; 2],
    pub out_len: usize,
    pub t0: usize,
    pub t1: usize,
}

/// Which shapes [`Winograd::new`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Where [`supports`] finds it faster than the direct kernel.
    Faster,
    /// Wherever the kernel [`runs`] the shape: for convolutions that read or write
    /// channels-last, which only this kernel does.
    Runs,
}

impl Winograd {
    /// Transforms `weight` `[out][in][k]` for a convolution of this shape; `None` where
    /// `when` does not hold for it.
    pub fn new(
        weight: &[Vec<Vec<f32>>],
        kernel: usize,
        padding: usize,
        dilation: usize,
        when: When,
    ) -> Option<Self> {
        let (cout, cin) = (weight.len(), weight.first()?.len());
        let accepted = match when {
            When::Faster => supports(cin, cout, kernel),
            When::Runs => runs(cin, cout, kernel).is_some(),
        };
        accepted.then(|| Self::build(weight, kernel, padding, dilation))
    }

    /// A convolution whose output channel `c·phases + r` is written to row `c` at samples
    /// `t·phases + r`: a transposed convolution of stride `phases` run as a regular one over
    /// its input (polyphase). `None` where [`supports`] says no or 16 is not a multiple of
    /// `phases`.
    pub fn phased(
        weight: &[Vec<Vec<f32>>],
        kernel: usize,
        padding: usize,
        phases: usize,
    ) -> Option<Self> {
        if phases == 0 || 16 % phases != 0 {
            return None;
        }
        Self::new(weight, kernel, padding, 1, When::Faster).map(|w| Self { phases, ..w })
    }

    fn build(weight: &[Vec<Vec<f32>>], kernel: usize, padding: usize, dilation: usize) -> Self {
        let (cout, cin) = (weight.len(), weight[0].len());
        let plan = plan(kernel, cin, cout).expect("a supported kernel size");
        let Plan {
            m, taps, chunks, ..
        } = plan;
        let alpha = m + taps - 1;
        let g = evaluation(alpha, taps);
        let h = evaluation(alpha, m);
        let c = invert(evaluation(alpha, alpha));
        // Each chunk's weight at the points, `[α][chunk][in][out]`; taps past the kernel's end
        // are zero.
        let mut points = vec![0f64; alpha * chunks * cin * cout];
        for (xi, g_row) in g.iter().enumerate() {
            for chunk in 0..chunks {
                for (co, w_out) in weight.iter().enumerate() {
                    for (ci, w_taps) in w_out.iter().enumerate() {
                        points[((xi * chunks + chunk) * cin + ci) * cout + co] = g_row
                            .iter()
                            .zip(w_taps.iter().skip(chunk * taps))
                            .map(|(&a, &w)| a * w as f64)
                            .sum();
                    }
                }
            }
        }
        let outer = (plan.outer_blocks > 0).then(|| Outer::new(plan.outer_blocks, chunks));
        let transformed = match &outer {
            None => points.iter().map(|&v| v as f32).collect(),
            // `[α][product][in][out]`: G_i = Σ b · W_chunk at each point.
            Some(outer) => {
                let panel = cin * cout;
                let mut combined = Vec::with_capacity(alpha * outer.weight.len() * panel);
                for xi in 0..alpha {
                    for sum in &outer.weight {
                        combined.extend((0..panel).map(|e| {
                            sum.iter()
                                .map(|&(chunk, b)| b * points[(xi * chunks + chunk) * panel + e])
                                .sum::<f64>() as f32
                        }));
                    }
                }
                combined
            }
        };
        Self {
            plan,
            alpha,
            dilation,
            padding,
            in_channels: cin,
            out_channels: cout,
            phases: 1,
            weight: transformed,
            outer,
            input_terms: (0..alpha)
                .map(|xi| terms((0..alpha).map(|j| (j, c[j][xi]))))
                .collect(),
            output_terms: (0..m)
                .map(|i| terms((0..alpha).map(|xi| (xi, h[xi][i]))))
                .collect(),
        }
    }

    /// Samples per block: the `dilation` tiles of a block cover them.
    fn block(&self) -> usize {
        self.plan.m * self.dilation
    }

    /// Output samples per job: about [`JOB_BYTES`] of scratch, and enough jobs for every
    /// thread.
    pub(super) fn job_len(&self, batch: usize, out_len: usize) -> usize {
        let (cin, cout) = (self.in_channels, self.out_channels);
        // Window and output, transformed input, and (with chunks) the outer products.
        let (alpha, m) = (self.alpha, self.plan.m);
        let products = match &self.outer {
            Some(outer) => alpha * outer.input.len() * (cin + cout) / (outer.blocks * m),
            None => alpha * cout / m,
        };
        let per_sample = 4 * (cin + cout + alpha * cin / m + products);
        // With [`Outer`], whole groups of blocks, so that only an item's last job computes
        // blocks past its end.
        let block = self.block() * self.outer.as_ref().map_or(1, |o| o.blocks);
        let by_cache = (JOB_BYTES / per_sample / block).max(1) * block;
        let wanted_jobs = (2 * rayon::current_num_threads()).div_ceil(batch);
        let by_threads = out_len.div_ceil(wanted_jobs).next_multiple_of(block);
        by_cache.min(by_threads).max(block)
    }

    /// Runs every job of `batch` items of `len` input samples into `out`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run(
        &self,
        input: &[f32],
        batch: usize,
        len: usize,
        residuals: [Option<&[f32]>; 2],
        out: *mut f32,
        out_len: usize,
        bias: &[f32],
        slope: Option<f32>,
        layouts: Layouts,
    ) {
        let (cin, cout) = (self.in_channels, self.out_channels);
        let job_len = self.job_len(batch, out_len);
        let per_item = out_len.div_ceil(job_len);
        let dst = SendPtr(out);
        (0..batch * per_item).into_par_iter().for_each(|j| {
            let (item, t0) = (j / per_item, (j % per_item) * job_len);
            let job = Job {
                x: &input[item * cin * len..(item + 1) * cin * len],
                len,
                // SAFETY: each job writes columns [t0, t1) of its own item only.
                y: unsafe { dst.get().add(item * cout * out_len) },
                residuals: residuals
                    .map(|r| r.map(|r| &r[item * cout * out_len..(item + 1) * cout * out_len])),
                out_len,
                t0,
                t1: (t0 + job_len).min(out_len),
            };
            self.run_job(&job, bias, slope, layouts);
        });
    }

    /// One job on the calling thread: for callers that split the work themselves
    /// ([`super::ResidualStage`]).
    pub(super) fn run_job(
        &self,
        job: &Job<'_>,
        bias: &[f32],
        slope: Option<f32>,
        layouts: Layouts,
    ) {
        if job.t0 < job.t1 {
            SCRATCH.with(|s| self.job(job, bias, slope, layouts, &mut s.borrow_mut()));
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn job(&self, _: &Job<'_>, _: &[f32], _: Option<f32>, _: Layouts, _: &mut Scratch) {
        unreachable!("Winograd convolutions are built only where AVX-512 is")
    }

    #[cfg(target_arch = "x86_64")]
    fn job(
        &self,
        job: &Job<'_>,
        bias: &[f32],
        slope: Option<f32>,
        layouts: Layouts,
        s: &mut Scratch,
    ) {
        let (cin, cout, d) = (self.in_channels, self.out_channels, self.dilation);
        let Plan {
            m, taps, chunks, ..
        } = self.plan;
        let blocks = (job.t1 - job.t0).div_ceil(self.block());
        let rows = simd::rows_per_tile(cout);
        // Chunk j of the last block reads the transformed input `j` blocks past it; with
        // [`Outer`], blocks go in groups.
        let extra = chunks - 1;
        let blocks_run = match &self.outer {
            Some(outer) => blocks.next_multiple_of(outer.blocks),
            None => blocks,
        };
        let tiles = blocks * d;
        let tiles_padded = tiles.next_multiple_of(rows);
        let window = (blocks_run * self.block() + d * (taps * chunks - 1)).next_multiple_of(16);
        let positions = (blocks * self.block()).next_multiple_of(16);
        let (in_rows, valid_in_rows) = match &self.outer {
            Some(_) => ((blocks_run + extra) * d, (blocks_run + extra) * d),
            None => (tiles_padded + extra * d, tiles + extra * d),
        };
        let shape = simd::Shape {
            cin,
            cout,
            m,
            dilation: d,
            tiles,
            tiles_padded,
            in_rows,
            valid_in_rows,
        };
        grow(&mut s.window, window * cin);
        grow(&mut s.points_in, self.alpha * in_rows * cin);
        grow(&mut s.out, positions * cout);
        let first = job.t0 as isize - self.padding as isize;
        // SAFETY: the buffers were grown to the extents each step reads and writes; `simd`
        // runs only where `supports` found AVX-512F.
        unsafe {
            if layouts.input_channels_last {
                let (x, len) = (job.x, job.len);
                simd::load_window_channels_last(x, len, first, window, cin, slope, &mut s.window);
            } else {
                simd::load_window(job.x, job.len, first, window, cin, slope, &mut s.window);
            }
            simd::input_transform(&shape, &self.input_terms, &s.window, &mut s.points_in);
            match &self.outer {
                None => {
                    grow(&mut s.points_out, self.alpha * tiles_padded * cout);
                    let summed = simd::Chunks {
                        count: chunks,
                        rows: d * cin,
                        weights: cin * cout,
                    };
                    for xi in 0..self.alpha {
                        simd::point_gemm(
                            cin,
                            cout,
                            tiles_padded,
                            &summed,
                            &s.points_in[xi * in_rows * cin..],
                            &self.weight[xi * chunks * cin * cout..],
                            &mut s.points_out[xi * tiles_padded * cout..],
                        );
                    }
                    simd::output_transform(&shape, &self.output_terms, &s.points_out, &mut s.out);
                }
                Some(outer) => {
                    let groups = blocks_run / outer.blocks * d;
                    let groups_padded = groups.next_multiple_of(rows);
                    let products = outer.input.len();
                    grow(&mut s.outer_in, self.alpha * products * groups_padded * cin);
                    grow(
                        &mut s.points_out,
                        self.alpha * products * groups_padded * cout,
                    );
                    let outer_shape = simd::OuterShape {
                        alpha: self.alpha,
                        groups,
                        groups_padded,
                        products,
                    };
                    simd::outer_input(&shape, &outer_shape, outer, &s.points_in, &mut s.outer_in);
                    for panel in 0..self.alpha * products {
                        simd::point_gemm(
                            cin,
                            cout,
                            groups_padded,
                            &simd::Chunks::ONE,
                            &s.outer_in[panel * groups_padded * cin..],
                            &self.weight[panel * cin * cout..],
                            &mut s.points_out[panel * groups_padded * cout..],
                        );
                    }
                    simd::outer_output_transform(
                        &shape,
                        &outer_shape,
                        outer,
                        &self.output_terms,
                        &s.points_out,
                        &mut s.out,
                    );
                }
            }
            if self.phases > 1 {
                debug_assert!(
                    job.residuals.iter().all(Option::is_none),
                    "phased: no residuals"
                );
                let row = job.out_len * self.phases;
                simd::store_phased(&s.out, cout, self.phases, bias, job.y, row, job.t0, job.t1);
                return;
            }
            if layouts.output_channels_last {
                let (y, residuals) = (job.y, job.residuals);
                simd::store_output_channels_last(&s.out, cout, bias, residuals, y, job.t0, job.t1);
                return;
            }
            simd::store_output(
                &s.out,
                cout,
                bias,
                job.residuals,
                job.y,
                job.out_len,
                job.t0,
                job.t1,
            );
        }
    }
}

/// Makes `v` at least `len` long; what it holds is overwritten before it is read.
fn grow(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Winograd in f64 on one tile against the direct sum: the transforms are exact up to
    /// rounding, so any error here is a construction bug, not precision.
    #[test]
    fn long_kernels_split_into_chunks_of_one_tile() {
        let chunks = |k| plan(k, 64, 64).map(|p| (p.m, p.taps, p.chunks));
        assert_eq!(chunks(3), Some((6, 3, 1)));
        assert_eq!(plan(3, 192, 768).map(|p| p.m), Some(4));
        assert_eq!(chunks(5), Some((4, 5, 1)));
        assert_eq!(chunks(7), Some((4, 4, 2)));
        assert_eq!(chunks(8), Some((4, 4, 2)));
        assert_eq!(chunks(11), Some((4, 4, 3)));
        assert_eq!(chunks(12), Some((4, 4, 3)));
        assert_eq!(chunks(13), None);
        assert_eq!(chunks(1), None);
        assert_eq!(chunks(4), None);
    }

    /// F(g, n) over blocks in f64 against the direct sum over chunks.
    #[test]
    fn the_outer_transforms_compute_groups_of_blocks() {
        for (blocks, chunks) in [(2, 2), (2, 3), (3, 3), (4, 2), (4, 3)] {
            let outer = Outer::new(blocks, chunks);
            let w: Vec<f64> = (0..chunks).map(|j| (j as f64 * 0.9 + 0.2).sin()).collect();
            let x: Vec<f64> = (0..blocks + chunks - 1)
                .map(|j| (j as f64 * 1.7).cos())
                .collect();
            let m: Vec<f64> = outer
                .input
                .iter()
                .zip(&outer.weight)
                .map(|(u, g)| {
                    let u: f64 = u.iter().map(|t| t.coefficient as f64 * x[t.index]).sum();
                    let g: f64 = g.iter().map(|&(j, b)| b * w[j]).sum();
                    u * g
                })
                .collect();
            for (o, sum) in outer.output.iter().enumerate() {
                let direct: f64 = (0..chunks).map(|j| x[o + j] * w[j]).sum();
                let ours: f64 = sum.iter().map(|t| t.coefficient as f64 * m[t.index]).sum();
                assert!(
                    (direct - ours).abs() < 1e-6,
                    "F({blocks}, {chunks}), block {o}: {direct} vs {ours}"
                );
            }
        }
    }

    #[test]
    fn the_transforms_compute_a_correlation() {
        for (kernel, m) in [(3, 6), (4, 4), (5, 4)] {
            let alpha = m + kernel - 1;
            let (g, h) = (evaluation(alpha, kernel), evaluation(alpha, m));
            let c = invert(evaluation(alpha, alpha));
            let w: Vec<f64> = (0..kernel).map(|j| (j as f64 * 0.7).sin()).collect();
            let x: Vec<f64> = (0..alpha).map(|j| (j as f64 * 1.3).cos()).collect();
            for i in 0..m {
                let direct: f64 = (0..kernel).map(|j| w[j] * x[i + j]).sum();
                let wino: f64 = (0..alpha)
                    .map(|xi| {
                        let u: f64 = (0..kernel).map(|j| g[xi][j] * w[j]).sum();
                        let v: f64 = (0..alpha).map(|j| c[j][xi] * x[j]).sum();
                        h[xi][i] * u * v
                    })
                    .sum();
                assert!(
                    (direct - wino).abs() < 1e-9,
                    "k{kernel} i{i}: {direct} vs {wino}"
                );
            }
        }
    }
}
