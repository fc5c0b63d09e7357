//! HiFT's convolutions (upstream `s3gen/hifigan.py` builds them with `weight_norm`): the shared
//! `ferrovox_layers` convs, with weight norm folded on the host in f64 where VITS folds it on
//! the device, because HiFT's F0 path amplifies a 1-ulp weight difference into audible drift
//! from torch (`WeightNormFold::HostF64`).

use candle_nn::VarBuilder;
pub use ferrovox_layers::{fold_weight_norm_f64 as fold_weight_norm, Conv1d, ConvTranspose1d};
use ferrovox_layers::{ConvSpec, WeightNormFold};

use crate::{Error, Result};

/// A checkpoint error naming the layer (Candle's message names the tensor).
fn checkpoint(vb: &VarBuilder, e: candle_core::Error) -> Error {
    Error::Checkpoint {
        path: vb.prefix(),
        reason: e.to_string(),
    }
}

/// A [`Conv1d`] at `vb`, a missing or misshapen tensor named.
pub fn conv1d(
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    kernel: usize,
    spec: ConvSpec,
) -> Result<Conv1d> {
    Conv1d::new(vb.clone(), cin, cout, kernel, spec).map_err(|e| checkpoint(&vb, e))
}

/// A [`ConvTranspose1d`] at `vb`, a missing or misshapen tensor named.
pub fn conv_transpose1d(
    vb: VarBuilder,
    channels: (usize, usize),
    kernel: usize,
    stride: usize,
    spec: ConvSpec,
) -> Result<ConvTranspose1d> {
    ConvTranspose1d::new(vb.clone(), channels, kernel, stride, spec).map_err(|e| checkpoint(&vb, e))
}

/// Padding, stride and dilation of one of HiFT's convs.
pub fn spec(padding: usize, stride: usize, dilation: usize) -> ConvSpec {
    ConvSpec {
        padding,
        stride,
        dilation,
        fold: WeightNormFold::HostF64,
        ..ConvSpec::default()
    }
}

/// Length-preserving: stride 1, padding `(k * d - d) / 2` (upstream's `get_padding`).
pub fn same(kernel: usize, dilation: usize) -> ConvSpec {
    spec((kernel * dilation - dilation) / 2, 1, dilation)
}

/// A conv whose input first goes through `leaky_relu(slope)`, fused into the conv.
pub fn after_leaky_relu(slope: f64, base: ConvSpec) -> ConvSpec {
    ConvSpec {
        input_leaky_relu: Some(slope),
        ..base
    }
}

/// A conv on the paths whose rounding is closest to torch's and does not depend on where a
/// call's window starts (`ConvSpec::fast` off): the F0 predictor's, whose classifier multiplies
/// rounding by the L1 norm of its weights, so that F0 matches upstream's on every device and a
/// vocoder fed in pieces reproduces the one-call F0.
pub fn exact(base: ConvSpec) -> ConvSpec {
    ConvSpec {
        fast: false,
        ..base
    }
}
