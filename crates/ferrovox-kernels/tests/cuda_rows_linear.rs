//! `cuda_decode::rows_linear` on a CUDA device against an f64 product on the CPU, for every
//! row count it takes, f32 and bf16, at T3's layer shapes and at an odd output count; the
//! shapes it must refuse. Built with `--features cuda` and run on the GPU machine; it fails
//! where no CUDA device opens.
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor};
use ferrovox_kernels::cuda_decode::{
    rows_linear, rows_linear_fits, rows_linear_swiglu, rows_linear_swiglu_fits, silu_mul,
    ROWS_LINEAR_MAX,
};

fn cuda() -> Device {
    Device::new_cuda(0).expect("a CUDA device")
}

/// ‖got − want‖ / ‖want‖ against the f64 product of the same (rounded) inputs.
fn relative_error(x: &Tensor, w: &Tensor, got: &Tensor) -> f64 {
    let f64s = |t: &Tensor| {
        t.to_device(&Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
    };
    let want = f64s(x).matmul(&f64s(w).t().unwrap()).unwrap();
    let diff = (f64s(got) - &want)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap();
    let norm = want.sqr().unwrap().sum_all().unwrap();
    (diff.to_scalar::<f64>().unwrap() / norm.to_scalar::<f64>().unwrap()).sqrt()
}

#[test]
fn rows_linear_matches_an_f64_product_for_every_row_count() {
    let dev = cuda();
    for (dtype, bound) in [(DType::F32, 1e-6), (DType::BF16, 8e-3)] {
        for (out, input) in [(3072, 1024), (1024, 4096), (77, 64)] {
            let w = Tensor::randn(0f32, 1.0, (out, input), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            for rows in 1..=ROWS_LINEAR_MAX {
                let x = Tensor::randn(0f32, 1.0, (rows, input), &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                assert!(rows_linear_fits(&x, &w), "{dtype:?} {rows}×{input}");
                let y = rows_linear(&x, &w).unwrap();
                assert_eq!(y.dims(), [rows, out]);
                let err = relative_error(&x, &w, &y);
                println!("{dtype:?} {rows} rows × [{out}, {input}]: relative error {err:.2e}");
                assert!(
                    err < bound,
                    "{dtype:?} {rows} rows × [{out}, {input}]: {err:.2e}"
                );
            }
            // Leading axes are kept: [2, 1, in] gives [2, 1, out].
            let x = Tensor::randn(0f32, 1.0, (2, 1, input), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            assert_eq!(rows_linear(&x, &w).unwrap().dims(), [2, 1, out]);
        }
    }
}

#[test]
fn the_swiglu_form_equals_silu_mul_then_the_product() {
    let dev = cuda();
    for (dtype, bound) in [(DType::F32, 1e-6), (DType::BF16, 8e-3)] {
        let (out, inter) = (1024, 4096);
        let w = Tensor::randn(0f32, 1.0, (out, inter), &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        for rows in [1, 2, 5, ROWS_LINEAR_MAX] {
            let gate_up = Tensor::randn(0f32, 1.0, (rows, 1, 2 * inter), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            assert!(rows_linear_swiglu_fits(&gate_up, &w));
            let y = rows_linear_swiglu(&gate_up, &w).unwrap();
            assert_eq!(y.dims(), [rows, 1, out]);
            // silu_mul's rounded product is what the fused kernel reads.
            let h = silu_mul(&gate_up).unwrap().reshape((rows, inter)).unwrap();
            let err = relative_error(&h, &w, &y.reshape((rows, out)).unwrap());
            println!("{dtype:?} swiglu {rows} rows: relative error {err:.2e}");
            assert!(err < bound, "{dtype:?} swiglu {rows} rows: {err:.2e}");
        }
        let plain = Tensor::randn(0f32, 1.0, (2, inter), &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        assert!(!rows_linear_swiglu_fits(&plain, &w), "half the width");
    }
}

#[test]
fn shapes_it_cannot_read_are_refused_not_miscomputed() {
    let dev = cuda();
    let w = Tensor::randn(0f32, 1.0, (64, 1024), &dev).unwrap();
    let too_many = Tensor::randn(0f32, 1.0, (ROWS_LINEAR_MAX + 1, 1024), &dev).unwrap();
    let wrong_width = Tensor::randn(0f32, 1.0, (2, 512), &dev).unwrap();
    let odd_in = Tensor::randn(0f32, 1.0, (64, 1023), &dev).unwrap();
    let odd_x = Tensor::randn(0f32, 1.0, (2, 1023), &dev).unwrap();
    // A view starting one element in: not 16-byte aligned.
    let shifted = Tensor::randn(0f32, 1.0, 2 * 1024 + 1, &dev)
        .unwrap()
        .narrow(0, 1, 2 * 1024)
        .unwrap()
        .reshape((2, 1024))
        .unwrap();
    let bf16 = Tensor::randn(0f32, 1.0, (2, 1024), &dev)
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap();
    for (x, w, what) in [
        (&too_many, &w, "too many rows"),
        (&wrong_width, &w, "wrong width"),
        (&odd_x, &odd_in, "in not a vector multiple"),
        (&shifted, &w, "unaligned start"),
        (&bf16, &w, "mixed dtypes"),
    ] {
        assert!(!rows_linear_fits(x, w), "{what}");
        assert!(rows_linear(x, w).is_err(), "{what}");
    }
}
