//! How far one tensor is from another, for parity checks of kernels and models.

use candle_core::{DType, Result, Tensor};

/// The largest absolute element difference, in f32; shapes must agree.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    if a.dims() != b.dims() {
        candle_core::bail!("shapes differ: {:?} vs {:?}", a.dims(), b.dims());
    }
    (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    #[test]
    fn finds_the_largest_difference_and_refuses_other_shapes() {
        let a = candle_core::Tensor::new(&[1f32, -2., 3.], &Device::Cpu).unwrap();
        let b = candle_core::Tensor::new(&[1f32, 2., 2.5], &Device::Cpu).unwrap();
        assert_eq!(super::max_abs_diff(&a, &b).unwrap(), 4.0);
        assert!(super::max_abs_diff(&a, &a.unsqueeze(0).unwrap()).is_err());
    }
}
