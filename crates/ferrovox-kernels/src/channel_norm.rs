//! Layer norm over the channels of `[batch, channels, len]`, optionally followed by GELU, in
//! one op: VITS's duration predictor normalises channels-first activations, which Candle can
//! only do by transposing them (its fused layer norm wants the normalised axis last, so the
//! strided input falls to eight separate ops), and its `gelu_erf` calls libm's scalar `erf`.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};
use rayon::prelude::*;

use super::activations::gelu_erf;

/// Time steps per parallel job.
const COLUMNS: usize = 256;

/// Normalises columns `[t0, t0 + n)` of one item: `x` and `y` are `channels` rows of `len`.
#[inline(always)]
fn columns(op: &ChannelNorm, x: &[f32], y: *mut f32, len: usize, t0: usize, n: usize) {
    let channels = op.weight.len();
    let mut mean = [0f32; COLUMNS];
    let mut var = [0f32; COLUMNS];
    let (mean, var) = (&mut mean[..n], &mut var[..n]);
    for c in 0..channels {
        for (m, &v) in mean.iter_mut().zip(&x[c * len + t0..c * len + t0 + n]) {
            *m += v;
        }
    }
    let scale = 1.0 / channels as f32;
    mean.iter_mut().for_each(|m| *m *= scale);
    for c in 0..channels {
        let row = &x[c * len + t0..c * len + t0 + n];
        for ((s, &m), &v) in var.iter_mut().zip(mean.iter()).zip(row) {
            *s += (v - m) * (v - m);
        }
    }
    var.iter_mut()
        .for_each(|s| *s = 1.0 / (*s * scale + op.eps).sqrt());
    for c in 0..channels {
        let (w, b) = (op.weight[c], op.bias[c]);
        let row = &x[c * len + t0..c * len + t0 + n];
        // SAFETY: columns [t0, t0 + n) of every row belong to this job.
        let out = unsafe { std::slice::from_raw_parts_mut(y.add(c * len + t0), n) };
        for (((o, &v), &m), &r) in out.iter_mut().zip(row).zip(mean.iter()).zip(var.iter()) {
            let v = (v - m) * r * w + b;
            *o = if op.gelu { gelu_erf(v) } else { v };
        }
    }
}

/// The column loops compiled for AVX-512 (the default x86-64 target gives SSE2's 4 lanes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
unsafe fn columns_avx512(
    op: &ChannelNorm,
    x: &[f32],
    y: *mut f32,
    len: usize,
    t0: usize,
    n: usize,
) {
    columns(op, x, y, len, t0, n)
}

fn columns_widest(op: &ChannelNorm, x: &[f32], y: *mut f32, len: usize, t0: usize, n: usize) {
    #[cfg(target_arch = "x86_64")]
    if super::direct::cpu_has_avx512f() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { columns_avx512(op, x, y, len, t0, n) };
    }
    columns(op, x, y, len, t0, n)
}

/// `LayerNorm` over axis 1 of `[batch, channels, len]` with a per-channel weight and bias,
/// then GELU if asked.
#[derive(Debug, Clone)]
pub struct ChannelNorm {
    weight: std::sync::Arc<[f32]>,
    bias: std::sync::Arc<[f32]>,
    eps: f32,
    gelu: bool,
}

impl ChannelNorm {
    pub fn new(weight: Vec<f32>, bias: Vec<f32>, eps: f64) -> Result<Self> {
        if weight.len() != bias.len() {
            candle_core::bail!(
                "ferrovox-channel-norm: {} weights, {} biases",
                weight.len(),
                bias.len()
            );
        }
        Ok(Self {
            weight: weight.into(),
            bias: bias.into(),
            eps: eps as f32,
            gelu: false,
        })
    }

    /// Applies torch's exact GELU to the normalised values.
    pub fn with_gelu(mut self) -> Self {
        self.gelu = true;
        self
    }
}

impl CustomOp1 for ChannelNorm {
    fn name(&self) -> &'static str {
        "ferrovox-channel-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, batch, len) =
            super::f32_input("ferrovox-channel-norm", storage, layout, self.weight.len())?;
        let channels = self.weight.len();
        let mut out = super::uninit_vec(batch * channels * len);
        let per_item = len.div_ceil(COLUMNS);
        let dst = super::SendPtr(out.as_mut_ptr() as *mut f32);
        (0..batch * per_item).into_par_iter().for_each(|job| {
            let (item, t0) = (job / per_item, (job % per_item) * COLUMNS);
            let n = COLUMNS.min(len - t0);
            let x = &x[item * channels * len..(item + 1) * channels * len];
            // SAFETY: each job writes its own columns of its own item.
            let y = unsafe { dst.get().add(item * channels * len) };
            columns_widest(self, x, y, len, t0, n)
        });
        // SAFETY: the jobs wrote every column of every row of every item.
        let out = unsafe { super::assume_init(out) };
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Module, Tensor};

    use super::*;

    #[test]
    fn gelu_matches_a_series_erf() {
        let mut worst = 0f32;
        for i in -100_000..=100_000 {
            let x = i as f32 * 1e-4;
            let reference =
                0.5 * x as f64 * (1.0 + series_erf(x as f64 / std::f64::consts::SQRT_2));
            worst = worst.max((gelu_erf(x) as f64 - reference).abs() as f32);
        }
        assert!(worst < 5e-7, "gelu error {worst}");
    }

    /// erf in f64 by its Taylor series (|x| ≤ 8 / √2 here, where 80 terms converge).
    fn series_erf(x: f64) -> f64 {
        if x.abs() > 4.0 {
            return x.signum();
        }
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn matches_candle_layer_norm_and_gelu() {
        let dev = Device::Cpu;
        for (b, c, len) in [(1, 192, 700), (3, 8, 5)] {
            let x = (Tensor::randn(0f32, 2., (b, c, len), &dev).unwrap() + 0.5).unwrap();
            let w = Tensor::randn(0f32, 1., c, &dev).unwrap();
            let bias = Tensor::randn(0f32, 1., c, &dev).unwrap();
            let norm = candle_nn::LayerNorm::new(w.clone(), bias.clone(), 1e-5);
            let reference = norm
                .forward(&x.transpose(1, 2).unwrap())
                .unwrap()
                .transpose(1, 2)
                .unwrap();
            let op = ChannelNorm::new(w.to_vec1().unwrap(), bias.to_vec1().unwrap(), 1e-5).unwrap();
            let ours = x.apply_op1(op.clone()).unwrap();
            let err = super::super::max_abs_diff(&ours, &reference.contiguous().unwrap());
            assert!(err < 1e-5, "norm b{b} c{c} len{len}: {err}");
            let ours = x.apply_op1(op.with_gelu()).unwrap();
            let reference = reference.gelu_erf().unwrap();
            let err = super::super::max_abs_diff(&ours, &reference);
            assert!(err < 1e-5, "norm + gelu b{b} c{c} len{len}: {err}");
        }
    }

    #[test]
    fn wrong_channels_are_refused() {
        let op = ChannelNorm::new(vec![1.0; 4], vec![0.0; 4], 1e-5).unwrap();
        let x = Tensor::zeros((1, 3, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(x.apply_op1(op).is_err());
        assert!(ChannelNorm::new(vec![1.0; 4], vec![0.0; 3], 1e-5).is_err());
    }
}
