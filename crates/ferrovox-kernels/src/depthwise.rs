use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// A depthwise (groups = channels) stride-1 1-D convolution. Candle runs grouped convolutions
/// one group at a time, which for VITS's dilated depth-separable blocks means a few hundred
/// tiny convolutions per call; this is one pass over the data.
#[derive(Debug, Clone)]
pub struct DepthwiseConv1d {
    weight: std::sync::Arc<[f32]>,
    bias: std::sync::Arc<[f32]>,
    channels: usize,
    kernel: usize,
    padding: usize,
    dilation: usize,
}

impl DepthwiseConv1d {
    /// `weight` `[channels, 1, k]` (f32) and an optional `bias` `[channels]`.
    pub fn new(
        weight: &Tensor,
        bias: Option<&Tensor>,
        padding: usize,
        dilation: usize,
    ) -> Result<Self> {
        let (channels, one, kernel) = weight.dims3()?;
        if one != 1 {
            candle_core::bail!(
                "depthwise weight must be [channels, 1, k], got {:?}",
                weight.dims()
            );
        }
        let weight: Vec<f32> = weight
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let bias = super::bias_values(bias, channels)?;
        Ok(Self {
            weight: weight.into(),
            bias,
            channels,
            kernel,
            padding,
            dilation,
        })
    }
}

impl CustomOp1 for DepthwiseConv1d {
    fn name(&self) -> &'static str {
        "ferrovox-depthwise-conv1d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (input, batch, len) =
            super::f32_input("ferrovox-depthwise-conv1d", storage, layout, self.channels)?;
        let channels = self.channels;
        let out_len = (len + 2 * self.padding)
            .checked_sub(self.dilation * (self.kernel - 1))
            .ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "input of {len} samples is shorter than the kernel"
                ))
            })?;
        let mut out = vec![0f32; batch * channels * out_len];
        out.par_chunks_mut(out_len)
            .enumerate()
            .for_each(|(row, y)| {
                let c = row % channels;
                let x = &input[row * len..(row + 1) * len];
                y.fill(self.bias[c]);
                for k in 0..self.kernel {
                    let w = self.weight[c * self.kernel + k];
                    let shift = (k * self.dilation) as isize - self.padding as isize;
                    let lo = (-shift).max(0) as usize;
                    let hi = ((len as isize - shift).max(0) as usize).min(out_len);
                    if lo >= hi {
                        continue;
                    }
                    let src = &x[(lo as isize + shift) as usize..(hi as isize + shift) as usize];
                    for (o, &v) in y[lo..hi].iter_mut().zip(src) {
                        *o += w * v;
                    }
                }
            });
        Ok((
            CpuStorage::F32(out),
            Shape::from((batch, channels, out_len)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    #[test]
    fn matches_candle_grouped_conv1d() {
        let dev = Device::Cpu;
        for (batch, c, k, len, d) in [
            (1, 8, 3, 40, 1),
            (2, 16, 3, 150, 3),
            (1, 4, 3, 5, 9),
            (3, 5, 5, 77, 2),
        ] {
            let padding = (k * d - d) / 2;
            let x = Tensor::randn(0f32, 1., (batch, c, len), &dev).unwrap();
            let w = Tensor::randn(0f32, 0.5, (c, 1, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 0.5, c, &dev).unwrap();
            let reference = x
                .conv1d(&w, padding, 1, d, c)
                .unwrap()
                .broadcast_add(&b.reshape((1, c, 1)).unwrap())
                .unwrap();
            let ours = x
                .apply_op1(DepthwiseConv1d::new(&w, Some(&b), padding, d).unwrap())
                .unwrap();
            let err = super::super::max_abs_diff(&ours, &reference);
            assert!(err < 1e-5, "b{batch} c{c} k{k} len{len} d{d}: {err}");
        }
    }
}
