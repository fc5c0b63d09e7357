use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::winograd::Winograd;
use super::{gemm_acc, SendPtr};

/// A grouped-free transposed 1-D convolution (`torch.nn.ConvTranspose1d`, no output padding)
/// with its weight packed tap-major (`[k][out][in]`): one strided-output GEMM per tap.
#[derive(Debug, Clone)]
pub struct PackedConvTranspose1d {
    weight: std::sync::Arc<[f32]>,
    bias: std::sync::Arc<[f32]>,
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    input_slope: Option<f32>,
    /// The same convolution as a regular one over the input, on [`Winograd`], where its shape
    /// allows (see [`polyphase`]); its bias repeated per phase.
    polyphase: Option<(std::sync::Arc<Winograd>, std::sync::Arc<[f32]>)>,
}

/// A weight as `[out][in][tap]`.
pub(super) type Weight3 = Vec<Vec<Vec<f32>>>;

/// A transposed convolution of stride `s` as a regular one: output sample `q·s + r` of row `c`
/// is channel `c·s + r` at sample `q`, and only taps `j·s + b_r` of the weight reach it, from
/// input sample `q + a_r − j` where `r + padding = a_r·s + b_r`. Those input offsets span
/// `−P..=P` for HiFi-GAN's upsamplers (kernel a multiple of the stride, padding
/// `(kernel − stride)/2`), a "same" conv of `2P + 1` taps; other shapes give `None`.
pub(super) fn polyphase(
    w: &[Vec<Vec<f32>>],
    stride: usize,
    padding: usize,
) -> Option<(Weight3, usize, usize)> {
    let (cin, cout, kernel) = (w.len(), w.first()?.len(), w.first()?.first()?.len());
    if kernel % stride != 0 || stride == 1 {
        return None;
    }
    let per_phase = kernel / stride;
    let a: Vec<usize> = (0..stride).map(|r| (r + padding) / stride).collect();
    let hi = *a.iter().max()? as isize;
    let lo = *a.iter().min()? as isize - (per_phase as isize - 1);
    if hi != -lo {
        return None;
    }
    let half = hi as usize;
    let taps = 2 * half + 1;
    let mut out = vec![vec![vec![0f32; taps]; cin]; cout * stride];
    for co in 0..cout {
        for r in 0..stride {
            let b = (r + padding) % stride;
            for (ci, row) in out[co * stride + r].iter_mut().enumerate() {
                for j in 0..per_phase {
                    row[a[r] + half - j] = w[ci][co][j * stride + b];
                }
            }
        }
    }
    Some((out, taps, half))
}

impl PackedConvTranspose1d {
    /// Packs `weight` `[in, out, k]` (f32) and `bias` `[out]`.
    pub fn new(
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let (in_channels, out_channels, kernel) = weight.dims3()?;
        let w = weight.to_dtype(candle_core::DType::F32)?.to_vec3::<f32>()?;
        let mut packed = vec![0f32; kernel * out_channels * in_channels];
        for (ci, outs) in w.iter().enumerate() {
            for (co, taps) in outs.iter().enumerate() {
                for (k, &v) in taps.iter().enumerate() {
                    packed[(k * out_channels + co) * in_channels + ci] = v;
                }
            }
        }
        let bias = super::bias_values(bias, out_channels)?;
        let polyphase = polyphase(&w, stride, padding).and_then(|(weight, taps, half)| {
            let op = Winograd::phased(&weight, taps, half, stride)?;
            let repeated: Vec<f32> = bias
                .iter()
                .flat_map(|&b| std::iter::repeat_n(b, stride))
                .collect();
            Some((op.into(), repeated.into()))
        });
        Ok(Self {
            polyphase,
            weight: packed.into(),
            bias,
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            input_slope: None,
        })
    }

    /// Applies `leaky_relu(x, slope)` to the input inside the kernel.
    pub fn with_input_leaky_relu(mut self, slope: f32) -> Self {
        self.input_slope = Some(slope);
        self
    }

    /// Whether this runs as a regular convolution on [`Winograd`] (else one GEMM per tap).
    pub fn is_polyphase(&self) -> bool {
        self.polyphase.is_some()
    }

    /// The same op on the per-tap GEMM path, for measuring the polyphase form against it.
    pub fn without_polyphase(mut self) -> Self {
        self.polyphase = None;
        self
    }

    /// Output length for `len` input samples.
    pub fn out_len(&self, len: usize) -> Option<usize> {
        ((len.max(1) - 1) * self.stride + self.kernel).checked_sub(2 * self.padding)
    }
}

impl CustomOp1 for PackedConvTranspose1d {
    fn name(&self) -> &'static str {
        "ferrovox-conv-transpose1d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (data, batch, len) = super::f32_input(
            "ferrovox-conv-transpose1d",
            storage,
            layout,
            self.in_channels,
        )?;
        if let Some((op, bias)) = &self.polyphase {
            let mut out = super::uninit_vec(batch * self.out_channels * len * self.stride);
            let y = out.as_mut_ptr() as *mut f32;
            op.run(
                data,
                batch,
                len,
                [None, None],
                y,
                len,
                bias,
                self.input_slope,
                Default::default(),
            );
            // SAFETY: every phase of every row of every item was written.
            let out = unsafe { super::assume_init(out) };
            let shape = Shape::from((batch, self.out_channels, len * self.stride));
            return Ok((CpuStorage::F32(out), shape));
        }
        let activated;
        let input = match self.input_slope {
            None => data,
            Some(slope) => {
                activated = data
                    .par_iter()
                    .map(|&v| v.max(v * slope))
                    .collect::<Vec<f32>>();
                &activated[..]
            }
        };
        let out_len = self.out_len(len).ok_or_else(|| {
            candle_core::Error::Msg("transposed conv output would be empty".into())
        })?;
        let (cin, cout, s, p) = (
            self.in_channels,
            self.out_channels,
            self.stride,
            self.padding as isize,
        );
        let mut out = super::uninit_vec(batch * cout * out_len);
        // Taps overlap in time, so work splits by output rows, which never overlap.
        let rows = (cout / rayon::current_num_threads().max(1)).clamp(1, 16);
        let row_blocks = cout.div_ceil(rows);
        let dst = SendPtr(out.as_mut_ptr() as *mut f32);
        (0..batch * row_blocks).into_par_iter().for_each(|job| {
            let (item, r0) = (job / row_blocks, (job % row_blocks) * rows);
            let r1 = (r0 + rows).min(cout);
            // SAFETY: each job writes rows [r0, r1) of its own item only.
            let y = unsafe { dst.get().add(item * cout * out_len) };
            for co in r0..r1 {
                for t in 0..out_len {
                    unsafe { y.add(co * out_len + t).write(self.bias[co]) };
                }
            }
            let x = input[item * cin * len..].as_ptr();
            for k in 0..self.kernel {
                // Input column t lands on output column t·s + k − p.
                let offset = k as isize - p;
                let t_lo = if offset >= 0 {
                    0
                } else {
                    ((-offset) as usize).div_ceil(s)
                };
                let t_hi = ((out_len as isize - offset + s as isize - 1) / s as isize)
                    .clamp(0, len as isize) as usize;
                if t_lo >= t_hi {
                    continue;
                }
                let first = (t_lo * s) as isize + offset;
                // SAFETY: output columns first + s·j for j < t_hi − t_lo lie in [0, out_len).
                unsafe {
                    gemm_acc(
                        r1 - r0,
                        t_hi - t_lo,
                        cin,
                        y.add(r0 * out_len).offset(first),
                        out_len as isize,
                        s as isize,
                        self.weight[(k * cout + r0) * cin..].as_ptr(),
                        cin as isize,
                        1,
                        x.add(t_lo),
                        len as isize,
                    );
                }
            }
        });
        // SAFETY: the jobs initialised every element (bias or residual) before accumulating.
        let out = unsafe { super::assume_init(out) };
        Ok((CpuStorage::F32(out), Shape::from((batch, cout, out_len))))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    fn check(batch: usize, cin: usize, cout: usize, k: usize, stride: usize, len: usize) {
        let dev = Device::Cpu;
        let padding = (k - stride) / 2;
        let x = Tensor::randn(0f32, 1., (batch, cin, len), &dev).unwrap();
        let w = Tensor::randn(0f32, 0.3, (cin, cout, k), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.3, cout, &dev).unwrap();
        // Candle's own op, one item at a time (its batched unpadded path is unreliable) and
        // unpadded then cropped (its padded path underflows on one-sample inputs).
        let out_len = (len - 1) * stride + k - 2 * padding;
        let items: Vec<Tensor> = (0..batch)
            .map(|i| {
                x.narrow(0, i, 1)
                    .unwrap()
                    .conv_transpose1d(&w, 0, 0, stride, 1, 1)
                    .unwrap()
                    .narrow(2, padding, out_len)
                    .unwrap()
            })
            .collect();
        let reference = Tensor::cat(&items, 0)
            .unwrap()
            .broadcast_add(&b.reshape((1, cout, 1)).unwrap())
            .unwrap();
        let op = PackedConvTranspose1d::new(&w, Some(&b), stride, padding).unwrap();
        let ours = x.apply_op1(op).unwrap();
        assert_eq!(ours.dims(), reference.dims());
        let err = super::super::max_abs_diff(&ours, &reference);
        assert!(
            err < 1e-4,
            "b{batch} {cin}->{cout} k{k} s{stride} len{len}: {err}"
        );
    }

    #[test]
    fn fused_leaky_relu_matches_the_composition() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 8, 30), &dev).unwrap();
        let w = Tensor::randn(0f32, 0.3, (8, 4, 16), &dev).unwrap();
        let act = candle_nn::ops::leaky_relu(&x, 0.1).unwrap();
        let plain = PackedConvTranspose1d::new(&w, None, 8, 4).unwrap();
        let reference = act.apply_op1(plain.clone()).unwrap();
        let fused = x.apply_op1(plain.with_input_leaky_relu(0.1)).unwrap();
        let err = super::super::max_abs_diff(&fused, &reference);
        assert!(err < 1e-6, "{err}");
    }

    #[test]
    fn matches_candle_conv_transpose1d() {
        check(1, 8, 4, 16, 8, 20);
        check(2, 16, 8, 8, 4, 33);
        check(3, 4, 2, 4, 2, 7);
        check(1, 6, 3, 3, 1, 5);
        check(2, 5, 7, 16, 8, 1);
    }

    /// The polyphase form on HiFi-GAN's upsampler shapes (strides 8, 4 and 2), one-sample
    /// inputs and batches included, with the fused leaky ReLU.
    #[test]
    fn polyphase_matches_candle_conv_transpose1d() {
        for (batch, cin, cout, k, stride, len) in [
            (1, 64, 32, 16, 8, 100),
            (2, 128, 64, 16, 8, 37),
            (1, 64, 32, 8, 4, 301),
            (2, 64, 32, 4, 2, 50),
            (1, 64, 16, 4, 2, 1),
        ] {
            let w = Tensor::zeros((cin, cout, k), candle_core::DType::F32, &Device::Cpu).unwrap();
            let op = PackedConvTranspose1d::new(&w, None, stride, (k - stride) / 2).unwrap();
            assert_eq!(
                op.is_polyphase(),
                super::super::winograd::supports(cin, cout * stride, 3)
            );
            check(batch, cin, cout, k, stride, len);
        }
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 64, 30), &dev).unwrap();
        let w = Tensor::randn(0f32, 0.3, (64, 32, 16), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.3, 32, &dev).unwrap();
        let op = PackedConvTranspose1d::new(&w, Some(&b), 8, 4)
            .unwrap()
            .with_input_leaky_relu(0.1);
        // The per-tap path with the same fused activation, checked against Candle above.
        let reference = x.apply_op1(op.clone().without_polyphase()).unwrap();
        let err = super::super::max_abs_diff(&x.apply_op1(op).unwrap(), &reference);
        assert!(err < 1e-4, "polyphase with leaky ReLU: {err}");
    }
}
