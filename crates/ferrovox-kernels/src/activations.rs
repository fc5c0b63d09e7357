//! Vectorised `tanh`, WaveNet's gate `tanh(a) · sigmoid(b)`, exact GELU and Mish on the CPU.
//!
//! Candle's CPU `tanh` calls libm's scalar `tanhf` per element, its `gelu_erf` libm's scalar
//! `erff`, the gate costs three passes (tanh, sigmoid, product) plus two buffers, and Mish
//! (`x · tanh(softplus(x))`) four. Here `exp` is a branch-free polynomial the compiler
//! vectorises, and each activation is one pass.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};
use rayon::prelude::*;

/// Elements per parallel job: small enough to split a short activation over the pool, large
/// enough that a job outweighs its scheduling.
const CHUNK: usize = 16_384;

/// `e^x`, relative error below 2e-7 on [−87, 88] (Cephes' polynomial after a two-step
/// Cody–Waite reduction); inputs beyond are clamped, so the result saturates instead of
/// overflowing.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest by adding 1.5·2^23: the integer then sits in the low mantissa bits,
    // read without a float-to-int conversion (which would not vectorise).
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let n_bits = t.to_bits().wrapping_sub(MAGIC.to_bits());
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_66;
    let p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    f32::from_bits(e.to_bits().wrapping_add(n_bits << 23))
}

/// `tanh(x)` within 2e-7 absolute.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    // tanh rounds to ±1 in f32 beyond |x| = 10; clamping keeps exp(2x) finite.
    let x = x.clamp(-10.0, 10.0);
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// `sigmoid(x)` within 2e-7 absolute.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `erf(x)` within 1e-6 absolute (Abramowitz & Stegun 7.1.26, 1.5e-7, evaluated in f32 over
/// the vectorised `exp`).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let p = 1.061_405_4;
    let p = p * t - 1.453_152_1;
    let p = p * t + 1.421_413_7;
    let p = p * t - 0.284_496_74;
    let p = p * t + 0.254_829_6;
    let y = 1.0 - p * t * exp(-z * z);
    y.copysign(x)
}

/// Exact (erf) GELU, torch's `GELU()`: `x/2 · (1 + erf(x/√2))`.
#[inline(always)]
pub(crate) fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// The tanh approximation of GELU (transformers' `gelu_new`, Candle's `gelu`):
/// `x/2 · (1 + tanh(√(2/π) · x · (1 + 0.044715 x²)))`.
#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + tanh(SQRT_TWO_OVER_PI * x * (1.0 + 0.044_715 * x * x)))
}

/// Mish, `x · tanh(softplus(x))`: with `e = eˣ`, `tanh(ln(1 + e)) = n / (n + 2)` for
/// `n = e·(e + 2)`; past `x = 20` that is 1 in f32.
#[inline(always)]
fn mish(x: f32) -> f32 {
    let e = exp(x.min(20.0));
    let n = e * (e + 2.0);
    x * (n / (n + 2.0))
}

/// `sin²(x)` within 2e-7 absolute for `|x| < 1e5`: `x` less the nearest multiple of π
/// (Cody–Waite in three parts; `sin²` has period π, so the multiple's parity does not matter),
/// then the sine's Taylor series to `r¹¹` on `[−π/2, π/2]` (truncation below 6e-8). Clamped to
/// `[0, 1]`, so even inputs past the reduction's range give a bounded result.
#[inline(always)]
fn sin_squared(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::FRAC_1_PI + MAGIC) - MAGIC;
    let r = x - n * 3.140_625 - n * 9.675_026e-4 - n * 1.509_958e-7;
    let r2 = r * r;
    let p = -2.505_210_8e-8;
    let p = p * r2 + 2.755_731_9e-6;
    let p = p * r2 - 1.984_127e-4;
    let p = p * r2 + 8.333_333e-3;
    let p = p * r2 - 0.166_666_67;
    let sin = r + r * r2 * p;
    (sin * sin).clamp(0.0, 1.0)
}

#[inline(always)]
fn snake_slice(out: &mut [f32], x: &[f32], alpha: f32, inv_alpha: f32) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v + inv_alpha * sin_squared(alpha * v);
    }
}

#[inline(always)]
fn map_slice(out: &mut [f32], x: &[f32], f: impl Fn(f32) -> f32) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = f(v);
    }
}

#[inline(always)]
fn tanh_slice(out: &mut [f32], x: &[f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = tanh(v);
    }
}

#[inline(always)]
fn gate_slice(out: &mut [f32], a: &[f32], b: &[f32]) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = tanh(a) * sigmoid(b);
    }
}

/// The slice loops compiled for AVX-512: the default x86-64 target vectorises them to SSE2's
/// 4 lanes only.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub unsafe fn tanh_slice(out: &mut [f32], x: &[f32]) {
        super::tanh_slice(out, x)
    }

    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub unsafe fn gate_slice(out: &mut [f32], a: &[f32], b: &[f32]) {
        super::gate_slice(out, a, b)
    }

    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub unsafe fn gelu_erf_slice(out: &mut [f32], x: &[f32]) {
        super::map_slice(out, x, super::gelu_erf)
    }

    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub unsafe fn gelu_tanh_slice(out: &mut [f32], x: &[f32]) {
        super::map_slice(out, x, super::gelu_tanh)
    }

    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub unsafe fn mish_slice(out: &mut [f32], x: &[f32]) {
        super::map_slice(out, x, super::mish)
    }

    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    pub unsafe fn snake_slice(out: &mut [f32], x: &[f32], alpha: f32, inv_alpha: f32) {
        super::snake_slice(out, x, alpha, inv_alpha)
    }
}

fn snake_widest(out: &mut [f32], x: &[f32], alpha: f32, inv_alpha: f32) {
    #[cfg(target_arch = "x86_64")]
    if super::direct::cpu_has_avx512f() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { avx512::snake_slice(out, x, alpha, inv_alpha) };
    }
    snake_slice(out, x, alpha, inv_alpha)
}

/// BigVGAN's Snake on `[batch, channels, len]`: `x + inv_alpha[c] · sin²(alpha[c] · x)`, one
/// pass (Candle's ops take five, with libm's scalar `sinf`). The caller gives `inv_alpha` as its
/// model defines it (HiFT: `1 / (α + 1e-9)`).
#[derive(Debug, Clone)]
pub struct Snake {
    /// Shared, so the op a layer clones for each call copies no weights.
    alpha: std::sync::Arc<[f32]>,
    inv_alpha: std::sync::Arc<[f32]>,
}

impl Snake {
    /// Per-channel `alpha` and `inv_alpha`, of one length.
    pub fn new(alpha: Vec<f32>, inv_alpha: Vec<f32>) -> Result<Self> {
        if alpha.len() != inv_alpha.len() {
            candle_core::bail!(
                "ferrovox-snake: {} alphas and {} inverse alphas",
                alpha.len(),
                inv_alpha.len()
            );
        }
        Ok(Self {
            alpha: alpha.into(),
            inv_alpha: inv_alpha.into(),
        })
    }
}

impl CustomOp1 for Snake {
    fn name(&self) -> &'static str {
        "ferrovox-snake"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = super::contiguous_f32(self.name(), storage, layout)?;
        let (_, channels, len) = layout.shape().dims3()?;
        if channels != self.alpha.len() {
            candle_core::bail!(
                "ferrovox-snake: {channels} channels, {} alphas",
                self.alpha.len()
            );
        }
        let mut out = vec![0f32; x.len()];
        if len > 0 {
            out.par_chunks_mut(len)
                .zip(x.par_chunks(len))
                .enumerate()
                .for_each(|(row, (o, x))| {
                    let c = row % channels;
                    snake_widest(o, x, self.alpha[c], self.inv_alpha[c]);
                });
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// The element-wise activations with a one-pass CPU kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU (`gelu_erf`, torch's default `GELU()`).
    GeluErf,
    /// GELU's tanh approximation (`gelu_new`, Candle's `gelu`).
    GeluTanh,
    /// `nn.Mish`.
    Mish,
}

impl Activation {
    fn widest(self, out: &mut [f32], x: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        if super::direct::cpu_has_avx512f() {
            // SAFETY: the CPU has the features the functions are compiled for.
            return unsafe {
                match self {
                    Self::GeluErf => avx512::gelu_erf_slice(out, x),
                    Self::GeluTanh => avx512::gelu_tanh_slice(out, x),
                    Self::Mish => avx512::mish_slice(out, x),
                }
            };
        }
        match self {
            Self::GeluErf => map_slice(out, x, gelu_erf),
            Self::GeluTanh => map_slice(out, x, gelu_tanh),
            Self::Mish => map_slice(out, x, mish),
        }
    }
}

impl CustomOp1 for Activation {
    fn name(&self) -> &'static str {
        match self {
            Self::GeluErf => "ferrovox-gelu-erf",
            Self::GeluTanh => "ferrovox-gelu-tanh",
            Self::Mish => "ferrovox-mish",
        }
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = super::contiguous_f32(self.name(), storage, layout)?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(o, x)| self.widest(o, x));
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

fn tanh_widest(out: &mut [f32], x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::direct::cpu_has_avx512f() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { avx512::tanh_slice(out, x) };
    }
    tanh_slice(out, x)
}

fn gate_widest(out: &mut [f32], a: &[f32], b: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::direct::cpu_has_avx512f() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { avx512::gate_slice(out, a, b) };
    }
    gate_slice(out, a, b)
}

/// Element-wise `tanh`.
#[derive(Debug, Clone, Copy)]
pub struct Tanh;

impl CustomOp1 for Tanh {
    fn name(&self) -> &'static str {
        "ferrovox-tanh"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = super::contiguous_f32("ferrovox-tanh", storage, layout)?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(o, x)| tanh_widest(o, x));
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// WaveNet's gate on `[batch, 2·h, len]`: `tanh(x[:, ..h]) · sigmoid(x[:, h..])`, `[batch, h, len]`.
#[derive(Debug, Clone, Copy)]
pub struct GatedTanh;

impl CustomOp1 for GatedTanh {
    fn name(&self) -> &'static str {
        "ferrovox-gated-tanh"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = super::contiguous_f32("ferrovox-gated-tanh", storage, layout)?;
        let (batch, channels, len) = layout.shape().dims3()?;
        if channels % 2 != 0 {
            candle_core::bail!("ferrovox-gated-tanh: {channels} channels is not an even split");
        }
        let half = channels / 2;
        let plane = half * len;
        let mut out = vec![0f32; batch * plane];
        if plane > 0 {
            out.par_chunks_mut(plane).enumerate().for_each(|(item, o)| {
                let x = &x[item * channels * len..(item + 1) * channels * len];
                let (a, b) = x.split_at(plane);
                o.par_chunks_mut(CHUNK)
                    .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
                    .for_each(|(o, (a, b))| gate_widest(o, a, b));
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((batch, half, len))))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    #[test]
    fn exp_tanh_and_sigmoid_match_libm() {
        let mut worst = [0f32; 3];
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4;
            let rel = (exp(x) - x.exp()).abs() / x.exp();
            worst[0] = worst[0].max(rel);
            worst[1] = worst[1].max((tanh(x) - x.tanh()).abs());
            worst[2] = worst[2].max((sigmoid(x) - 1.0 / (1.0 + (-x).exp())).abs());
        }
        assert!(worst[0] < 3e-7, "exp relative error {}", worst[0]);
        assert!(worst[1] < 3e-7, "tanh error {}", worst[1]);
        assert!(worst[2] < 3e-7, "sigmoid error {}", worst[2]);
        assert_eq!(tanh(50.0), 1.0);
        assert_eq!(tanh(-50.0), -1.0);
        assert!(exp(-200.0) >= 0.0 && exp(200.0).is_finite());
    }

    #[test]
    fn gate_matches_candle_composition() {
        let dev = Device::Cpu;
        // One item longer than a chunk, and a batch of items shorter than one.
        for (b, h, len) in [(1, 8, 5000), (3, 4, 37)] {
            let x = Tensor::randn(0f32, 3., (b, 2 * h, len), &dev).unwrap();
            let reference = (x.narrow(1, 0, h).unwrap().tanh().unwrap()
                * candle_nn::ops::sigmoid(&x.narrow(1, h, h).unwrap()).unwrap())
            .unwrap();
            let ours = x.apply_op1(GatedTanh).unwrap();
            let err = super::super::max_abs_diff(&ours, &reference);
            assert!(err < 1e-6, "gate b{b} h{h} len{len}: {err}");
        }
        let x = Tensor::randn(0f32, 3., (2, 3, 20_000), &dev).unwrap();
        let err = super::super::max_abs_diff(&x.apply_op1(Tanh).unwrap(), &x.tanh().unwrap());
        assert!(err < 1e-6, "tanh: {err}");
    }

    #[test]
    fn erf_gelu_and_mish_match_libm() {
        let mut worst = [0f32; 3];
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4;
            let exact = libm_erf(x as f64);
            worst[0] = worst[0].max((erf(x) as f64 - exact).abs() as f32);
            let g = 0.5 * x as f64 * (1.0 + libm_erf(x as f64 / 2f64.sqrt()));
            worst[1] = worst[1].max((gelu_erf(x) as f64 - g).abs() as f32);
            let m = x as f64 * (x as f64).exp().ln_1p().tanh();
            worst[2] = worst[2].max((mish(x) as f64 - m).abs() as f32 / (1.0 + x.abs()));
        }
        assert!(worst[0] < 1e-6, "erf error {}", worst[0]);
        assert!(worst[1] < 1e-6, "gelu error {}", worst[1]);
        assert!(
            worst[2] < 1e-6,
            "mish error (relative to 1 + |x|) {}",
            worst[2]
        );
        for x in [30.0f32, 100.0, 1e6] {
            assert_eq!(mish(x), x);
            assert_eq!(gelu_erf(x), x);
        }
        assert_eq!(gelu_erf(-30.0), 0.0);
        assert!(mish(-100.0).abs() < 1e-30);
    }

    /// erf in f64 (Candle's own, as its `gelu_erf` reference).
    fn libm_erf(x: f64) -> f64 {
        candle_core::cpu::erf::erf_f64(x)
    }

    #[test]
    fn activations_match_candle_composition() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 4., (2, 3, 20_000), &dev).unwrap();
        let gelu = x.apply_op1(Activation::GeluErf).unwrap();
        let err = super::super::max_abs_diff(&gelu, &x.gelu_erf().unwrap());
        assert!(err < 2e-6, "gelu_erf: {err}");
        let gelu = x.apply_op1(Activation::GeluTanh).unwrap();
        let err = super::super::max_abs_diff(&gelu, &x.gelu().unwrap());
        assert!(err < 2e-6, "gelu (tanh): {err}");
        let mish = x.apply_op1(Activation::Mish).unwrap();
        let reference = (&x
            * x.exp()
                .unwrap()
                .affine(1.0, 1.0)
                .unwrap()
                .log()
                .unwrap()
                .tanh()
                .unwrap())
        .unwrap();
        let err = super::super::max_abs_diff(&mish, &reference);
        assert!(err < 2e-6, "mish: {err}");
    }

    #[test]
    fn sin_squared_matches_libm() {
        let mut worst = 0f64;
        for i in -1_000_000..=1_000_000 {
            let x = i as f32 * 1e-3;
            let exact = (x as f64).sin().powi(2);
            worst = worst.max((sin_squared(x) as f64 - exact).abs());
        }
        assert!(worst < 5e-7, "sin² error {worst}");
        for x in [1e9f32, -3e12, f32::MAX] {
            assert!((0.0..=1.0).contains(&sin_squared(x)), "{x}");
        }
    }

    #[test]
    fn snake_matches_candle_composition() {
        let dev = Device::Cpu;
        let (b, c, len) = (2, 5, 3000);
        let x = Tensor::randn(0f32, 3., (b, c, len), &dev).unwrap();
        let alpha: Vec<f32> = (0..c).map(|i| 0.2 + 0.7 * i as f32).collect();
        let inv: Vec<f32> = alpha.iter().map(|a| 1.0 / (a + 1e-9)).collect();
        let a = Tensor::from_vec(alpha.clone(), (1, c, 1), &dev).unwrap();
        let ia = Tensor::from_vec(inv.clone(), (1, c, 1), &dev).unwrap();
        let reference = (&x
            + x.broadcast_mul(&a)
                .unwrap()
                .sin()
                .unwrap()
                .sqr()
                .unwrap()
                .broadcast_mul(&ia)
                .unwrap())
        .unwrap();
        let ours = x.apply_op1(Snake::new(alpha, inv).unwrap()).unwrap();
        let err = super::super::max_abs_diff(&ours, &reference);
        assert!(err < 2e-6, "snake: {err}");
        let wrong = Snake::new(vec![1.0; 3], vec![1.0; 3]).unwrap();
        assert!(x.apply_op1(wrong).is_err());
        assert!(Snake::new(vec![1.0; 3], vec![1.0; 2]).is_err());
    }

    #[test]
    fn odd_channels_are_refused() {
        let x = Tensor::zeros((1, 3, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(x.apply_op1(GatedTanh).is_err());
    }
}
