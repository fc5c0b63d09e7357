//! Conv weights stored with weight norm (`torch.nn.utils.weight_norm` or its parametrization
//! form), folded into a plain weight at load.

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

/// How [`weight_normed`] computes `w = g · v / ‖v‖`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WeightNormFold {
    /// With tensor ops on the weight's device (fast; the norm rounds as Candle sums it).
    #[default]
    Device,
    /// On the host, each norm summed in f64 and rounded once, then the f32 scale `g / ‖v‖`
    /// multiplying `v`: the rounding of torch's fused CPU kernel (`torch._weight_norm`), for
    /// models whose output amplifies a 1-ulp weight difference (HiFT's F0 path).
    HostF64,
}

/// A conv weight of `shape`: plain `weight`, or weight norm as
/// `parametrizations.weight.original0/1` (torch >= 2.1) or `weight_g`/`weight_v` (older files),
/// folded as `fold` says. The norm is taken over every dim but 0 (per output channel of a conv,
/// per input channel of a transposed conv).
pub fn weight_normed(
    vb: &VarBuilder,
    shape: (usize, usize, usize),
    fold: WeightNormFold,
) -> Result<Tensor> {
    let gain_shape = (shape.0, 1, 1);
    let (g, v) = if vb.contains_tensor("parametrizations.weight.original0") {
        (
            vb.get(gain_shape, "parametrizations.weight.original0")?,
            vb.get(shape, "parametrizations.weight.original1")?,
        )
    } else if vb.contains_tensor("weight_g") {
        (vb.get(gain_shape, "weight_g")?, vb.get(shape, "weight_v")?)
    } else {
        return vb.get(shape, "weight");
    };
    match fold {
        WeightNormFold::Device => {
            let norm = v.sqr()?.sum_keepdim(2)?.sum_keepdim(1)?.sqrt()?;
            v.broadcast_mul(&g.broadcast_div(&norm)?)
        }
        WeightNormFold::HostF64 => fold_weight_norm_f64(&g, &v),
    }
}

/// `torch._weight_norm(v, g, 0)` with torch's CPU rounding (see [`WeightNormFold::HostF64`]).
pub fn fold_weight_norm_f64(g: &Tensor, v: &Tensor) -> Result<Tensor> {
    let rows = v.dim(0)?;
    let v32 = v.to_dtype(DType::F32)?.flatten_from(1)?.to_vec2::<f32>()?;
    let g32 = g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    if g32.len() != rows {
        candle_core::bail!(
            "weight norm: g has {} values for {rows} rows of v",
            g32.len()
        );
    }
    let mut folded = Vec::with_capacity(v.elem_count());
    for (row, &gain) in v32.iter().zip(&g32) {
        let norm = row.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt() as f32;
        let scale = gain / norm;
        folded.extend(row.iter().map(|&x| x * scale));
    }
    Tensor::from_vec(folded, v.dims(), v.device())?.to_dtype(v.dtype())
}

/// `weight · factor`, untouched when the factor is 1.
pub fn scaled(weight: Tensor, factor: f64) -> Result<Tensor> {
    if factor == 1.0 {
        Ok(weight)
    } else {
        weight * factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use std::collections::HashMap;

    #[test]
    fn both_folds_agree_and_every_stored_form_loads() {
        let dev = Device::Cpu;
        let g = Tensor::randn(0f32, 1., (4, 1, 1), &dev).unwrap();
        let v = Tensor::randn(0f32, 1., (4, 3, 5), &dev).unwrap();
        let want = fold_weight_norm_f64(&g, &v).unwrap();
        for (gk, vk) in [
            ("weight_g", "weight_v"),
            (
                "parametrizations.weight.original0",
                "parametrizations.weight.original1",
            ),
        ] {
            let vb = VarBuilder::from_tensors(
                HashMap::from([(gk.to_string(), g.clone()), (vk.to_string(), v.clone())]),
                DType::F32,
                &dev,
            );
            for fold in [WeightNormFold::Device, WeightNormFold::HostF64] {
                let got = weight_normed(&vb, (4, 3, 5), fold).unwrap();
                let d = ferrovox_kernels::compare::max_abs_diff(&got, &want).unwrap();
                assert!(d < 1e-6, "{gk} {fold:?}: {d}");
            }
        }
        let plain = VarBuilder::from_tensors(
            HashMap::from([("weight".to_string(), v.clone())]),
            DType::F32,
            &dev,
        );
        let got = weight_normed(&plain, (4, 3, 5), WeightNormFold::Device).unwrap();
        assert_eq!(
            ferrovox_kernels::compare::max_abs_diff(&got, &v).unwrap(),
            0.0
        );
        // A missing weight names its key.
        let err = weight_normed(&plain.pp("conv"), (4, 3, 5), WeightNormFold::Device)
            .unwrap_err()
            .to_string();
        assert!(err.contains("conv.weight"), "{err}");
    }
}
