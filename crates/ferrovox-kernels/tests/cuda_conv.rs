//! `CudaConv1d` on a CUDA device against Candle's CPU convolutions, with TF32 off (three
//! TF32 products per term: f32-level error) and on. Built with `--features cuda` and run on the
//! GPU machine by `run.sh parity`; it fails where no CUDA device opens.
#![cfg(feature = "cuda")]

use candle_core::{Device, Tensor};
use ferrovox_kernels::{ConvPipeline, CudaConv1d};

const PIPELINES: [ConvPipeline; 3] = [
    ConvPipeline::Sync,
    ConvPipeline::Registers,
    ConvPipeline::WeightsAsync,
];

fn cuda() -> Device {
    Device::new_cuda(0).expect("a CUDA device")
}

/// Largest difference relative to the reference's largest magnitude.
fn relative_error(got: &Tensor, want: &Tensor) -> f32 {
    let got = got.to_device(&Device::Cpu).unwrap();
    let diff = ferrovox_kernels::compare::max_abs_diff(&got, want).unwrap();
    let scale = want
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    diff / scale
}

/// `run(op)` on every pipeline: each within `bound` of `want`, and all of them equal bit for
/// bit, since they stage the same rounded values and sum the products in the same order.
fn check_pipelines(
    op: &CudaConv1d,
    want: &Tensor,
    bound: f32,
    what: &str,
    run: impl Fn(CudaConv1d) -> Tensor,
) {
    let mut first: Option<Tensor> = None;
    for pipeline in PIPELINES {
        let op = op.clone().with_pipeline(pipeline);
        assert_eq!(op.pipeline(), pipeline, "{what}: {pipeline:?} applies");
        let got = run(op);
        let err = relative_error(&got, want);
        println!("{what} {pipeline:?}: relative error {err:.2e} (bound {bound:.0e})");
        assert!(
            err < bound,
            "{what} {pipeline:?}: relative error {err} over {bound}"
        );
        match &first {
            None => first = Some(got),
            Some(f) => {
                let d = ferrovox_kernels::compare::max_abs_diff(&got, f).unwrap();
                assert_eq!(d, 0.0, "{what}: {pipeline:?} differs from Sync by {d}");
            }
        }
    }
}

fn leaky_relu(x: &Tensor, slope: f64) -> Tensor {
    x.maximum(&(x * slope).unwrap()).unwrap()
}

/// Every case in one test: the TF32 switch is process-global.
#[test]
fn matches_candle_with_tf32_off_and_on() {
    let gpu = cuda();
    let cpu = Device::Cpu;
    for (tf32, bound) in [(false, 2e-5f32), (true, 5e-3)] {
        candle_core::cuda_backend::set_gemm_reduced_precision_f32(tf32);
        // (batch, in, out, taps, len, padding, dilation, slope, residuals)
        for (b, cin, cout, k, len, p, d, slope, nres) in [
            (2, 64, 64, 3, 1000, 1, 1, None, 0),
            (3, 40, 32, 11, 777, 25, 5, Some(0.1), 2),
            // 64 output channels, 11 taps at dilation 5: WeightsAsync's buffers need 57 KiB.
            (2, 128, 64, 11, 600, 25, 5, Some(0.1), 1),
            (1, 192, 384, 5, 300, 2, 1, None, 1),
            (2, 24, 70, 7, 50, 3, 1, Some(0.01), 1),
            (1, 16, 1, 7, 9, 3, 1, Some(0.01), 0),
            (4, 8, 33, 3, 130, 0, 2, None, 0),
        ] {
            let x = Tensor::randn(0f32, 1., (b, cin, len), &cpu).unwrap();
            let w = Tensor::randn(0f32, 0.3, (cout, cin, k), &cpu).unwrap();
            let bias = Tensor::randn(0f32, 0.3, cout, &cpu).unwrap();
            let input = slope.map_or(x.clone(), |s| leaky_relu(&x, s));
            let mut want = input
                .conv1d(&w, p, 1, d, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, cout, 1)).unwrap())
                .unwrap();
            let residuals: Vec<Tensor> = (0..nres)
                .map(|_| Tensor::randn(0f32, 1., want.dims(), &cpu).unwrap())
                .collect();
            for r in &residuals {
                want = (want + r).unwrap();
            }
            let mut op = CudaConv1d::new(
                &w.to_device(&gpu).unwrap(),
                Some(&bias.to_device(&gpu).unwrap()),
                p,
                d,
            )
            .unwrap()
            .expect("the kernel applies on CUDA");
            if let Some(s) = slope {
                op = op.with_input_leaky_relu(s as f32);
            }
            let xg = x.to_device(&gpu).unwrap();
            let rg: Vec<Tensor> = residuals
                .iter()
                .map(|r| r.to_device(&gpu).unwrap())
                .collect();
            let what = format!("conv b{b} {cin}->{cout} k{k} len{len} p{p} d{d} tf32 {tf32}");
            check_pipelines(&op, &want, bound, &what, |op| {
                match rg.as_slice() {
                    [] => xg.apply_op1(op),
                    [r] => xg.apply_op2(r, op),
                    [r, s] => xg.apply_op3(r, s, op),
                    _ => unreachable!(),
                }
                .unwrap()
            });
        }
        // HiFi-GAN upsamplers: kernel 2·stride, padding stride/2.
        for (b, cin, cout, stride, len) in
            [(2, 64, 32, 8, 40), (1, 32, 16, 2, 301), (3, 48, 24, 4, 17)]
        {
            let k = 2 * stride;
            let x = Tensor::randn(0f32, 1., (b, cin, len), &cpu).unwrap();
            let w = Tensor::randn(0f32, 0.3, (cin, cout, k), &cpu).unwrap();
            let bias = Tensor::randn(0f32, 0.3, cout, &cpu).unwrap();
            let items: Vec<Tensor> = (0..b)
                .map(|i| {
                    leaky_relu(&x.narrow(0, i, 1).unwrap(), 0.1)
                        .conv_transpose1d(&w, 0, 0, stride, 1, 1)
                        .unwrap()
                })
                .collect();
            let want = Tensor::cat(&items, 0)
                .unwrap()
                .narrow(2, stride / 2, len * stride)
                .unwrap()
                .broadcast_add(&bias.reshape((1, cout, 1)).unwrap())
                .unwrap();
            let op = CudaConv1d::transposed(
                &w.to_device(&gpu).unwrap(),
                &bias.to_device(&gpu).unwrap(),
                stride,
                stride / 2,
            )
            .unwrap()
            .expect("HiFi-GAN's upsampler shape has a polyphase form")
            .with_input_leaky_relu(0.1);
            let xg = x.to_device(&gpu).unwrap();
            let what =
                format!("transposed b{b} {cin}->{cout} stride {stride} len{len} tf32 {tf32}");
            check_pipelines(&op, &want, bound, &what, |op| xg.apply_op1(op).unwrap());
        }
    }
}

#[test]
fn wrong_inputs_are_errors() {
    let gpu = cuda();
    let w = Tensor::zeros((4, 8, 3), candle_core::DType::F32, &gpu).unwrap();
    let op = CudaConv1d::new(&w, None, 1, 1).unwrap().unwrap();
    let x = Tensor::zeros((1, 6, 20), candle_core::DType::F32, &gpu).unwrap();
    assert!(x.apply_op1(op.clone()).is_err(), "wrong channel count");
    let x = Tensor::zeros((1, 8, 20), candle_core::DType::F32, &gpu).unwrap();
    let r = Tensor::zeros((1, 4, 19), candle_core::DType::F32, &gpu).unwrap();
    assert!(
        x.apply_op2(&r, op.clone()).is_err(),
        "residual of another shape"
    );
    let x = Tensor::zeros((1, 8, 20), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(x.apply_op1(op).is_err(), "CPU input");
    let w6 = Tensor::zeros((4, 8, 6), candle_core::DType::F32, &gpu).unwrap();
    assert!(
        CudaConv1d::new(&w6, None, 0, 1).unwrap().is_none(),
        "a kernel size without an instantiation falls back"
    );
}
