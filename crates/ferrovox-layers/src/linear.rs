//! torch's `Linear` without bias over the last axis, as one 2-D product: a few rows on the CPU
//! (a decoder step) through `few_rows_matmul`, which reads the weight in place, or through a
//! packed copy of it ([`StepLinear`]); a few rows on CUDA through `cuda_decode::rows_linear`
//! where `FERROVOX_CUDA_ROWS` asks for it (cuBLAS is as fast on the H100); everything else
//! through Candle's matmul, or, where a [`StepLinear`] was asked for bf16 products on a CPU with
//! AVX-512 BF16, through its weight packed once as bf16 ([`Bf16Panels`]).

use std::sync::Arc;

use candle_core::{DType, Result, Storage, Tensor};
use candle_nn::Linear;
use ferrovox_kernels::{
    cuda_decode, few_rows_matmul, Bf16Panels, PackedRows, RowFormat, FEW_ROWS_MAX,
};

/// `x` `[.., in]` times `layer`'s weight `[out, in]` transposed, plus its bias, as `[.., out]`.
/// The leading axes are flattened into one GEMM's rows, so the weight is read once however
/// many rows there are (Candle's `Linear` on a 3-D input runs one product per batch entry).
/// `FERROVOX_FEW_ROWS=0` sends few-row products to Candle too, to measure the kernel.
pub fn linear(layer: &Linear, x: &Tensor) -> Result<Tensor> {
    linear_reading(layer, None, None, x)
}

/// A layer's weight packed for bf16 products, with its bias read onto the host once.
#[derive(Debug)]
struct Bf16Weight {
    panels: Bf16Panels,
    bias: Option<Vec<f32>>,
}

/// [`linear`], with a few rows on the CPU multiplied by `packed` (the weight packed) and more
/// rows by `products` (the weight as bf16 panels) when given.
fn linear_reading(
    layer: &Linear,
    packed: Option<&PackedRows>,
    products: Option<&Bf16Weight>,
    x: &Tensor,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (&k, lead) = dims
        .split_last()
        .ok_or_else(|| candle_core::Error::Msg("linear of a scalar".into()))?;
    let rows: usize = lead.iter().product();
    let w = layer.weight();
    let (out, wk) = w.dims2()?;
    if wk != k {
        candle_core::bail!("linear: input has {k} features, the weight takes {wk}");
    }
    let mut out_dims = lead.to_vec();
    out_dims.push(out);
    if let Some(y) = few_rows(w, packed, x, rows, k, out)? {
        let y = y.reshape(out_dims)?;
        return match layer.bias() {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        };
    }
    if let Some(p) = products.filter(|_| x.device().is_cpu() && x.dtype() == DType::F32) {
        let x = x.contiguous()?;
        if let Some(y) = in_place(&x, |xs| p.panels.matmul(xs, rows, p.bias.as_deref()))? {
            let y = y.map_err(candle_core::Error::Msg)?;
            return Tensor::from_vec(y, out_dims, x.device());
        }
    }
    candle_core::Module::forward(layer, &x.reshape((rows, k))?)?.reshape(out_dims)
}

/// A `Linear` whose decode steps on the CPU may read a packed copy of the weight (bf16, or int8
/// with a scale per 32 weights: [`RowFormat`]) instead of the f32 one: a step of a large decoder
/// on a few cores is bound by the bytes of weight it reads. Products of more rows (a prompt's
/// prefill) keep the f32 weight, so only the steps carry the packing's rounding, unless
/// [`StepLinear::bf16_products`] asks for bf16 products there too.
#[derive(Debug, Clone)]
pub struct StepLinear {
    dense: Linear,
    packed: Option<Arc<PackedRows>>,
    products: Option<Arc<Bf16Weight>>,
}

impl StepLinear {
    pub fn new(dense: Linear) -> Self {
        Self {
            dense,
            packed: None,
            products: None,
        }
    }

    /// Products of more rows than a step on bf16-rounded inputs with f32 sums (twice the
    /// multiply-adds a cycle on AVX-512 BF16) when `on`, the CPU has AVX-512 BF16 and the weight
    /// is f32 on the CPU; otherwise f32 products. Returns whether bf16 products are now used.
    pub fn bf16_products(&mut self, on: bool) -> Result<bool> {
        let w = self.dense.weight();
        if !on
            || !w.device().is_cpu()
            || w.dtype() != DType::F32
            || !ferrovox_kernels::bf16_products_available()
        {
            self.products = None;
            return Ok(false);
        }
        let (n, k) = w.dims2()?;
        let values = w.flatten_all()?.to_vec1::<f32>()?;
        self.products = Some(Arc::new(Bf16Weight {
            panels: Bf16Panels::from_weight(&values, n, k),
            bias: self.dense.bias().map(|b| b.to_vec1()).transpose()?,
        }));
        Ok(true)
    }

    /// Packs the weight for steps as `format` (`F32` drops a packed copy). Only an f32 weight on
    /// the CPU is packed; elsewhere this does nothing.
    pub fn pack_steps(&mut self, format: RowFormat) -> Result<()> {
        let w = self.dense.weight();
        if format == RowFormat::F32 || !w.device().is_cpu() || w.dtype() != DType::F32 {
            self.packed = None;
            return Ok(());
        }
        let (n, k) = w.dims2()?;
        let values = w.flatten_all()?.to_vec1::<f32>()?;
        let packed = PackedRows::pack(&values, n, k, format).map_err(candle_core::Error::Msg)?;
        self.packed = Some(Arc::new(packed));
        Ok(())
    }

    /// The format steps read the weight in.
    pub fn step_format(&self) -> RowFormat {
        self.packed.as_ref().map_or(RowFormat::F32, |p| p.format())
    }

    pub fn dense(&self) -> &Linear {
        &self.dense
    }

    /// [`linear`], through the packed weight for a few rows on the CPU.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        linear_reading(
            &self.dense,
            self.packed.as_deref(),
            self.products.as_deref(),
            x,
        )
    }
}

/// The product of a few rows (at most [`FEW_ROWS_MAX`], f32, on the CPU) without a packing
/// GEMM: through `packed` when given, else through `few_rows_matmul` on a contiguous f32
/// weight.
fn few_rows(
    w: &Tensor,
    packed: Option<&PackedRows>,
    x: &Tensor,
    rows: usize,
    k: usize,
    out: usize,
) -> Result<Option<Tensor>> {
    if x.device().is_cuda() && cuda_decode::rows_linear_preferred(rows) {
        let x = x.reshape((rows, k))?;
        if cuda_decode::rows_linear_fits(&x, w) {
            return Ok(Some(cuda_decode::rows_linear(&x, w)?));
        }
        return Ok(None);
    }
    if !x.device().is_cpu() || x.dtype() != DType::F32 || rows == 0 || rows > FEW_ROWS_MAX {
        return Ok(None);
    }
    if let Some(packed) = packed {
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let y = packed.matmul(&xs, rows).map_err(candle_core::Error::Msg)?;
        return Ok(Some(Tensor::from_vec(y, (rows, out), x.device())?));
    }
    if w.dtype() != DType::F32 || !w.is_contiguous() || switched_off() {
        return Ok(None);
    }
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    match in_place(w, |weights| few_rows_matmul(&xs, rows, k, weights, out))? {
        Some(y) => Ok(Some(Tensor::from_vec(y, (rows, out), x.device())?)),
        None => Ok(None),
    }
}

/// `f` of the values of `t` (contiguous f32) read where they lie; `None` off the CPU.
fn in_place<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<Option<R>> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Ok(None);
    };
    let start = layout.start_offset();
    Ok(Some(f(
        &cpu.as_slice::<f32>()?[start..start + t.elem_count()]
    )))
}

fn switched_off() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| {
        matches!(
            std::env::var("FERROVOX_FEW_ROWS").as_deref(),
            Ok("0" | "false" | "off" | "no")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// bf16 products of many rows multiply the weight rounded to bf16 by the rows rounded
    /// alike; steps keep their own path.
    #[test]
    fn bf16_products_multiply_the_rounded_inputs() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (40, 96), &dev)?;
        let b = Tensor::randn(0f32, 1.0, 40, &dev)?;
        let mut layer = StepLinear::new(Linear::new(w.clone(), Some(b.clone())));
        if !layer.bf16_products(true)? {
            assert!(!ferrovox_kernels::bf16_products_available());
            return Ok(());
        }
        let round = |t: &Tensor| t.to_dtype(DType::BF16)?.to_dtype(DType::F32);
        let x = Tensor::randn(0f32, 1.0, (3, 7, 96), &dev)?;
        let got = layer.forward(&x)?;
        assert_eq!(got.dims(), &[3, 7, 40]);
        let want = candle_core::Module::forward(
            &Linear::new(round(&w)?, Some(b.clone())),
            &round(&x)?.reshape((21, 96))?,
        )?
        .reshape((3, 7, 40))?;
        let diff = (&got - &want)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-4, "bf16 products: {diff}");
        let exact = candle_core::Module::forward(layer.dense(), &x.reshape((21, 96))?)?;
        let off = (got.reshape((21, 40))? - exact)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(off > 1e-3, "the bf16 weight was not used: {off}");
        assert!(!layer.bf16_products(false)?);
        let back = layer.forward(&x)?.reshape((21, 40))?;
        let exact = candle_core::Module::forward(layer.dense(), &x.reshape((21, 96))?)?;
        let diff = (back - exact)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "f32 again: {diff}");
        Ok(())
    }

    /// A packed step equals the product with the packed weight unpacked, and more rows than a
    /// step (or no packing) give the f32 `Linear`'s result.
    #[test]
    fn packed_steps_multiply_by_the_packed_weight() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (40, 96), &dev)?;
        let b = Tensor::randn(0f32, 1.0, 40, &dev)?;
        for format in [RowFormat::Bf16, RowFormat::Int8] {
            let mut layer = StepLinear::new(Linear::new(w.clone(), Some(b.clone())));
            layer.pack_steps(format)?;
            assert_eq!(layer.step_format(), format);
            let packed = PackedRows::pack(&w.flatten_all()?.to_vec1()?, 40, 96, format)
                .map_err(candle_core::Error::Msg)?;
            let rounded = Linear::new(
                Tensor::from_vec(packed.unpack(), (40, 96), &dev)?,
                Some(b.clone()),
            );
            let x = Tensor::randn(0f32, 1.0, (2, 1, 96), &dev)?;
            let got = layer.forward(&x)?;
            assert_eq!(got.dims(), &[2, 1, 40]);
            // int8 products read the activations rounded to int8 blocks too.
            let read = match format {
                RowFormat::Int8 => Tensor::from_vec(
                    ferrovox_kernels::int8_activations(&x.flatten_all()?.to_vec1()?, 2, 96),
                    (2, 96),
                    &dev,
                )?,
                _ => x.reshape((2, 96))?,
            };
            let want = candle_core::Module::forward(&rounded, &read)?;
            let diff = (got.flatten_all()? - want.flatten_all()?)?
                .abs()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert!(diff < 1e-4, "{format:?}: {diff}");
            let exact = candle_core::Module::forward(layer.dense(), &x.reshape((2, 96))?)?;
            let off = (got.flatten_all()? - exact.flatten_all()?)?
                .abs()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert!(off > 0.0, "{format:?}: the packed weight was not used");
            let many = Tensor::randn(0f32, 1.0, (12, 96), &dev)?;
            let prefill = layer.forward(&many)?;
            let dense = candle_core::Module::forward(layer.dense(), &many)?;
            let diff = (prefill - dense)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert!(diff < 1e-4, "{format:?} prefill: {diff}");
            layer.pack_steps(RowFormat::F32)?;
            assert_eq!(layer.step_format(), RowFormat::F32);
        }
        Ok(())
    }

    /// Few rows (the kernel) and many (Candle) give Candle's `Linear` result, with and without a
    /// bias, for 2-D and 3-D inputs.
    #[test]
    fn matches_candles_linear() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (96, 80), &dev)?;
        let b = Tensor::randn(0f32, 1.0, 96, &dev)?;
        for layer in [
            Linear::new(w.clone(), None),
            Linear::new(w.clone(), Some(b.clone())),
        ] {
            for shape in [
                vec![1usize, 80],
                vec![2, 1, 80],
                vec![3, 80],
                vec![4, 5, 80],
            ] {
                let x = Tensor::randn(0f32, 1.0, shape.as_slice(), &dev)?;
                let got = linear(&layer, &x)?;
                let rows: usize = shape[..shape.len() - 1].iter().product();
                let want = candle_core::Module::forward(&layer, &x.reshape((rows, 80))?)?;
                let diff = (got.flatten_all()? - want.flatten_all()?)?
                    .abs()?
                    .max(0)?
                    .to_scalar::<f32>()?;
                assert!(diff < 1e-4, "{shape:?}: {diff}");
                assert_eq!(got.dims()[..shape.len() - 1], shape[..shape.len() - 1]);
            }
        }
        Ok(())
    }
}
