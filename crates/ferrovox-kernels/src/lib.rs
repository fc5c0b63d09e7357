//! ferrovox's own compute kernels, as Candle custom ops, where Candle's are slow for speech
//! models: the convolutions, activations and norms of vocoders and flows.
//!
//! This crate is a leaf: it depends on Candle, `gemm` and rayon, nothing of ferrovox, and has no
//! notion of which device was chosen or how the pools are tuned. `ferrovox-device` sits above it
//! (it preloads the CUDA modules at start); models do not call these ops directly but through
//! `ferrovox-layers`, whose `Conv1d` picks the op for a layer's shape and device.
//!
//! | op | device | path it takes |
//! |---|---|---|
//! | [`PackedConv1d`] | CPU, f32 | weight packed once for the one path this CPU runs: Winograd (`winograd.rs`, AVX-512, 3–12 taps where the shape suits it), the direct register-blocked microkernel (`direct.rs`, AVX-512), else one GEMM per tap over shifted views of the input, tiled over time; optional input leaky ReLU, residual and running-sum adds fused, channels-last in/out for a stage |
//! | [`PackedConvTranspose1d`] | CPU, f32 | as a regular conv on Winograd in polyphase form where the shape allows, else one strided-output GEMM per tap |
//! | [`ResidualStage`] | CPU, f32 | a HiFi-GAN stage's residual blocks chunk by chunk, each chunk transposed channels-last once and run through every conv in cache |
//! | [`DepthwiseConv1d`] | CPU, f32 | one pass over the data for groups = channels |
//! | [`Tanh`], [`GatedTanh`], [`ChannelNorm`] | CPU, f32 | vectorised one-pass element-wise and channel-norm (+GELU) ops |
//! | [`ToChannelsLast`], [`ToChannelsFirst`] | CPU, f32 | blocked transposes between the two layouts |
//! | [`CudaConv1d`] | CUDA, f32 | `cuda/conv1d.cu`: implicit GEMM on tensor cores (TF32, or three TF32 products for f32 accuracy), leaky ReLU, bias and residuals fused; also a transposed conv's polyphase form |
//! | [`CudaSplineInverse`] | CUDA, f32 | `cuda/spline.cu`: VITS's inverse rational-quadratic spline |
//! | [`cuda_decode`] | CUDA, f32 / bf16 | `cuda/decode.cu`: a decoder step's RoPE + cache write, one-query attention over the cache, SwiGLU, residual add + RMS norm, each one kernel |
//! | [`few_rows_matmul`] | CPU, f32 | `x · Wᵀ` for up to 8 rows (a decoder step) against a torch-layout weight read in place, AVX-512 where present: no packing of the weight per call |
//! | [`PackedRows`] | CPU, f32 activations | the same product against a weight packed once as bf16 (widened in registers) or int8 (a scale per 32 weights; activations quantized alike, integer dot products on AVX-512 VNNI): half or under a third of the bytes a step reads |
//! | [`Bf16Panels`] | CPU, f32 in and out | a product on bf16-rounded inputs with f32 sums (AVX-512 BF16's `vdpbf16ps`, twice FMA's multiply-adds): a weight packed once, activations rounded as they come; for flows' and prefills' large products where the stated error allows |
//! | [`GemmConv1d`], [`GemmConvTranspose1d`] | any | Candle ops only: the batch as one GEMM over stacked shifted views (no uncoalesced unfold) |
//!
//! Candle's own CPU `conv1d` unfolds the input into a `K`-times larger buffer with a scalar loop,
//! runs one GEMM and transposes the result, also scalar: for HiFi-GAN's long, narrow activations
//! most of its time goes to the unfold and the transpose, which these ops avoid. Each op has an
//! environment switch (`FERROVOX_CPU_KERNELS=0`, `FERROVOX_GEMM_CONV=0`, ...) to measure it
//! against what it replaces.

mod activations;
mod attention;
mod bf16_gemm;
mod channel_norm;
pub mod compare;
mod conv1d;
mod conv_transpose1d;
mod cpu;
mod cuda_conv1d;
pub mod cuda_decode;
#[cfg(ferrovox_cuda_kernels)]
mod cuda_module;
mod cuda_spline;
mod depthwise;
mod direct;
mod few_rows;
mod gemm_conv1d;
mod gemm_conv_transpose1d;
mod layout;
mod packed_rows;
mod residual_stage;
mod winograd;
#[cfg(target_arch = "x86_64")]
mod winograd_avx512;

pub use activations::{Activation, GatedTanh, Snake, Tanh};
pub use attention::CpuSelfAttention;
pub use bf16_gemm::{available as bf16_products_available, Bf16Panels};
pub use channel_norm::ChannelNorm;
pub use conv1d::PackedConv1d;
pub use conv_transpose1d::PackedConvTranspose1d;
pub use cpu::{cpu_features, CpuFeatures};
pub use cuda_conv1d::{ConvPipeline, CudaConv1d};
pub use cuda_spline::CudaSplineInverse;
pub use depthwise::DepthwiseConv1d;
pub use direct::available as direct_conv_available;
pub use few_rows::{few_rows_matmul, MAX_ROWS as FEW_ROWS_MAX};
pub use gemm_conv1d::GemmConv1d;
pub use gemm_conv_transpose1d::GemmConvTranspose1d;
pub use layout::{ToChannelsFirst, ToChannelsLast};
pub use packed_rows::{int8_activations, PackedRows, RowFormat, INT8_BLOCK};
pub use residual_stage::{ResidualStage, Step};

/// Loads ferrovox's own CUDA kernel modules on `device` (`ferrovox_device::preload_kernels` calls it at start).
#[cfg(feature = "cuda")]
pub fn preload_cuda(device: &candle_core::Device) -> candle_core::Result<()> {
    #[cfg(ferrovox_cuda_kernels)]
    if let candle_core::Device::Cuda(dev) = device {
        for fatbin in cuda_module::FATBINS {
            cuda_module::module(dev, fatbin)?;
        }
    }
    let _ = device;
    Ok(())
}

/// Whether ferrovox's CUDA kernel file `cuda/<name>.cu` is loaded on `device`, loading it on
/// first use: false off CUDA and in builds without the kernels; a driver that refuses it is
/// logged, and the models keep Candle's ops.
fn cuda_kernels_loaded(device: &candle_core::Device, name: &str) -> bool {
    #[cfg(ferrovox_cuda_kernels)]
    if let candle_core::Device::Cuda(dev) = device {
        return match cuda_module::module_named(dev, name) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(
                    "ferrovox's CUDA kernels `{name}` did not load, using Candle's ops: {e}"
                );
                false
            }
        };
    }
    let _ = (device, name);
    false
}

/// Whether the environment switch `name` is set to off (`0`, `false`, `off` or `no`): each
/// kernel has one, to measure it against what it replaces.
fn switched_off(name: &str) -> bool {
    matches!(
        std::env::var(name).as_deref(),
        Ok("0" | "false" | "off" | "no")
    )
}

/// Whether models may run a stage of convolutions channels-last end to end (on unless
/// `FERROVOX_CPU_CHANNELS_LAST=0`, which exists to measure it).
pub fn channels_last_enabled() -> bool {
    !switched_off("FERROVOX_CPU_CHANNELS_LAST")
}

/// Whether models should use these kernels on the CPU: on unless `FERROVOX_CPU_KERNELS=0`
/// (the switch exists to measure them against Candle's own ops).
pub fn enabled() -> bool {
    !switched_off("FERROVOX_CPU_KERNELS")
}

/// Whether GPU models should run convolutions as `GemmConv1d`: on unless
/// `FERROVOX_GEMM_CONV=0` (the switch exists to measure it against Candle's op), or the build
/// has cuDNN, whose implicit-GEMM convolutions need no materialised unfold.
pub fn gemm_conv_enabled() -> bool {
    !cfg!(feature = "cudnn") && !switched_off("FERROVOX_GEMM_CONV")
}

/// Whether GPU models should run transposed convolutions as `GemmConvTranspose1d`: on unless
/// `FERROVOX_GEMM_CONV_TRANSPOSE=0` (the switch exists to measure it against Candle's op).
pub fn gemm_conv_transpose_enabled() -> bool {
    !switched_off("FERROVOX_GEMM_CONV_TRANSPOSE")
}

/// An f32 input as a contiguous slice.
fn contiguous_f32<'a>(
    op: &str,
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
) -> candle_core::Result<&'a [f32]> {
    let candle_core::CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op} takes f32 input");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op} takes a contiguous input");
    };
    Ok(&data[start..end])
}

/// A `[batch, channels, len]` f32 input as a contiguous slice, checked against the channels
/// the kernel `op` was built for.
fn f32_input<'a>(
    op: &str,
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
    channels: usize,
) -> candle_core::Result<(&'a [f32], usize, usize)> {
    let (batch, found, len) = layout.shape().dims3()?;
    if found != channels {
        candle_core::bail!("{op}: {found} input channels, weight expects {channels}");
    }
    Ok((contiguous_f32(op, storage, layout)?, batch, len))
}

/// The bias as f32 values, zeros when there is none.
fn bias_values(
    bias: Option<&candle_core::Tensor>,
    channels: usize,
) -> candle_core::Result<std::sync::Arc<[f32]>> {
    Ok(match bias {
        Some(b) => b
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?
            .into(),
        None => vec![0.0; channels].into(),
    })
}

/// An output buffer of `len` values that the kernel writes in full before reading: zeroing it
/// first would cost a pass over memory (and, for fresh pages, the page clearing twice).
fn uninit_vec(len: usize) -> Vec<std::mem::MaybeUninit<f32>> {
    let mut v = Vec::with_capacity(len);
    v.resize_with(len, std::mem::MaybeUninit::uninit);
    v
}

/// The buffer once every element has been written.
///
/// # Safety
/// Every element must have been initialised.
unsafe fn assume_init(v: Vec<std::mem::MaybeUninit<f32>>) -> Vec<f32> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: MaybeUninit<f32> has f32's layout; the caller vouches for initialisation.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr() as *mut f32, v.len(), v.capacity()) }
}

/// A raw pointer that may cross threads: the kernels hand each task a disjoint region.
#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer; a method so closures capture the wrapper, not the raw field.
    fn get(&self) -> *mut T {
        self.0
    }
}

/// `dst[m×n] += lhs[m×k] · rhs[k×n]`, all row-major with the given row strides, one thread.
///
/// # Safety
/// The pointers must be valid for the extents the strides and sizes describe, and `dst` must
/// not alias the inputs.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_acc(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    dst_cs: isize,
    lhs: *const f32,
    lhs_rs: isize,
    lhs_cs: isize,
    rhs: *const f32,
    rhs_rs: isize,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            true,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            1,
            rhs_rs,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Largest absolute difference between two tensors of one shape, for the kernels' tests.
#[cfg(test)]
fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    compare::max_abs_diff(a, b).expect("two f32 tensors of one shape")
}

/// A random input `[batch, cin, len]`, weight `[cout, cin, k]` and optional bias, with Candle's
/// own `conv1d` (plus bias) of them as the reference, for the kernels' tests.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
fn conv1d_case(
    batch: usize,
    cin: usize,
    cout: usize,
    k: usize,
    len: usize,
    padding: usize,
    dilation: usize,
    bias: bool,
) -> (
    candle_core::Tensor,
    candle_core::Tensor,
    Option<candle_core::Tensor>,
    candle_core::Tensor,
) {
    use candle_core::{Device, Tensor};
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (batch, cin, len), &dev).unwrap();
    let w = Tensor::randn(0f32, 0.3, (cout, cin, k), &dev).unwrap();
    let b = bias.then(|| Tensor::randn(0f32, 0.3, cout, &dev).unwrap());
    let mut reference = x.conv1d(&w, padding, 1, dilation, 1).unwrap();
    if let Some(b) = &b {
        reference = reference
            .broadcast_add(&b.reshape((1, cout, 1)).unwrap())
            .unwrap();
    }
    (x, w, b, reference)
}
