use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{gemm_acc, SendPtr};

/// A stride-1, ungrouped 1-D convolution with its weight packed tap-major (`[k][out][in]`),
/// its bias folded into the output initialisation, and optionally a leaky ReLU applied to its
/// input and a residual added to its output in the same pass (HiFi-GAN's
/// `x + conv(leaky_relu(x))`). As a `CustomOp1` it computes the convolution; as a `CustomOp2`
/// the second operand is the residual.
#[derive(Debug, Clone)]
pub struct PackedConv1d {
    weight: std::sync::Arc<[f32]>,
    bias: std::sync::Arc<[f32]>,
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    padding: usize,
    dilation: usize,
    input_slope: Option<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl PackedConv1d {
    /// Packs `weight` `[out, in, k]` (f32) and an optional `bias` `[out]`.
    pub fn new(
        weight: &Tensor,
        bias: Option<&Tensor>,
        padding: usize,
        dilation: usize,
    ) -> Result<Self> {
        let (out_channels, in_channels, kernel) = weight.dims3()?;
        let w = weight.to_dtype(candle_core::DType::F32)?.to_vec3::<f32>()?;
        let mut packed = Vec::with_capacity(out_channels * in_channels * kernel);
        for k in 0..kernel {
            for row in &w {
                packed.extend(row.iter().map(|taps| taps[k]));
            }
        }
        let bias = super::bias_values(bias, out_channels)?;
        Ok(Self {
            weight: packed.into(),
            bias,
            in_channels,
            out_channels,
            kernel,
            padding,
            dilation,
            input_slope: None,
        })
    }

    /// Applies `leaky_relu(x, slope)` to the input inside the kernel.
    pub fn with_input_leaky_relu(mut self, slope: f32) -> Self {
        self.input_slope = Some(slope);
        self
    }

    /// Output length for an input of `len` samples.
    pub fn out_len(&self, len: usize) -> Option<usize> {
        (len + 2 * self.padding).checked_sub(self.dilation * (self.kernel - 1))
    }

    /// Columns per tile: about 512 KiB of output rows, so a tile stays in L2 while the
    /// weight panel each GEMM packs is amortised over enough columns (measured best of 128,
    /// 512 and 1024 KiB on the joe voice).
    fn tile(&self) -> usize {
        (131_072 / self.out_channels).clamp(64, 4096)
    }
}

impl PackedConv1d {
    fn run(
        &self,
        input: &[f32],
        batch: usize,
        len: usize,
        residual: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let out_len = self.out_len(len).ok_or_else(|| {
            candle_core::Error::Msg(format!("input of {len} samples is shorter than the kernel"))
        })?;
        let (cin, cout) = (self.in_channels, self.out_channels);
        if let Some(r) = residual {
            if r.len() != batch * cout * out_len {
                candle_core::bail!(
                    "ferrovox-conv1d: residual has {} values, output {}",
                    r.len(),
                    batch * cout * out_len
                );
            }
        }
        let mut out = super::uninit_vec(batch * cout * out_len);
        let tile = self.tile();
        let tiles = out_len.div_ceil(tile);
        let dst = SendPtr(out.as_mut_ptr() as *mut f32);
        let span_extra = self.dilation * (self.kernel - 1);
        (0..batch * tiles).into_par_iter().for_each(|job| {
            let (item, t0) = (job / tiles, (job % tiles) * tile);
            let t1 = (t0 + tile).min(out_len);
            // SAFETY: each job writes the columns [t0, t1) of its own item only.
            let y = unsafe { dst.get().add(item * cout * out_len) };
            for (co, &b) in self.bias.iter().enumerate() {
                let row = co * out_len;
                // SAFETY: columns [t0, t1) of row `co` belong to this job; they are written
                // through the pointer before anything reads them.
                let cells = unsafe { y.add(row) };
                match residual {
                    Some(r) => {
                        let base = item * cout * out_len + row;
                        for (t, &v) in (t0..t1).zip(&r[base + t0..base + t1]) {
                            unsafe { cells.add(t).write(v + b) };
                        }
                    }
                    None => {
                        for t in t0..t1 {
                            unsafe { cells.add(t).write(b) };
                        }
                    }
                }
            }
            let x = &input[item * cin * len..(item + 1) * cin * len];
            match self.input_slope {
                None => self.taps_direct(x, len, y, out_len, t0, t1),
                Some(slope) => self.taps_activated(x, len, y, out_len, t0, t1, span_extra, slope),
            }
        });
        // SAFETY: the jobs initialised every element (bias or residual) before accumulating.
        let out = unsafe { super::assume_init(out) };
        Ok((CpuStorage::F32(out), Shape::from((batch, cout, out_len))))
    }

    /// One GEMM per tap, reading the input in place.
    fn taps_direct(
        &self,
        x: &[f32],
        len: usize,
        y: *mut f32,
        out_len: usize,
        t0: usize,
        t1: usize,
    ) {
        let (cin, cout) = (self.in_channels, self.out_channels);
        for k in 0..self.kernel {
            let shift = (k * self.dilation) as isize - self.padding as isize;
            let lo = t0.max((-shift).max(0) as usize);
            let hi = t1.min((len as isize - shift).max(0) as usize);
            if lo >= hi {
                continue;
            }
            // SAFETY: rows of `y` and `x` are `out_len` and `len` long; columns lo..hi map to
            // input columns lo+shift..hi+shift, inside [0, len).
            unsafe {
                gemm_acc(
                    cout,
                    hi - lo,
                    cin,
                    y.add(lo),
                    out_len as isize,
                    1,
                    self.weight[k * cout * cin..].as_ptr(),
                    cin as isize,
                    1,
                    x.as_ptr().offset(lo as isize + shift),
                    len as isize,
                );
            }
        }
    }

    /// Copies the tile's input window through the activation (zeros where padding lies), then
    /// one GEMM per tap on the window.
    #[allow(clippy::too_many_arguments)]
    fn taps_activated(
        &self,
        x: &[f32],
        len: usize,
        y: *mut f32,
        out_len: usize,
        t0: usize,
        t1: usize,
        span_extra: usize,
        slope: f32,
    ) {
        let (cin, cout) = (self.in_channels, self.out_channels);
        let span = t1 - t0 + span_extra;
        let first = t0 as isize - self.padding as isize;
        SCRATCH.with(|cell| {
            let mut window = cell.borrow_mut();
            window.clear();
            window.resize(cin * span, 0.0);
            let lo = first.max(0) as usize;
            let hi = ((first + span as isize).min(len as isize)).max(0) as usize;
            let offset = (lo as isize - first) as usize;
            for ci in 0..cin {
                let src = &x[ci * len + lo..ci * len + hi];
                let dst = &mut window[ci * span + offset..ci * span + offset + (hi - lo)];
                // slope < 1, so leaky_relu(v) = max(v, slope·v): branch-free and vectorised.
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d = v.max(v * slope);
                }
            }
            for k in 0..self.kernel {
                // SAFETY: the window holds `span` columns per channel; tap k reads columns
                // k·d .. k·d + (t1 − t0), inside it.
                unsafe {
                    gemm_acc(
                        cout,
                        t1 - t0,
                        cin,
                        y.add(t0),
                        out_len as isize,
                        1,
                        self.weight[k * cout * cin..].as_ptr(),
                        cin as isize,
                        1,
                        window.as_ptr().add(k * self.dilation),
                        span as isize,
                    );
                }
            }
        });
    }
}

impl CustomOp1 for PackedConv1d {
    fn name(&self) -> &'static str {
        "ferrovox-conv1d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (input, batch, len) =
            super::f32_input("ferrovox-conv1d", storage, layout, self.in_channels)?;
        self.run(input, batch, len, None)
    }
}

impl CustomOp2 for PackedConv1d {
    fn name(&self) -> &'static str {
        "ferrovox-conv1d-residual"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
        residual: &CpuStorage,
        residual_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (input, batch, len) =
            super::f32_input("ferrovox-conv1d", storage, layout, self.in_channels)?;
        let (CpuStorage::F32(r), Some((start, end))) =
            (residual, residual_layout.contiguous_offsets())
        else {
            candle_core::bail!("ferrovox-conv1d: the residual must be contiguous f32");
        };
        self.run(input, batch, len, Some(&r[start..end]))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    #[allow(clippy::too_many_arguments)]
    fn check(
        batch: usize,
        cin: usize,
        cout: usize,
        k: usize,
        len: usize,
        padding: usize,
        dilation: usize,
        bias: bool,
    ) {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (batch, cin, len), &dev).unwrap();
        let w = Tensor::randn(0f32, 0.3, (cout, cin, k), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.3, cout, &dev).unwrap();
        let mut reference = x.conv1d(&w, padding, 1, dilation, 1).unwrap();
        if bias {
            reference = reference
                .broadcast_add(&b.reshape((1, cout, 1)).unwrap())
                .unwrap();
        }
        let op = PackedConv1d::new(&w, bias.then_some(&b), padding, dilation).unwrap();
        let ours = x.apply_op1(op).unwrap();
        assert_eq!(ours.dims(), reference.dims());
        let err = super::super::max_abs_diff(&ours, &reference);
        assert!(
            err < 1e-4,
            "b{batch} {cin}->{cout} k{k} len{len} p{padding} d{dilation}: {err}"
        );
    }

    #[test]
    fn matches_candle_conv1d() {
        check(1, 4, 6, 3, 50, 1, 1, true);
        check(2, 8, 8, 7, 300, 3, 1, true);
        check(3, 16, 5, 5, 9000, 12, 6, false);
        check(1, 32, 1, 7, 5000, 3, 1, false);
        check(2, 3, 4, 1, 17, 0, 1, true);
        check(1, 4, 4, 3, 4, 6, 3, true);
        check(1, 4, 4, 5, 2, 4, 2, true);
    }

    fn check_fused(cin: usize, k: usize, len: usize, dilation: usize) {
        let dev = Device::Cpu;
        let padding = (k * dilation - dilation) / 2;
        let x = Tensor::randn(0f32, 1., (2, cin, len), &dev).unwrap();
        let w = Tensor::randn(0f32, 0.3, (cin, cin, k), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.3, cin, &dev).unwrap();
        let act = candle_nn::ops::leaky_relu(&x, 0.1).unwrap();
        let reference = (act
            .conv1d(&w, padding, 1, dilation, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, cin, 1)).unwrap())
            .unwrap()
            + &x)
            .unwrap();
        let op = PackedConv1d::new(&w, Some(&b), padding, dilation)
            .unwrap()
            .with_input_leaky_relu(0.1);
        let fused = x.apply_op2(&x, op.clone()).unwrap();
        let err = super::super::max_abs_diff(&fused, &reference);
        assert!(
            err < 1e-4,
            "fused residual cin{cin} k{k} len{len} d{dilation}: {err}"
        );
        let no_residual = x.apply_op1(op).unwrap();
        let err = super::super::max_abs_diff(&(no_residual + &x).unwrap(), &reference);
        assert!(
            err < 1e-4,
            "fused cin{cin} k{k} len{len} d{dilation}: {err}"
        );
    }

    #[test]
    fn fused_leaky_relu_and_residual_match_the_composition() {
        check_fused(8, 3, 100, 1);
        check_fused(16, 7, 9000, 12);
        check_fused(4, 5, 3, 6);
        check_fused(32, 11, 5000, 5);
    }

    #[test]
    fn too_short_input_is_an_error() {
        let w = Tensor::zeros((2, 2, 7), candle_core::DType::F32, &Device::Cpu).unwrap();
        let x = Tensor::ones((1, 2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let op = PackedConv1d::new(&w, None, 0, 1).unwrap();
        assert!(x.apply_op1(op).is_err());
    }
}
