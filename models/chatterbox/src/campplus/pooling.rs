//! Mirrors `statistics_pooling` / `StatsPool` (upstream `s3gen/xvector.py`): per channel, the
//! mean and the unbiased standard deviation over time, concatenated.

use candle_core::{Tensor, D};

use crate::{Error, Result};

/// `[b, c, t]` to `[b, 2c]`: `cat([mean, std], -1)`, `std` with `t - 1` in the denominator
/// (upstream's `eps` argument is unused, as upstream leaves it). Fewer than two frames is an
/// error where torch returns NaN.
pub fn statistics_pooling(x: &Tensor) -> Result<Tensor> {
    let t = x.dim(D::Minus1)?;
    if t < 2 {
        return Err(Error::Input(format!(
            "statistics pooling needs 2 frames for an unbiased std, got {t}"
        )));
    }
    let mean = x.mean_keepdim(D::Minus1)?;
    let var = (x.broadcast_sub(&mean)?.sqr()?.sum_keepdim(D::Minus1)? / (t - 1) as f64)?;
    Ok(Tensor::cat(
        &[mean.squeeze(D::Minus1)?, var.sqrt()?.squeeze(D::Minus1)?],
        D::Minus1,
    )?)
}
