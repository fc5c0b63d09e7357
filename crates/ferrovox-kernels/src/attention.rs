//! Full self-attention on the CPU in one pass per block of query rows:
//! `softmax(q·kᵀ + key_bias)·v`, with the heads written back side by side.
//!
//! Through Candle's ops the scores of every head are materialised at once (`[b, h, t, t]`: 14 MB
//! for S3Gen's estimator at 656 frames), the key bias is added in a second pass, the softmax
//! takes two more with libm's scalar `expf`, and the output needs a transpose copy. Here each
//! job holds one block of rows of one head's scores (a few hundred KB, in cache), adds the
//! bias, exponentiates with the vectorised `exp`, and multiplies by `v` straight into its
//! columns of the `[b, t, h·d]` output.

use std::cell::RefCell;
use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape};
use rayon::prelude::*;

use super::activations::exp;
use super::bf16_gemm::{round_rows, Bf16Panels};
use super::SendPtr;

/// Query rows per job: their scores stay in L2 at the lengths S3Gen runs (656 keys: 164 KB).
const ROWS: usize = 64;

/// `softmax(q·kᵀ + key_bias)·v` for `q`, `k`, `v` `[b, h, t, d]` (contiguous f32, the score
/// scale already in `q`), giving `[b, t, h·d]`. `key_bias` `[b, t]` (row-major) is added to
/// every query's scores, as diffusers adds its attention mask.
#[derive(Debug, Clone, Default)]
pub struct CpuSelfAttention {
    key_bias: Option<Arc<Vec<f32>>>,
    bf16: bool,
}

impl CpuSelfAttention {
    /// Attention without a key bias.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attention with `key_bias` (`[b, t]`, row-major) added to each query's scores.
    pub fn with_key_bias(key_bias: Arc<Vec<f32>>) -> Self {
        Self {
            key_bias: Some(key_bias),
            bf16: false,
        }
    }

    /// Both products on bf16-rounded inputs with f32 sums ([`crate::Bf16Panels`]) where the CPU
    /// has AVX-512 BF16 and `on`; the softmax stays f32.
    pub fn bf16_products(mut self, on: bool) -> Self {
        self.bf16 = on && crate::bf16_products_available();
        self
    }
}

impl CustomOp3 for CpuSelfAttention {
    fn name(&self) -> &'static str {
        "ferrovox-cpu-self-attention"
    }

    fn cpu_fwd(
        &self,
        q_s: &CpuStorage,
        q_l: &Layout,
        k_s: &CpuStorage,
        k_l: &Layout,
        v_s: &CpuStorage,
        v_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (b, h, t, d) = q_l.shape().dims4()?;
        for (what, l) in [("k", k_l), ("v", v_l)] {
            if l.shape() != q_l.shape() {
                candle_core::bail!(
                    "{name}: {what} is {:?}, q {:?}",
                    l.shape().dims(),
                    q_l.shape().dims()
                );
            }
        }
        if let Some(bias) = &self.key_bias {
            if bias.len() != b * t {
                candle_core::bail!("{name}: key bias of {} for {b} × {t} keys", bias.len());
            }
        }
        let q = super::contiguous_f32(name, q_s, q_l)?;
        let k = super::contiguous_f32(name, k_s, k_l)?;
        let v = super::contiguous_f32(name, v_s, v_l)?;
        let mut out = vec![0f32; b * t * h * d];
        if self.bf16 {
            self.bf16_fwd(q, k, v, (b, h, t, d), &mut out);
            return Ok((CpuStorage::F32(out), Shape::from((b, t, h * d))));
        }
        let dst = SendPtr(out.as_mut_ptr());
        self.for_each_block((b, h, t, d), |job| {
            let Block {
                bi,
                hi,
                r0,
                rows,
                plane,
                bias,
                ..
            } = job;
            SCORES.with_borrow_mut(|scores| {
                scores.clear();
                scores.resize(rows * t, 0.0);
                let row_stride = h * d;
                // SAFETY: q, k and v hold `b·h` planes of `t × d`; the scores buffer is
                // `rows × t`; each job writes rows `r0..r0 + rows` of head `hi`'s `d` columns of
                // item `bi`, which no other job writes.
                unsafe {
                    // scores = q[r0..] · kᵀ: k's rows read as columns.
                    product(
                        (rows, t, d),
                        (scores.as_mut_ptr(), t),
                        (q.as_ptr().add(plane + r0 * d), d),
                        (k.as_ptr().add(plane), 1, d),
                    );
                    for row in scores.chunks_exact_mut(t) {
                        softmax_widest(row, bias);
                    }
                    product(
                        (rows, d, t),
                        (
                            dst.get().add((bi * t + r0) * row_stride + hi * d),
                            row_stride,
                        ),
                        (scores.as_ptr(), t),
                        (v.as_ptr().add(plane), d, 1),
                    );
                }
            });
        });
        Ok((CpuStorage::F32(out), Shape::from((b, t, h * d))))
    }
}

/// One job: a block of query rows of one head of one batch item.
struct Block<'a> {
    bh: usize,
    bi: usize,
    hi: usize,
    r0: usize,
    rows: usize,
    /// Where the head's `t × d` plane starts in q, k and v.
    plane: usize,
    /// The item's key bias.
    bias: Option<&'a [f32]>,
}

impl CpuSelfAttention {
    /// Runs `job` for every block of [`ROWS`] query rows of every head of every item, on the
    /// rayon pool.
    fn for_each_block(
        &self,
        (b, h, t, d): (usize, usize, usize, usize),
        job: impl Fn(Block<'_>) + Send + Sync,
    ) {
        let blocks = t.div_ceil(ROWS);
        (0..b * h * blocks).into_par_iter().for_each(|i| {
            let (bh, block) = (i / blocks, i % blocks);
            let bi = bh / h;
            let r0 = block * ROWS;
            job(Block {
                bh,
                bi,
                hi: bh % h,
                r0,
                rows: ROWS.min(t - r0),
                plane: bh * t * d,
                bias: self.key_bias.as_ref().map(|b| &b[bi * t..(bi + 1) * t]),
            })
        });
    }

    /// The op on bf16-rounded inputs: each head's keys and values packed once, then a job per
    /// block of query rows as in the f32 path.
    fn bf16_fwd(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        (b, h, t, d): (usize, usize, usize, usize),
        out: &mut [f32],
    ) {
        let packed: Vec<(Bf16Panels, Bf16Panels)> = (0..b * h)
            .into_par_iter()
            .map(|bh| {
                let plane = bh * t * d;
                (
                    Bf16Panels::from_weight(&k[plane..plane + t * d], t, d),
                    Bf16Panels::from_matrix(&v[plane..plane + t * d], t, d),
                )
            })
            .collect();
        let dst = SendPtr(out.as_mut_ptr());
        self.for_each_block((b, h, t, d), |job| {
            let (keys, values) = &packed[job.bh];
            SCORES.with_borrow_mut(|scores| {
                ROUNDED.with_borrow_mut(|rounded| {
                    scores.clear();
                    scores.resize(job.rows * t, 0.0);
                    rounded.clear();
                    rounded.resize(job.rows * t.max(d).div_ceil(2), 0);
                    let queries = job.plane + job.r0 * d..job.plane + (job.r0 + job.rows) * d;
                    round_rows(&q[queries], d, rounded);
                    // SAFETY: `scores` is `rows × t`; each job writes its rows of its head's `d`
                    // columns of its item in `out`, which no other job writes.
                    unsafe {
                        keys.product(
                            rounded,
                            job.rows,
                            (0, keys.panels()),
                            scores.as_mut_ptr(),
                            t,
                            None,
                        );
                        for row in scores.chunks_exact_mut(t) {
                            softmax_widest(row, job.bias);
                        }
                        round_rows(scores, t, rounded);
                        values.product(
                            rounded,
                            job.rows,
                            (0, values.panels()),
                            dst.get().add((job.bi * t + job.r0) * h * d + job.hi * d),
                            h * d,
                            None,
                        );
                    }
                })
            });
        });
    }
}

/// `dst = lhs · rhs` for `(m, n, k)`, one thread: `dst` and `lhs` row-major with the given row
/// strides, `rhs` with its row and column strides.
///
/// # Safety
/// The pointers must be valid for the extents the sizes and strides describe, and `dst` must not
/// alias the inputs.
unsafe fn product(
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs): (*mut f32, usize),
    (lhs, lhs_rs): (*const f32, usize),
    (rhs, rhs_rs, rhs_cs): (*const f32, usize, usize),
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            false,
            lhs,
            1,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

thread_local! {
    /// Each worker's block of scores, kept between jobs.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The same block's queries or probabilities rounded to bf16 pairs.
    static ROUNDED: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Lanes the reductions keep apart so they vectorise.
const LANES: usize = 16;

/// `row ← softmax(row + bias)` in place.
#[inline(always)]
fn softmax_row(row: &mut [f32], bias: Option<&[f32]>) {
    if let Some(bias) = bias {
        for (x, b) in row.iter_mut().zip(bias) {
            *x += b;
        }
    }
    let mut lane_max = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &x) in lane_max.iter_mut().zip(c) {
            *m = m.max(x);
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&lane_max)
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let mut lane_sum = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (s, x) in lane_sum.iter_mut().zip(c) {
            *x = exp(*x - max);
            *s += *x;
        }
    }
    let mut sum: f32 = lane_sum.iter().sum();
    for x in chunks.into_remainder() {
        *x = exp(*x - max);
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in row.iter_mut() {
        *x *= inv;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
unsafe fn softmax_row_avx512(row: &mut [f32], bias: Option<&[f32]>) {
    softmax_row(row, bias)
}

fn softmax_widest(row: &mut [f32], bias: Option<&[f32]>) {
    #[cfg(target_arch = "x86_64")]
    if super::direct::cpu_has_avx512f() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { softmax_row_avx512(row, bias) };
    }
    softmax_row(row, bias)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// Candle's composition (the estimator's path before this op) as the reference.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>) -> Tensor {
        let (b, h, t, d) = q.dims4().unwrap();
        let mut scores = q.matmul(&k.t().unwrap()).unwrap();
        if let Some(bias) = bias {
            scores = scores
                .broadcast_add(&bias.reshape((b, 1, 1, t)).unwrap())
                .unwrap();
        }
        candle_nn::ops::softmax_last_dim(&scores)
            .unwrap()
            .matmul(v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, t, h * d))
            .unwrap()
    }

    #[test]
    fn matches_candles_composition() {
        let dev = Device::Cpu;
        // Lengths below, at and across the row block, an odd head size, and a padded batch whose
        // second item masks its last keys as S3Gen's flow does (−1e10).
        for (b, h, t, d) in [(1, 2, 5, 8), (1, 8, 64, 64), (2, 3, 150, 17)] {
            let q = Tensor::randn(0f32, 1., (b, h, t, d), &dev).unwrap();
            let k = Tensor::randn(0f32, 1., (b, h, t, d), &dev).unwrap();
            let v = Tensor::randn(0f32, 1., (b, h, t, d), &dev).unwrap();
            let ours = q.apply_op3(&k, &v, CpuSelfAttention::new()).unwrap();
            let err = super::super::max_abs_diff(&ours, &reference(&q, &k, &v, None));
            assert!(err < 1e-5, "b{b} h{h} t{t} d{d}: {err}");
            let bias: Vec<f32> = (0..b * t)
                .map(|i| {
                    if i >= t && i % t >= t - t / 3 {
                        -1e10
                    } else {
                        0.0
                    }
                })
                .collect();
            let bias_t = Tensor::from_vec(bias.clone(), (b, t), &dev).unwrap();
            let ours = q
                .apply_op3(&k, &v, CpuSelfAttention::with_key_bias(Arc::new(bias)))
                .unwrap();
            let want = reference(&q, &k, &v, Some(&bias_t));
            let err = super::super::max_abs_diff(&ours, &want);
            assert!(err < 1e-5, "masked b{b} h{h} t{t} d{d}: {err}");
            if crate::bf16_products_available() {
                // Scores of unit-variance inputs reach about ±4√d here; bf16's 8-bit
                // mantissas move the outputs (weighted means of v) by a few hundredths.
                let op = CpuSelfAttention::with_key_bias(Arc::new(
                    bias_t.flatten_all().unwrap().to_vec1().unwrap(),
                ))
                .bf16_products(true);
                let bf16 = q.apply_op3(&k, &v, op).unwrap();
                let err = super::super::max_abs_diff(&bf16, &want);
                assert!(err > 0.0 && err < 0.1, "bf16 b{b} h{h} t{t} d{d}: {err}");
            }
        }
    }

    #[test]
    fn mismatched_inputs_are_refused() {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 2, 4, 8), candle_core::DType::F32, &dev).unwrap();
        let k = Tensor::zeros((1, 2, 5, 8), candle_core::DType::F32, &dev).unwrap();
        assert!(q.apply_op3(&k, &q, CpuSelfAttention::new()).is_err());
        let short = CpuSelfAttention::with_key_bias(Arc::new(vec![0.0; 3]));
        assert!(q.apply_op3(&q, &q, short).is_err());
    }
}
