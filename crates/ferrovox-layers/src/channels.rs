//! Channel-axis helpers for `[batch, channels, time]` tensors.

use candle_core::{Result, Tensor};

/// Splits `[b, c, t]` into its first `at` channels and the rest.
pub fn split_channels(x: &Tensor, at: usize) -> Result<(Tensor, Tensor)> {
    let c = x.dim(1)?;
    Ok((x.narrow(1, 0, at)?, x.narrow(1, at, c - at)?))
}

/// Reverses the channel axis (`torch.flip(x, [1])`).
pub fn flip_channels(x: &Tensor) -> Result<Tensor> {
    let c = x.dim(1)?;
    let idx: Vec<u32> = (0..c as u32).rev().collect();
    let idx = Tensor::new(idx.as_slice(), x.device())?;
    x.index_select(&idx, 1)
}
