//! A HiFi-GAN stage's residual blocks as one op, run chunk by chunk through every conv.
//!
//! Run conv by conv, a stage streams each activation through main memory: at the joe voice's
//! last stage (32 channels, 5.6 M samples a second of audio) every conv reads its input and
//! residual and writes its output, 16 MB each for a sentence, and the stage transposes in and
//! out. Here each parallel job takes a chunk of samples with a halo as wide as the longest
//! branch reaches, transposes it channels-last once, runs every branch's convs on it while
//! it stays in cache, and writes its share of the stage's output channels-first. The halo is
//! computed twice (by both neighbours): a few percent of the work.

use std::cell::RefCell;
use std::ops::Range;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};
use rayon::prelude::*;

use super::{PackedConv1d, SendPtr};

/// One residual step: `x + convs[n−1](… convs[0](x))`, each conv applying its own input
/// activation.
pub type Step = Vec<PackedConv1d>;

/// `Σ_branch chain(x)` over `[b, c, t]`, where a branch's chain applies its steps in turn:
/// HiFi-GAN's residual blocks of one stage, summed (the mean's 1/n is left to the caller).
#[derive(Debug, Clone)]
pub struct ResidualStage {
    branches: Vec<Vec<Step>>,
    channels: usize,
    /// Samples each side a chunk's output depends on: the widest branch's total reach.
    halo: usize,
}

/// Bytes of one activation buffer a chunk aims at: its buffers and the Winograd scratch of
/// one conv then stay within L2.
const CHUNK_BYTES: usize = 128 << 10;

/// Buffers of one chunk, reused by each rayon thread.
#[derive(Default)]
struct Buffers {
    input: Vec<f32>,
    steps: [Vec<f32>; 2],
    inner: [Vec<f32>; 2],
    sum: [Vec<f32>; 2],
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

impl ResidualStage {
    /// The stage of `branches`, each a list of steps; `None` unless every conv keeps the length
    /// and runs channels-last on Winograd with the same channel count (see
    /// [`PackedConv1d::with_channels_last`]).
    pub fn new(branches: Vec<Vec<Step>>) -> Option<Self> {
        let first = branches.first()?.first()?.first()?;
        let channels = first.in_channels();
        let mut halo = 0;
        for branch in &branches {
            let mut reach = 0;
            for conv in branch.iter().flatten() {
                if conv.in_channels() != channels {
                    return None;
                }
                if !conv.chains_channels_last() {
                    return None;
                }
                reach += conv.reach();
            }
            if branch.iter().any(Vec::is_empty) {
                return None;
            }
            halo = halo.max(reach);
        }
        Some(Self {
            branches,
            channels,
            halo,
        })
    }

    /// Output samples per chunk for `batch` items of `len`: about [`CHUNK_BYTES`] per
    /// buffer but at least 32 halos, and enough chunks for every thread. At 8 halos the MMS
    /// decoder's 256-channel stage, whose 11-tap branch reaches 60 samples each side, spent
    /// more on its recomputed halos than it saved: 446 frames at one thread took 1.42-1.53 s
    /// against 1.29-1.33 s at 32 halos (1.35-1.37 s conv by conv); the joe voice's decoder is
    /// the same at 8, 16 and 32 (minimum of 15: 160-165 ms on 500 frames).
    fn chunk_len(&self, batch: usize, len: usize) -> usize {
        let by_cache = (CHUNK_BYTES / (4 * self.channels)).max(32 * self.halo);
        let wanted = (2 * rayon::current_num_threads()).div_ceil(batch);
        let by_threads = len.div_ceil(wanted).max(2 * self.halo);
        by_cache.min(by_threads).max(16)
    }

    /// One chunk: output samples `out` of one item `x` (`[c, len]`) into `y` (`[c, len]`).
    ///
    /// # Safety
    /// AVX-512F; `y` is writable for columns `out` of its `c` rows of `len`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn chunk(&self, x: &[f32], len: usize, out: Range<usize>, y: *mut f32, b: &mut Buffers) {
        use super::winograd_avx512::transpose_strided;
        let c = self.channels;
        let from = out.start.saturating_sub(self.halo);
        let rows = (out.end + self.halo).min(len) - from;
        for buffer in [&mut b.input]
            .into_iter()
            .chain(&mut b.steps)
            .chain(&mut b.inner)
            .chain(&mut b.sum)
        {
            if buffer.len() < rows * c {
                buffer.resize(rows * c, 0.0);
            }
        }
        // SAFETY (both transposes): the chunk's columns of x and y, and `rows` rows of the
        // buffer, in bounds.
        unsafe { transpose_strided(x.as_ptr().add(from), len, b.input.as_mut_ptr(), c, c, rows) };
        let wanted = out.start - from..out.end - from;
        let ptr = |v: &mut Vec<f32>| v.as_mut_ptr();
        let (input, steps, inner, sums) = (
            ptr(&mut b.input),
            b.steps.each_mut().map(ptr),
            b.inner.each_mut().map(ptr),
            b.sum.each_mut().map(ptr),
        );
        // SAFETY: every buffer holds `rows · c` values; each conv below writes a buffer that
        // is none of those it reads.
        let view = |p: *mut f32, from: usize| unsafe {
            std::slice::from_raw_parts(p.add(from * c) as *const f32, (rows - from) * c)
        };
        let mut summed: Option<usize> = None;
        for branch in &self.branches {
            let mut left: usize = branch.iter().flatten().map(PackedConv1d::reach).sum();
            // The step's input, `None` for the chunk's input, else `steps[j]`, and the rows of
            // it that hold values.
            let (mut current, mut current_rows): (Option<usize>, Range<usize>) = (None, 0..rows);
            for (s, step) in branch.iter().enumerate() {
                let residual = current.map_or(input, |j| steps[j]);
                let (mut read, mut read_rows) = (residual, current_rows.clone());
                let mut inner_at: Option<usize> = None;
                for (i, conv) in step.iter().enumerate() {
                    left -= conv.reach();
                    let span = wanted.start.saturating_sub(left)..(wanted.end + left).min(rows);
                    // Every buffer is seen from the first row `read` holds: rows before it and
                    // past its last read as zero, never as what an earlier chunk left there
                    // (Winograd mixes a tile's inputs, so those would reach the outputs in
                    // their rounding).
                    let from = read_rows.start;
                    let (target, residuals) = if i + 1 < step.len() {
                        let j = inner_at.map_or(0, |j| 1 - j);
                        inner_at = Some(j);
                        (inner[j], [None, None])
                    } else if s + 1 == branch.len() {
                        let j = summed.map_or(0, |j| 1 - j);
                        let sum = summed.map(|k| view(sums[k], from));
                        summed = Some(j);
                        (sums[j], [Some(view(residual, from)), sum])
                    } else {
                        let j = current.map_or(0, |j| 1 - j);
                        current = Some(j);
                        current_rows = span.clone();
                        (steps[j], [Some(view(residual, from)), None])
                    };
                    let x = &view(read, from)[..read_rows.len() * c];
                    let local = span.start - from..span.end - from;
                    // SAFETY: `target` is a buffer of `rows · c` that this conv does not read;
                    // `local` lies within it from row `from`.
                    unsafe {
                        let y = target.add(from * c);
                        conv.run_rows_channels_last(x, read_rows.len(), local, residuals, y)
                    };
                    (read, read_rows) = (target, span);
                }
            }
        }
        let sum = summed.map_or(input, |j| sums[j]);
        let (src, n) = (sum.wrapping_add(wanted.start * c), wanted.len());
        // SAFETY: columns `out` of y belong to this chunk.
        unsafe { transpose_strided(src, c, y.add(out.start), len, n, c) };
    }
}

impl CustomOp1 for ResidualStage {
    fn name(&self) -> &'static str {
        "ferrovox-residual-stage"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        if !super::direct::cpu_has_avx512f() {
            candle_core::bail!("{op}: needs AVX-512, which this CPU lacks");
        }
        let (batch, channels, len) = layout.shape().dims3()?;
        if channels != self.channels {
            candle_core::bail!("{op}: {channels} channels, the stage has {}", self.channels);
        }
        let x = super::contiguous_f32(op, storage, layout)?;
        let mut out = super::uninit_vec(batch * channels * len);
        let dst = SendPtr(out.as_mut_ptr() as *mut f32);
        let chunk = self.chunk_len(batch, len);
        let per_item = len.div_ceil(chunk);
        (0..batch * per_item).into_par_iter().for_each(|job| {
            let (item, t0) = (job / per_item, (job % per_item) * chunk);
            let item_len = channels * len;
            let x = &x[item * item_len..(item + 1) * item_len];
            // SAFETY: AVX-512F was checked above; each job writes columns [t0, t1) of its own
            // item only.
            #[cfg(target_arch = "x86_64")]
            BUFFERS.with(|b| unsafe {
                let y = dst.get().add(item * item_len);
                self.chunk(x, len, t0..(t0 + chunk).min(len), y, &mut b.borrow_mut());
            });
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (x, t0, &dst);
        });
        // SAFETY: the chunks wrote every column of every row of every item.
        let out = unsafe { super::assume_init(out) };
        Ok((CpuStorage::F32(out), Shape::from((batch, channels, len))))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    fn conv(c: usize, k: usize, d: usize, slope: Option<f32>) -> PackedConv1d {
        let dev = Device::Cpu;
        let w =
            (Tensor::randn(0f32, 1., (c, c, k), &dev).unwrap() / ((c * k) as f64).sqrt()).unwrap();
        let b = Tensor::randn(0f32, 0.1, c, &dev).unwrap();
        let mut op = PackedConv1d::new(&w, Some(&b), d * (k - 1) / 2, d).unwrap();
        if let Some(s) = slope {
            op = op.with_input_leaky_relu(s);
        }
        op.with_channels_last(true, true)
            .expect("a shape Winograd runs")
    }

    /// The same branches conv by conv over the whole input, channels-last between the
    /// transposes: the path the stage replaces.
    fn conv_by_conv(branches: &[Vec<Step>], x: &Tensor) -> Tensor {
        let x = x.apply_op1(super::super::ToChannelsLast).unwrap();
        let mut sum: Option<Tensor> = None;
        for branch in branches {
            let mut current = x.clone();
            for (s, step) in branch.iter().enumerate() {
                let mut h = current.clone();
                for (i, conv) in step.iter().enumerate() {
                    h = if i + 1 < step.len() {
                        h.apply_op1(conv.clone()).unwrap()
                    } else if s + 1 == branch.len() && sum.is_some() {
                        let total = sum.as_ref().unwrap();
                        h.apply_op3(&current, total, conv.clone()).unwrap()
                    } else {
                        h.apply_op2(&current, conv.clone()).unwrap()
                    };
                }
                current = h;
            }
            sum = Some(current);
        }
        sum.unwrap()
            .apply_op1(super::super::ToChannelsFirst)
            .unwrap()
    }

    /// Chunked, the stage matches the conv-by-conv path within Winograd's rounding (its tiles
    /// start where each chunk's span does, so sums round differently), for HiFi-GAN's two
    /// residual block kinds, over batches and lengths shorter than a halo, one chunk, and
    /// many. A wrong halo or span would put whole outputs off, far above the bound. A call
    /// gives the same bits whatever ran before it.
    #[test]
    fn chunks_match_conv_by_conv() {
        if !super::super::direct::cpu_has_avx512f() {
            return;
        }
        let dev = Device::Cpu;
        for (c, len, batch) in [(32, 9000, 1), (64, 700, 2), (32, 40, 1), (32, 3, 2)] {
            // Piper medium's ResBlock2: one conv per step, dilations (1, 2), (2, 6), (3, 12).
            let kind2: Vec<Vec<Step>> = [(3, [1, 2]), (5, [2, 6]), (7, [3, 12])]
                .into_iter()
                .map(|(k, ds)| ds.map(|d| vec![conv(c, k, d, Some(0.1))]).to_vec())
                .collect();
            // MMS's ResBlock1: a dilated conv then a plain one per step.
            let kind1: Vec<Vec<Step>> = [(3, [1, 3, 5]), (11, [1, 3, 5])]
                .into_iter()
                .map(|(k, ds)| {
                    ds.map(|d| vec![conv(c, k, d, Some(0.1)), conv(c, k, 1, Some(0.1))])
                        .to_vec()
                })
                .collect();
            for branches in [kind2, kind1] {
                let stage = ResidualStage::new(branches.clone()).unwrap();
                let x = Tensor::randn(0f32, 1., (batch, c, len), &dev).unwrap();
                let ours = x.apply_op1(stage.clone()).unwrap();
                // What a chunk leaves in its buffers does not reach the next call's outputs.
                let other =
                    (Tensor::randn(0f32, 1., (batch, c, len), &dev).unwrap() * 1e6).unwrap();
                other.apply_op1(stage.clone()).unwrap();
                let again = x.apply_op1(stage).unwrap();
                let drift = super::super::max_abs_diff(&ours, &again);
                assert_eq!(
                    drift, 0.0,
                    "c{c} len{len} b{batch}: repeat differs by {drift}"
                );
                let theirs = conv_by_conv(&branches, &x);
                let scale = theirs
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                let err = super::super::max_abs_diff(&ours, &theirs) / scale.max(1.0);
                eprintln!("c{c} len{len} b{batch}: {err:.2e}");
                assert!(err < 1e-5, "c{c} len{len} b{batch}: {err}");
            }
        }
    }

    #[test]
    fn refuses_convs_it_cannot_chain() {
        if !super::super::direct::cpu_has_avx512f() {
            return;
        }
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1., (32, 32, 3), &dev).unwrap();
        let channels_first = PackedConv1d::new(&w, None, 1, 1).unwrap();
        assert!(ResidualStage::new(vec![vec![vec![channels_first]]]).is_none());
        let shortening = PackedConv1d::new(&w, None, 0, 1)
            .unwrap()
            .with_channels_last(true, true)
            .unwrap();
        assert!(ResidualStage::new(vec![vec![vec![shortening]]]).is_none());
        assert!(ResidualStage::new(vec![]).is_none());
    }
}
