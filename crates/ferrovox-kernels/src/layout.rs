//! Channels-first `[b, c, t]` to channels-last `[b, t, c]` and back, for a run of convolutions
//! that hand their activations over channels-last (see [`super::PackedConv1d::with_channels_last`]).

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};
use rayon::prelude::*;

use super::SendPtr;

/// `[b, c, t]` → `[b, t, c]` as a Candle op.
#[derive(Debug, Clone, Copy)]
pub struct ToChannelsLast;

/// `[b, t, c]` → `[b, c, t]` as a Candle op.
#[derive(Debug, Clone, Copy)]
pub struct ToChannelsFirst;

/// Columns per parallel job: 64 KiB of each 16-row block's source stays in L2 per job.
const COLS_PER_JOB: usize = 1024;

/// Transposes each item's `rows × cols` matrix.
fn transposed(
    op: &str,
    storage: &CpuStorage,
    layout: &Layout,
) -> Result<(Vec<f32>, usize, usize, usize)> {
    if !super::direct::cpu_has_avx512f() {
        candle_core::bail!("{op}: needs AVX-512, which this CPU lacks");
    }
    let (batch, rows, cols) = layout.shape().dims3()?;
    let src = super::contiguous_f32(op, storage, layout)?;
    let mut out = super::uninit_vec(batch * rows * cols);
    let dst = SendPtr(out.as_mut_ptr() as *mut f32);
    let per_item = cols.div_ceil(COLS_PER_JOB);
    (0..batch * per_item).into_par_iter().for_each(|job| {
        let (item, c0) = (job / per_item, (job % per_item) * COLS_PER_JOB);
        let c1 = (c0 + COLS_PER_JOB).min(cols);
        let matrix = &src[item * rows * cols..(item + 1) * rows * cols];
        // SAFETY: AVX-512F was checked above; each job writes rows [c0, c1) of its own item's
        // `cols × rows` output only.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            let dst = dst.get().add(item * rows * cols);
            super::winograd_avx512::transpose(matrix, rows, cols, dst, c0, c1);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (matrix, c1, &dst);
    });
    // SAFETY: the jobs wrote every element of every item.
    Ok((unsafe { super::assume_init(out) }, batch, rows, cols))
}

impl CustomOp1 for ToChannelsLast {
    fn name(&self) -> &'static str {
        "ferrovox-to-channels-last"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (out, batch, channels, len) = transposed(self.name(), storage, layout)?;
        Ok((CpuStorage::F32(out), Shape::from((batch, len, channels))))
    }
}

impl CustomOp1 for ToChannelsFirst {
    fn name(&self) -> &'static str {
        "ferrovox-to-channels-first"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (out, batch, len, channels) = transposed(self.name(), storage, layout)?;
        Ok((CpuStorage::F32(out), Shape::from((batch, channels, len))))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    #[test]
    fn round_trips_match_candles_transpose() {
        if !super::super::direct::cpu_has_avx512f() {
            return;
        }
        for (batch, channels, len) in [(1, 32, 5000), (2, 48, 17), (3, 16, 1), (1, 64, 2049)] {
            let x = Tensor::randn(0f32, 1., (batch, channels, len), &Device::Cpu).unwrap();
            let last = x.apply_op1(ToChannelsLast).unwrap();
            let expected = x.transpose(1, 2).unwrap().contiguous().unwrap();
            assert_eq!(last.dims(), expected.dims());
            assert_eq!(super::super::max_abs_diff(&last, &expected), 0.0);
            let back = last.apply_op1(ToChannelsFirst).unwrap();
            assert_eq!(super::super::max_abs_diff(&back, &x), 0.0);
        }
    }
}
