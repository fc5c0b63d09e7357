//! Activations with a vectorised CPU path.

use candle_core::{CustomOp1, Result, Tensor};
use ferrovox_kernels::Activation;

use crate::{split_channels, use_cpu_kernels};

/// `op` in one vectorised pass where the CPU kernels run on `x`, else `candle`'s composition.
fn vectorised(
    x: &Tensor,
    op: impl CustomOp1 + Send + Sync + 'static,
    candle: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    if use_cpu_kernels(x) {
        return x.contiguous()?.apply_op1(op);
    }
    candle(x)
}

/// WaveNet's gate `tanh(x[:, ..h]) · sigmoid(x[:, h..])` of `states` `[b, 2h, t]`.
pub fn gated_tanh(states: &Tensor, h: usize) -> Result<Tensor> {
    vectorised(states, ferrovox_kernels::GatedTanh, |states| {
        let (t, s) = split_channels(states, h)?;
        t.tanh()? * candle_nn::ops::sigmoid(&s)?
    })
}

/// `tanh`, vectorised on the CPU.
pub fn tanh(x: &Tensor) -> Result<Tensor> {
    vectorised(x, ferrovox_kernels::Tanh, Tensor::tanh)
}

/// Exact (erf) GELU, torch's `gelu`, vectorised on the CPU.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    vectorised(x, Activation::GeluErf, Tensor::gelu_erf)
}

/// The tanh approximation of GELU (transformers' `gelu_new`, Candle's `gelu`), vectorised on the
/// CPU: libm's scalar `tanhf` weighs on a long prefill.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    vectorised(x, Activation::GeluTanh, Tensor::gelu)
}

/// `nn.Mish`, `x · tanh(softplus(x))`, vectorised on the CPU. Where `exp` overflows, `softplus`
/// is `∞` and `tanh` 1, the limit torch's thresholded softplus reaches too.
pub fn mish(x: &Tensor) -> Result<Tensor> {
    vectorised(x, Activation::Mish, |x| {
        x * x.exp()?.affine(1.0, 1.0)?.log()?.tanh()?
    })
}

/// `torch.nn.functional.leaky_relu`.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    if (0.0..=1.0).contains(&slope) {
        // max(x, slope·x): two passes, where Candle's op takes four on the GPU.
        return x.maximum(&(x * slope)?);
    }
    candle_nn::ops::leaky_relu(x, slope)
}

/// `x` through [`leaky_relu`] where a slope is given (a layer's optional pre-activation).
pub(crate) fn leaky_relu_where(x: &Tensor, slope: Option<f64>) -> Result<Tensor> {
    match slope {
        Some(slope) => leaky_relu(x, slope),
        None => Ok(x.clone()),
    }
}
