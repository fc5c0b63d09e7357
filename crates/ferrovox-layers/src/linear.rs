//! torch's `Linear` without bias over the last axis, as one 2-D product: a few rows on the CPU
//! (a decoder step) through `few_rows_matmul`, which reads the weight in place, everything else
//! through Candle's matmul.

use candle_core::{DType, Result, Storage, Tensor};
use candle_nn::Linear;
use ferrovox_kernels::{few_rows_matmul, FEW_ROWS_MAX};

/// `x` `[.., in]` times `layer`'s weight `[out, in]` transposed, plus its bias, as `[.., out]`.
/// The leading axes are flattened into one GEMM's rows, so the weight is read once however
/// many rows there are (Candle's `Linear` on a 3-D input runs one product per batch entry).
/// `FERROVOX_FEW_ROWS=0` sends few-row products to Candle too, to measure the kernel.
pub fn linear(layer: &Linear, x: &Tensor) -> Result<Tensor> {
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
    if let Some(y) = few_rows(w, x, rows, k, out)? {
        let y = y.reshape(out_dims)?;
        return match layer.bias() {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        };
    }
    candle_core::Module::forward(layer, &x.reshape((rows, k))?)?.reshape(out_dims)
}

/// The product through `few_rows_matmul` when it applies: CPU, f32, at most
/// [`FEW_ROWS_MAX`] rows, a contiguous weight.
fn few_rows(w: &Tensor, x: &Tensor, rows: usize, k: usize, out: usize) -> Result<Option<Tensor>> {
    if !x.device().is_cpu()
        || x.dtype() != DType::F32
        || w.dtype() != DType::F32
        || rows == 0
        || rows > FEW_ROWS_MAX
        || !w.is_contiguous()
        || switched_off()
    {
        return Ok(None);
    }
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let (storage, layout) = w.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Ok(None);
    };
    let start = layout.start_offset();
    let weights = &cpu.as_slice::<f32>()?[start..start + out * k];
    let y = few_rows_matmul(&xs, rows, k, weights, out);
    Ok(Some(Tensor::from_vec(y, (rows, out), x.device())?))
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
