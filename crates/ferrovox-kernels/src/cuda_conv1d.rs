//! Convolutions on CUDA tensor cores: ferrovox's own kernel (`cuda/conv1d.cu`), an implicit
//! GEMM that stages the input window in shared memory and walks the taps over it, so no
//! unfolded copy of the input is ever written. The leaky ReLU before the conv, the bias, up
//! to two residual adds and the interleaving of a transposed conv's phases all happen inside
//! the one kernel: one launch where Candle's ops take five or more.
//!
//! With TF32 on (Candle's `gemm_reduced_precision_f32`, ferrovox's default on sm80+), the
//! products are TF32; with it off, each operand is split into two TF32 halves and three
//! products restore f32-level error.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

/// Kernel sizes the fatbin is instantiated for.
const TAPS: [usize; 4] = [3, 5, 7, 11];
/// Input channels staged per synchronisation (`CC` in the kernel). On the H100, 8 beat as many
/// as fit in 48 KiB (16 or 32): MMS-TTS's decoder at batch 16 took 35.2 ms against 40.3 ms, and
/// 16-channel stages copied by `cp.async` lost as well.
const STAGE_CHANNELS: usize = 8;

/// How a block gets each stage of weights and input into shared memory
/// (`FERROVOX_CUDA_CONV_PIPELINE`: `weights-async`, the default, `registers` or `sync`).
///
/// MMS-TTS's decoder at batch 16 on the H100: 20.7 ms with `WeightsAsync`, 26.2 ms with
/// `Registers` and 29.1 ms with `Sync` (those two on another machine start); copying the input
/// window by `cp.async` as well, then activating it in place, took 30.4–35.6 ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvPipeline {
    /// Each stage is read when it is needed: every block waits out its loads.
    Sync,
    /// The next stage's input rows are read into registers while this stage's products run;
    /// the weights are read when needed.
    Registers,
    /// `Registers`, and the next stage's weights are copied by `cp.async` into a second
    /// shared-memory buffer while this stage's products run, so no block waits on them.
    WeightsAsync,
}

impl ConvPipeline {
    /// The pipeline `FERROVOX_CUDA_CONV_PIPELINE` asks for; `WeightsAsync` when unset or unknown.
    pub fn from_env() -> Self {
        match std::env::var("FERROVOX_CUDA_CONV_PIPELINE").as_deref() {
            Ok("sync") => Self::Sync,
            Ok("registers") => Self::Registers,
            Ok("weights-async") | Err(_) => Self::WeightsAsync,
            Ok(other) => {
                tracing::warn!(
                    "FERROVOX_CUDA_CONV_PIPELINE={other}: not weights-async, registers or sync; using weights-async"
                );
                Self::WeightsAsync
            }
        }
    }

    /// The suffix of the kernel names built for this pipeline.
    #[cfg_attr(not(ferrovox_cuda_kernels), allow(dead_code))]
    fn suffix(self) -> &'static str {
        match self {
            Self::Sync => "",
            Self::Registers => "_prefetch",
            Self::WeightsAsync => "_prefetch_w",
        }
    }

    /// Weight stages a block holds in shared memory (it always holds one input window).
    fn weight_buffers(self) -> usize {
        match self {
            Self::Sync | Self::Registers => 1,
            Self::WeightsAsync => 2,
        }
    }

    /// Whether the kernel copies weights into shared memory as they are (pre-rounded for TF32).
    #[cfg_attr(not(ferrovox_cuda_kernels), allow(dead_code))]
    fn copies_weights(self) -> bool {
        self == Self::WeightsAsync
    }
}

/// Longest input window a block reads (`COLS · THREADS` in the kernel).
const MAX_WINDOW: usize = 384;
/// Dynamic shared memory a block may use without an opt-in.
const SHARED_LIMIT: usize = 48 * 1024;
/// Dynamic shared memory a block may opt in to: every sm80+ GPU allows 99 KiB.
const OPT_IN_SHARED_LIMIT: usize = 99 * 1024;

/// A stride-1 `torch.nn.Conv1d` (ungrouped) on CUDA, or a HiFi-GAN upsampler rewritten as
/// one (see [`CudaConv1d::transposed`]).
#[derive(Debug, Clone)]
#[cfg_attr(not(ferrovox_cuda_kernels), allow(dead_code))]
pub struct CudaConv1d {
    /// `[out, k, in]`: tap-major.
    weight: Tensor,
    /// `weight` rounded to TF32 once, for the TF32 variants of [`ConvPipeline::WeightsAsync`],
    /// which copy weights straight into shared memory.
    weight_tf32: Tensor,
    bias: Option<Tensor>,
    in_channels: usize,
    /// Output channels of the regular conv; `phases` of them make one row of a transposed one.
    out_channels: usize,
    kernel: usize,
    padding: usize,
    dilation: usize,
    /// Leaky ReLU slope on the input; 1 is none.
    slope: f32,
    phases: usize,
    pipeline: ConvPipeline,
}

/// Reductions (input channels × taps) from which a small grid is left to a GEMM; see
/// [`CudaConv1d::fills_device`].
const LONG_REDUCTION: usize = 512;

/// Fewest blocks a launch with a long reduction should have to run on this kernel
/// (`FERROVOX_CUDA_CONV_MIN_BLOCKS`, default 66, half an H100's SMs).
fn min_blocks() -> usize {
    static MIN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MIN.get_or_init(|| {
        std::env::var("FERROVOX_CUDA_CONV_MIN_BLOCKS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(66)
    })
}

/// Block shape for `out_channels`: 32 channels × 256 samples for narrow layers, else 64 × 128.
#[cfg_attr(not(ferrovox_cuda_kernels), allow(dead_code))]
fn warps_on_channels(out_channels: usize) -> usize {
    if out_channels <= 32 {
        1
    } else {
        2
    }
}

/// Bytes of shared memory one stage of a block takes: (weights, input window).
fn stage_bytes(kernel: usize, dilation: usize, wm: usize, cc: usize) -> (usize, usize) {
    let wp = (kernel * cc + 27) / 32 * 32 + 4;
    let span = (4 / wm) * 64 + (kernel - 1) * dilation;
    let xp = (span + 23) / 32 * 32 + 8;
    (4 * wm * 32 * wp, 4 * cc * xp)
}

/// Rounds every element to TF32 as the kernel's `cvt.rna.tf32.f32` does (to nearest, ties away
/// from zero), so weights staged without conversion give the same products.
fn tf32_rounded(t: &Tensor) -> Result<Tensor> {
    let values: Vec<f32> = t
        .flatten_all()?
        .to_device(&candle_core::Device::Cpu)?
        .to_vec1::<f32>()?
        .into_iter()
        .map(|v| {
            if v.is_finite() {
                f32::from_bits(v.to_bits().wrapping_add(0x1000) & 0xffff_e000)
            } else {
                v
            }
        })
        .collect();
    Tensor::from_vec(values, t.shape(), t.device())
}

impl CudaConv1d {
    /// `weight` `[out, in, k]` and an optional `bias` `[out]`, both f32 on a CUDA device, or
    /// `None` where this kernel does not apply (not CUDA, not f32, a kernel size it is not
    /// built for, no tensor cores, or `FERROVOX_CUDA_CONV=0`).
    pub fn new(
        weight: &Tensor,
        bias: Option<&Tensor>,
        padding: usize,
        dilation: usize,
    ) -> Result<Option<Self>> {
        let (out_channels, in_channels, kernel) = weight.dims3()?;
        if !usable(weight, kernel, dilation) {
            return Ok(None);
        }
        Self::from_tap_major(
            weight.transpose(1, 2)?.contiguous()?,
            bias.cloned(),
            in_channels,
            (out_channels, 1),
            (kernel, padding, dilation),
        )
        .map(Some)
    }

    /// The op over a tap-major weight `[out, k, in]`; `(out_channels, phases)`,
    /// `(kernel, padding, dilation)`.
    fn from_tap_major(
        weight: Tensor,
        bias: Option<Tensor>,
        in_channels: usize,
        (out_channels, phases): (usize, usize),
        (kernel, padding, dilation): (usize, usize, usize),
    ) -> Result<Self> {
        let op = Self {
            weight_tf32: tf32_rounded(&weight)?,
            weight,
            bias,
            in_channels,
            out_channels,
            kernel,
            padding,
            dilation,
            slope: 1.0,
            phases,
            pipeline: ConvPipeline::Sync,
        };
        Ok(op.with_pipeline(ConvPipeline::from_env()))
    }

    /// A `torch.nn.ConvTranspose1d` (`weight` `[in, out, k]`, `bias` `[out]`) as the regular
    /// conv of its polyphase form: `out·stride` channels whose phases the kernel stores
    /// interleaved. `None` where the shape has no such form (HiFi-GAN's upsamplers do: kernel
    /// a multiple of the stride, padding `(kernel − stride)/2`) or the kernel does not apply.
    pub fn transposed(
        weight: &Tensor,
        bias: &Tensor,
        stride: usize,
        padding: usize,
    ) -> Result<Option<Self>> {
        let (in_channels, out_channels, _) = weight.dims3()?;
        if !usable(weight, TAPS[0], 1) {
            return Ok(None);
        }
        let w = weight
            .to_device(&candle_core::Device::Cpu)?
            .to_vec3::<f32>()?;
        let Some((poly, taps, half)) = super::conv_transpose1d::polyphase(&w, stride, padding)
        else {
            return Ok(None);
        };
        if !usable(weight, taps, 1) {
            return Ok(None);
        }
        // [out·stride][in][taps] → tap-major.
        let tap_major: Vec<f32> = poly
            .iter()
            .flat_map(|rows| (0..taps).flat_map(move |j| rows.iter().map(move |r| r[j])))
            .collect();
        let repeated: Vec<f32> = bias
            .to_device(&candle_core::Device::Cpu)?
            .to_vec1::<f32>()?
            .into_iter()
            .flat_map(|b| std::iter::repeat_n(b, stride))
            .collect();
        let channels = out_channels * stride;
        Self::from_tap_major(
            Tensor::from_vec(tap_major, (channels, taps, in_channels), weight.device())?,
            Some(Tensor::from_vec(repeated, channels, weight.device())?),
            in_channels,
            (channels, stride),
            (taps, half, 1),
        )
        .map(Some)
    }

    /// Blocks a launch on `batch` items of `len_out` output samples takes (each reduces over
    /// every input channel and tap alone).
    pub fn blocks(&self, batch: usize, len_out: usize) -> usize {
        let wm = warps_on_channels(self.out_channels);
        len_out.div_ceil((4 / wm) * 64) * self.out_channels.div_ceil(wm * 32) * batch
    }

    /// Whether this kernel suits a launch of that size: a grid of a few blocks over a long
    /// reduction (the text encoder's 768-channel FFN at a hundred tokens) leaves most SMs idle,
    /// where a GEMM spreads the same work wider.
    pub fn fills_device(&self, batch: usize, len_out: usize) -> bool {
        !self.has_long_reduction() || self.blocks(batch, len_out) >= min_blocks()
    }

    /// Whether a block's reduction (input channels × taps) is long enough for a small grid to
    /// leave the device idle.
    pub fn has_long_reduction(&self) -> bool {
        self.in_channels * self.kernel >= LONG_REDUCTION
    }

    /// Runs on `pipeline`, or on `Registers` where its buffers would not fit in shared memory.
    pub fn with_pipeline(mut self, pipeline: ConvPipeline) -> Self {
        self.pipeline = if self.shared_bytes(pipeline) <= OPT_IN_SHARED_LIMIT {
            pipeline
        } else {
            ConvPipeline::Registers
        };
        self
    }

    /// The pipeline this op runs on.
    pub fn pipeline(&self) -> ConvPipeline {
        self.pipeline
    }

    /// Dynamic shared memory a block of this op takes on `pipeline`.
    fn shared_bytes(&self, pipeline: ConvPipeline) -> usize {
        let wm = warps_on_channels(self.out_channels);
        let (w, x) = stage_bytes(self.kernel, self.dilation, wm, STAGE_CHANNELS);
        pipeline.weight_buffers() * w + x
    }

    /// Applies `leaky_relu(x, slope)` to the input inside the kernel.
    pub fn with_input_leaky_relu(mut self, slope: f32) -> Self {
        self.slope = slope;
        self
    }

    /// `[batch, out, len]` for an input of `len` samples.
    #[cfg_attr(not(ferrovox_cuda_kernels), allow(dead_code))]
    fn out_shape(&self, batch: usize, len: usize) -> Result<(usize, usize)> {
        let reach = self.dilation * (self.kernel - 1);
        let Some(len_out) = (len + 2 * self.padding).checked_sub(reach) else {
            candle_core::bail!("conv1d: input of {len} samples is shorter than the kernel");
        };
        if len_out == 0 || batch == 0 {
            candle_core::bail!("conv1d: empty input ({batch} items of {len} samples)");
        }
        Ok((self.out_channels / self.phases, len_out))
    }
}

/// Whether the kernel can run `weight`'s conv of `kernel` taps at `dilation`.
fn usable(weight: &Tensor, kernel: usize, dilation: usize) -> bool {
    // One stage of either block shape fits without an opt-in.
    let one_stage = |wm| {
        let (w, x) = stage_bytes(kernel, dilation, wm, STAGE_CHANNELS);
        w + x
    };
    weight.dtype() == candle_core::DType::F32
        && TAPS.contains(&kernel)
        && one_stage(1).max(one_stage(2)) <= SHARED_LIMIT
        && 256 + (kernel - 1) * dilation <= MAX_WINDOW
        && !super::switched_off("FERROVOX_CUDA_CONV")
        && super::cuda_kernels_loaded(weight.device(), "conv1d")
}

const NOT_CPU: &str = "ferrovox-cuda-conv1d runs on CUDA tensors only";

impl CustomOp1 for CudaConv1d {
    fn name(&self) -> &'static str {
        "ferrovox-cuda-conv1d"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("{NOT_CPU}")
    }

    #[cfg(ferrovox_cuda_kernels)]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        launch::run(self, (x, layout), [None, None])
    }
}

/// `conv(x) + residual`.
impl CustomOp2 for CudaConv1d {
    fn name(&self) -> &'static str {
        "ferrovox-cuda-conv1d-residual"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("{NOT_CPU}")
    }

    #[cfg(ferrovox_cuda_kernels)]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        layout: &Layout,
        r: &candle_core::CudaStorage,
        r_layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        launch::run(self, (x, layout), [Some((r, r_layout)), None])
    }
}

/// `conv(x) + residual + sum`.
impl CustomOp3 for CudaConv1d {
    fn name(&self) -> &'static str {
        "ferrovox-cuda-conv1d-residual-sum"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("{NOT_CPU}")
    }

    #[cfg(ferrovox_cuda_kernels)]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        layout: &Layout,
        r: &candle_core::CudaStorage,
        r_layout: &Layout,
        s: &candle_core::CudaStorage,
        s_layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        launch::run(
            self,
            (x, layout),
            [Some((r, r_layout)), Some((s, s_layout))],
        )
    }
}

#[cfg(ferrovox_cuda_kernels)]
mod launch {
    use candle_core::cuda_backend::cudarc::driver::{CudaView, LaunchConfig, PushKernelArg};
    use candle_core::{CudaStorage, Layout, Result, Shape, Storage};

    use super::super::cuda_module::{function, view, CONV1D};
    use super::{warps_on_channels, CudaConv1d, OPT_IN_SHARED_LIMIT, SHARED_LIMIT};

    pub(super) fn run(
        op: &CudaConv1d,
        (x, layout): (&CudaStorage, &Layout),
        residuals: [Option<(&CudaStorage, &Layout)>; 2],
    ) -> Result<(CudaStorage, Shape)> {
        let (batch, channels, len) = layout.shape().dims3()?;
        if channels != op.in_channels {
            candle_core::bail!(
                "conv1d: {channels} input channels, weight expects {}",
                op.in_channels
            );
        }
        let (rows, len_out) = op.out_shape(batch, len)?;
        let shape = Shape::from((batch, rows, len_out * op.phases));
        for (_, l) in residuals.iter().flatten() {
            if l.shape() != &shape || op.phases != 1 {
                candle_core::bail!(
                    "conv1d: residual of shape {:?} for an output of {shape:?}",
                    l.shape()
                );
            }
        }
        let dev = &x.device;
        let x = view("input", x, layout)?;
        let precise = !candle_core::cuda_backend::gemm_reduced_precision_f32();
        let weight = if precise || !op.pipeline.copies_weights() {
            &op.weight
        } else {
            &op.weight_tf32
        };
        let (w_storage, w_layout) = weight.storage_and_layout();
        let Storage::Cuda(w) = &*w_storage else {
            candle_core::bail!("ferrovox-cuda-conv1d: the weight is not on the GPU");
        };
        let w = view("weight", w, w_layout)?;
        let bias = op.bias.as_ref().map(|b| b.storage_and_layout());
        let bias = match &bias {
            Some((s, l)) => match &**s {
                Storage::Cuda(s) => Some(view("bias", s, l)?),
                _ => candle_core::bail!("ferrovox-cuda-conv1d: the bias is not on the GPU"),
            },
            None => None,
        };
        let res: Vec<Option<CudaView<'_, f32>>> = residuals
            .iter()
            .map(|r| r.map(|(s, l)| view("residual", s, l)).transpose())
            .collect::<Result<_>>()?;

        let wm = warps_on_channels(op.out_channels);
        let name = format!(
            "ferrovox_conv1d_k{}_m{wm}_{}{}",
            op.kernel,
            if precise { "f32" } else { "tf32" },
            op.pipeline.suffix()
        );
        let func = function(dev, &CONV1D, &name)?;
        let shared = op.shared_bytes(op.pipeline);
        if shared > OPT_IN_SHARED_LIMIT {
            candle_core::bail!("conv1d: {shared} bytes of shared memory exceed the {OPT_IN_SHARED_LIMIT} a block may opt in to");
        }
        if shared > SHARED_LIMIT {
            // The bound is a property of the function, shared by every thread that launches it:
            // each call sets the same one, the most any conv asks for. A call setting its own
            // size could lower the bound between another thread's set and launch (concurrent
            // streams' vocoders did: CUDA_ERROR_INVALID_VALUE at 32 streams).
            use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute_enum;
            func.set_attribute(
                CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                i32::try_from(OPT_IN_SHARED_LIMIT).map_err(candle_core::Error::wrap)?,
            )
            .map_err(candle_core::Error::wrap)?;
        }
        let block_t = (4 / wm) * 64;
        let cfg = LaunchConfig {
            grid_dim: (
                u32::try_from(len_out.div_ceil(block_t)).map_err(candle_core::Error::wrap)?,
                u32::try_from(op.out_channels.div_ceil(wm * 32))
                    .map_err(candle_core::Error::wrap)?,
                u32::try_from(batch).map_err(candle_core::Error::wrap)?,
            ),
            block_dim: (128, 1, 1),
            shared_mem_bytes: u32::try_from(shared).map_err(candle_core::Error::wrap)?,
        };
        let int = |v: usize| i32::try_from(v).map_err(candle_core::Error::wrap);
        let scalars = [
            int(op.in_channels)?,
            int(op.out_channels)?,
            int(len)?,
            int(len_out)?,
            int(op.padding)?,
            int(op.dilation)?,
        ];
        let phases = int(op.phases)?;
        let null = 0u64;
        // SAFETY: every output element is written by the kernel before it is read.
        let y = unsafe { dev.alloc::<f32>(shape.elem_count())? };
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&func);
        b.arg(&x);
        b.arg(&w);
        match &bias {
            Some(v) => b.arg(v),
            None => b.arg(&null),
        };
        for r in &res {
            match r {
                Some(v) => b.arg(v),
                None => b.arg(&null),
            };
        }
        b.arg(&y);
        for s in &scalars {
            b.arg(s);
        }
        b.arg(&op.slope);
        b.arg(&phases);
        // SAFETY: the argument list matches the kernel's signature; the views cover the
        // extents the grid reads and `y` the extent it writes.
        unsafe { b.launch(cfg) }.map_err(candle_core::Error::wrap)?;
        Ok((CudaStorage::wrap_cuda_slice(y, dev.clone()), shape))
    }
}
