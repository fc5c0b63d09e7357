use candle_core::{Result, Tensor, D};

/// `torch.nn.ConvTranspose1d` (no groups, dilation or output padding) as one GEMM and an
/// overlap-add, on any device through Candle's own ops. Candle's CUDA transposed convolution
/// is a direct loop, slow at vocoder sizes, and mixes up the items of a batch (0.11.1);
/// here every item and tap goes through a single `[b·T, in] × [in, out·k]` product, which
/// cuBLAS runs at full rate, and the taps are then added into place `stride` at a time.
#[derive(Debug, Clone)]
pub struct GemmConvTranspose1d {
    /// `[in, out · taps]`, the kernel zero-padded to `taps = chunks · stride`.
    weight: Tensor,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    chunks: usize,
}

impl GemmConvTranspose1d {
    /// Prepares `weight` `[in, out, k]` for `stride`.
    pub fn new(weight: &Tensor, stride: usize) -> Result<Self> {
        if stride == 0 {
            candle_core::bail!("transposed conv: stride must be positive");
        }
        let (in_channels, out_channels, kernel) = weight.dims3()?;
        let chunks = kernel.div_ceil(stride);
        let weight = weight
            .pad_with_zeros(2, 0, chunks * stride - kernel)?
            .reshape((in_channels, out_channels * chunks * stride))?
            .contiguous()?;
        Ok(Self {
            weight,
            out_channels,
            kernel,
            stride,
            chunks,
        })
    }

    /// `x` `[b, in, T]` to the full, uncropped output `[b, out, (T − 1)·stride + k]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (batch, in_channels, len) = x.dims3()?;
        if in_channels != self.weight.dim(0)? {
            candle_core::bail!(
                "transposed conv: {in_channels} input channels, weight expects {}",
                self.weight.dim(0)?
            );
        }
        let (s, m, co) = (self.stride, self.chunks, self.out_channels);
        // [b·T, in] × [in, out·m·s] → [b, T, out, m, s]
        let taps = x
            .transpose(1, 2)?
            .contiguous()?
            .reshape((batch * len, in_channels))?
            .matmul(&self.weight.to_dtype(x.dtype())?)?
            .reshape((batch, len, co, m, s))?;
        // Chunk j of the taps of input step t lands on outputs (t + j)·s .. (t + j + 1)·s.
        let mut out: Option<Tensor> = None;
        for j in 0..m {
            let placed = taps
                .narrow(3, j, 1)?
                .squeeze(3)?
                .permute((0, 2, 1, 3))?
                .reshape((batch, co, len * s))?
                .pad_with_zeros(D::Minus1, j * s, (m - 1 - j) * s)?;
            out = Some(match out {
                None => placed,
                Some(acc) => (acc + placed)?,
            });
        }
        let full = (len.max(1) - 1) * s + self.kernel;
        match out {
            Some(o) => o.narrow(2, 0, full),
            None => Tensor::zeros((batch, co, full), x.dtype(), x.device()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn matches_candles_transposed_conv_per_item() {
        // VITS's upsamplers (k = 2·stride), a kernel that is not a multiple of the stride, and
        // stride 1.
        for &(ci, co, k, s, t, b) in &[
            (16, 8, 16, 8, 9, 3),
            (8, 4, 4, 2, 17, 2),
            (5, 3, 7, 3, 6, 2),
            (4, 6, 3, 1, 5, 1),
        ] {
            let w = random(&[ci, co, k], 1 + k as u64);
            let x = random(&[b, ci, t], 2 + s as u64);
            let got = GemmConvTranspose1d::new(&w, s)
                .unwrap()
                .forward(&x)
                .unwrap();
            for i in 0..b {
                let want = x
                    .narrow(0, i, 1)
                    .unwrap()
                    .conv_transpose1d(&w, 0, 0, s, 1, 1)
                    .unwrap();
                let diff =
                    crate::compare::max_abs_diff(&got.narrow(0, i, 1).unwrap(), &want).unwrap();
                assert_eq!(got.dims()[2], want.dims()[2]);
                assert!(diff < 1e-5, "k {k} s {s} item {i}: max diff {diff}");
            }
        }
    }

    #[test]
    fn wrong_channels_are_an_error() {
        let op = GemmConvTranspose1d::new(&random(&[4, 2, 4], 1), 2).unwrap();
        assert!(op.forward(&random(&[1, 3, 5], 2)).is_err());
        assert!(GemmConvTranspose1d::new(&random(&[4, 2, 4], 1), 0).is_err());
    }
}
