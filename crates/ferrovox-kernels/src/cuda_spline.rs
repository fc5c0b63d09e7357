//! VITS's inverse rational-quadratic spline on CUDA (`cuda/spline.cu`), one thread per
//! element: the stochastic duration predictor's flows stay on the GPU instead of copying their
//! spline parameters to the host and back, which cost a synchronisation per flow and a host
//! loop that grew with the batch.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// Most bins the kernel handles (VITS uses 10).
const MAX_BINS: usize = 32;

/// `inverse(values [b, 1, t]; params [b, 3·bins − 1, t])`: widths and heights are divided by
/// `scale` first, as VITS divides them by `sqrt(filter_channels)`.
#[derive(Debug, Clone)]
#[cfg_attr(not(ferrovox_cuda_kernels), allow(dead_code))]
pub struct CudaSplineInverse {
    bins: usize,
    scale: f32,
    tail_bound: f32,
    /// The unconstrained derivative at both ends, `ln(e^(1 − min_derivative) − 1)`.
    boundary: f32,
}

impl CudaSplineInverse {
    /// The op for `like`'s device, or `None` where it does not run there (not CUDA, not built
    /// with the kernels, more than 32 bins).
    pub fn new(
        like: &Tensor,
        bins: usize,
        scale: f32,
        tail_bound: f32,
        boundary: f32,
    ) -> Option<Self> {
        (bins > 0
            && bins <= MAX_BINS
            && like.dtype() == candle_core::DType::F32
            && super::cuda_kernels_loaded(like.device(), "spline"))
        .then_some(Self {
            bins,
            scale,
            tail_bound,
            boundary,
        })
    }
}

impl CustomOp2 for CudaSplineInverse {
    fn name(&self) -> &'static str {
        "ferrovox-cuda-spline-inverse"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("ferrovox-cuda-spline-inverse runs on CUDA tensors only")
    }

    #[cfg(ferrovox_cuda_kernels)]
    fn cuda_fwd(
        &self,
        values: &candle_core::CudaStorage,
        v_layout: &Layout,
        params: &candle_core::CudaStorage,
        p_layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};

        use super::cuda_module::{function, view, SPLINE};

        let (batch, one, len) = v_layout.shape().dims3()?;
        let (pb, channels, pl) = p_layout.shape().dims3()?;
        if one != 1 || pb != batch || pl != len || channels != 3 * self.bins - 1 {
            candle_core::bail!(
                "spline inverse: values {:?} and parameters {:?} for {} bins",
                v_layout.shape(),
                p_layout.shape(),
                self.bins
            );
        }
        let dev = &values.device;
        let v = view("values", values, v_layout)?;
        let p = view("spline parameters", params, p_layout)?;
        let n = batch * len;
        // SAFETY: the kernel writes every element.
        let out = unsafe { dev.alloc::<f32>(n)? };
        let int = |v: usize| i32::try_from(v).map_err(candle_core::Error::wrap);
        let (b, l, bins) = (int(batch)?, int(len)?, int(self.bins)?);
        let func = function(dev, &SPLINE, "ferrovox_spline_inverse")?;
        let stream = dev.cuda_stream();
        let mut args = stream.launch_builder(&func);
        args.arg(&p);
        args.arg(&v);
        args.arg(&out);
        args.arg(&b);
        args.arg(&l);
        args.arg(&bins);
        args.arg(&self.scale);
        args.arg(&self.tail_bound);
        args.arg(&self.boundary);
        let cfg = LaunchConfig::for_num_elems(u32::try_from(n).map_err(candle_core::Error::wrap)?);
        // SAFETY: the arguments match the kernel's signature and the views its extents.
        unsafe { args.launch(cfg) }.map_err(candle_core::Error::wrap)?;
        Ok((
            candle_core::CudaStorage::wrap_cuda_slice(out, dev.clone()),
            Shape::from((batch, 1, len)),
        ))
    }
}
