use candle_core::{Result, Tensor};

/// A stride-1, ungrouped `torch.nn.Conv1d` as one GEMM over the shifted input, on any device
/// through Candle's own ops. Candle's CUDA `conv1d` unfolds the input with a kernel whose reads
/// are uncoalesced (one thread per `(t, channel, tap)` element, neighbours `dilation` apart) and
/// then transposes the GEMM's `[b, T, out]` result: at batch 16 the unfold alone was 47% of the
/// MMS-TTS decoder's GPU time. Here the batch's items, each zero-padded, are laid end to end as
/// one `[in, b·T']` sequence; the taps are its shifted views, stacked by contiguous row copies
/// into `[taps·in + 1, b·T']` with a last row of ones, and one `[out, taps·in + 1]` product
/// gives every item's output with the bias already in it.
#[derive(Debug, Clone)]
pub struct GemmConv1d {
    /// `[out, k·in + 1]`: tap-major weights, then the bias column.
    weight: Tensor,
    in_channels: usize,
    kernel: usize,
    padding: usize,
    dilation: usize,
}

impl GemmConv1d {
    /// Prepares `weight` `[out, in, k]` and an optional `bias` `[out]`.
    pub fn new(
        weight: &Tensor,
        bias: Option<&Tensor>,
        padding: usize,
        dilation: usize,
    ) -> Result<Self> {
        let (out_channels, in_channels, kernel) = weight.dims3()?;
        let bias = match bias {
            Some(b) => b.reshape((out_channels, 1))?,
            None => Tensor::zeros((out_channels, 1), weight.dtype(), weight.device())?,
        };
        let tap_major = weight
            .transpose(1, 2)?
            .contiguous()?
            .reshape((out_channels, kernel * in_channels))?;
        Ok(Self {
            weight: Tensor::cat(&[&tap_major, &bias], 1)?.contiguous()?,
            in_channels,
            kernel,
            padding,
            dilation: dilation.max(1),
        })
    }

    /// `x` `[b, in, T]` to `[b, out, T + 2·padding − dilation·(k − 1)]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (batch, in_channels, len) = x.dims3()?;
        if in_channels != self.in_channels {
            candle_core::bail!(
                "conv1d: {in_channels} input channels, weight expects {}",
                self.in_channels
            );
        }
        let reach = self.dilation * (self.kernel - 1);
        let Some(out_len) = (len + 2 * self.padding).checked_sub(reach) else {
            candle_core::bail!("conv1d: input of {len} samples is shorter than the kernel");
        };
        // [b, in, T] → [in, b·T'] with each item's own padding; `reach` zeros at the end keep
        // the last item's taps inside the buffer.
        let padded = x.pad_with_zeros(2, self.padding, self.padding)?;
        let stride = len + 2 * self.padding;
        let flat = if batch == 1 {
            padded.reshape((in_channels, stride))?
        } else {
            padded
                .transpose(0, 1)?
                .contiguous()?
                .reshape((in_channels, batch * stride))?
        };
        let flat = flat.pad_with_zeros(1, 0, reach)?;
        let cols = batch * stride;
        let mut rows: Vec<Tensor> = (0..self.kernel)
            .map(|j| flat.narrow(1, j * self.dilation, cols))
            .collect::<Result<_>>()?;
        rows.push(Tensor::ones((1, cols), x.dtype(), x.device())?);
        let y = self
            .weight
            .to_dtype(x.dtype())?
            .matmul(&Tensor::cat(&rows, 0)?)?;
        let out_channels = y.dim(0)?;
        if batch == 1 {
            return y.narrow(1, 0, out_len)?.unsqueeze(0);
        }
        y.reshape((out_channels, batch, stride))?
            .narrow(2, 0, out_len)?
            .transpose(0, 1)?
            .contiguous()
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;

    #[test]
    fn matches_candle_conv1d() {
        for (b, cin, cout, k, len, p, d, bias) in [
            (3, 8, 5, 7, 300, 3, 1, true),
            (2, 16, 4, 5, 900, 12, 6, false),
            (1, 4, 6, 1, 17, 0, 1, true),
            (2, 4, 4, 3, 4, 6, 3, true),
        ] {
            let (x, w, bv, want) = super::super::conv1d_case(b, cin, cout, k, len, p, d, bias);
            let op = GemmConv1d::new(&w, bv.as_ref(), p, d).unwrap();
            let got = op.forward(&x).unwrap();
            let err = super::super::max_abs_diff(&got, &want);
            assert!(
                err < 1e-4,
                "b{b} {cin}->{cout} k{k} len{len} p{p} d{d}: {err}"
            );
        }
    }

    #[test]
    fn wrong_channels_and_short_inputs_are_errors() {
        let w = Tensor::zeros((2, 3, 7), DType::F32, &Device::Cpu).unwrap();
        let op = GemmConv1d::new(&w, None, 0, 1).unwrap();
        let x = Tensor::zeros((1, 4, 20), DType::F32, &Device::Cpu).unwrap();
        assert!(op.forward(&x).is_err());
        let x = Tensor::zeros((1, 3, 5), DType::F32, &Device::Cpu).unwrap();
        assert!(op.forward(&x).is_err());
    }
}
