//! `cargo xtask bench decode-gemm --device cuda`: the matrix products of one T3 decode step
//! alone (30 layers of Chatterbox's Llama at full size: fused q/k/v, output, fused gate/up,
//! down; two rows, the CFG pair), captured as one graph and replayed, beside the weight-read
//! floor from a device-to-device copy measured in the same run: Candle's matmul (cuBLAS)
//! against ferrovox's few-row kernel (`cuda_decode::rows_linear`). The difference between the
//! whole step and these products is what the step's other kernels cost.

use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;
use ferrovox_device::{DeviceRequest, GraphCache, Runtime, TuningConfig};
use serde_json::json;

/// (rows out, columns in) of one layer's products, in the order a step runs them.
const SHAPES: [(usize, usize); 4] = [(3072, 1024), (1024, 1024), (8192, 1024), (1024, 4096)];
const LAYERS: usize = 30;
const REPLAYS: usize = 50;

pub fn run(request: &DeviceRequest) -> anyhow::Result<serde_json::Value> {
    let runtime = Runtime::init(request, &TuningConfig::from_env()?)?;
    let device = runtime.device().clone();
    anyhow::ensure!(
        device.is_cuda(),
        "decode-gemm measures CUDA graphs: pass --device cuda"
    );
    let copy_bw = copy_bandwidth(&device)?;
    let mut rows_out = Vec::new();
    let mut results = Vec::new();
    for dtype in [DType::F32, DType::BF16] {
        let layers = (0..LAYERS)
            .map(|_| {
                SHAPES
                    .iter()
                    .map(|&(o, i)| {
                        let w = (Tensor::randn(0f32, 1.0, (o, i), &device)? / (i as f64).sqrt())?;
                        Ok(Linear::new(w.to_dtype(dtype)?, None))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let bytes: usize =
            SHAPES.iter().map(|(o, i)| o * i).sum::<usize>() * LAYERS * dtype.size_in_bytes();
        for rows in [1usize, 2, 4, 8] {
            let x = Tensor::randn(0f32, 1.0, (rows, 1024), &device)?.to_dtype(dtype)?;
            let h = Tensor::randn(0f32, 1.0, (rows, 4096), &device)?.to_dtype(dtype)?;
            let step = |i: &[Tensor]| products(&layers, i, &|l, x| l.forward(x));
            // The kernel itself, whatever `FERROVOX_CUDA_ROWS` makes `linear` choose.
            let ours = |i: &[Tensor]| {
                products(&layers, i, &|l, x| {
                    ferrovox_kernels::cuda_decode::rows_linear(x, l.weight())
                })
            };
            let (cublas_ms, cublas_y) = replayed(&x, &h, &step)?;
            let (ours_ms, ours_y) = replayed(&x, &h, &ours)?;
            let err = ((&ours_y.to_dtype(DType::F32)? - &cublas_y.to_dtype(DType::F32)?)?
                .sqr()?
                .mean_all()?
                .sqrt()?
                .to_scalar::<f32>()?
                / cublas_y
                    .to_dtype(DType::F32)?
                    .sqr()?
                    .mean_all()?
                    .sqrt()?
                    .to_scalar::<f32>()?) as f64;
            let floor_ms = bytes as f64 / copy_bw * 1e3;
            rows_out.push(format!(
                "| {dtype:?} | {rows} | {cublas_ms:.3} ({:.0} GB/s) | {ours_ms:.3} ({:.0} GB/s) | {floor_ms:.3} | {err:.1e} |",
                bytes as f64 / (cublas_ms * 1e-3) / 1e9,
                bytes as f64 / (ours_ms * 1e-3) / 1e9
            ));
            results.push(
                json!({"dtype": format!("{dtype:?}"), "rows": rows, "cublas_ms": cublas_ms,
                "rows_linear_ms": ours_ms, "rel_rms_difference": err,
                "floor_ms": floor_ms, "weight_bytes": bytes}),
            );
        }
    }
    println!(
        "T3 decode step's products alone (30 layers, one graph, median of {REPLAYS} replays; the products also add a few small kernels)\n\
         | dtype | rows | Candle (cuBLAS) ms per step | ferrovox rows_linear ms | weight-read floor ms | rel. RMS difference |\n|---|---|---|---|---|---|"
    );
    for r in &rows_out {
        println!("{r}");
    }
    println!(
        "(device-to-device copy: {:.0} GB/s counting bytes read and written, on {})",
        copy_bw / 1e9,
        runtime.selection.name
    );
    Ok(json!({"copy_bytes_per_s": copy_bw, "cases": results}))
}

/// One step's products through `product`, each layer's outputs summed into one row so nothing
/// is dead code to the graph.
fn products(
    layers: &[Vec<Linear>],
    i: &[Tensor],
    product: &(dyn Fn(&Linear, &Tensor) -> candle_core::Result<Tensor> + Sync),
) -> candle_core::Result<Tensor> {
    let mut acc = Vec::with_capacity(LAYERS);
    for layer in layers {
        let a = product(&layer[0], &i[0])?;
        let b = product(&layer[1], &i[0])?;
        let c = product(&layer[2], &i[0])?;
        let d = product(&layer[3], &i[1])?;
        acc.push(
            (a.narrow(1, 0, 1024)? + b)?
                .add(&c.narrow(1, 0, 1024)?)?
                .add(&d)?,
        );
    }
    Tensor::stack(&acc, 0)
}

/// Milliseconds per replay of `f`'s graph (median over [`REPLAYS`] after a capture), and its
/// output.
fn replayed(
    x: &Tensor,
    h: &Tensor,
    f: &(dyn Fn(&[Tensor]) -> candle_core::Result<Tensor> + Sync),
) -> anyhow::Result<(f64, Tensor)> {
    let graphs = GraphCache::new("bench.decode_gemm");
    let mut y = None;
    for _ in 0..3 {
        y = Some(graphs.run(&[x, h], f)?.0);
    }
    anyhow::ensure!(
        graphs.graphs() == 1,
        "the products were not captured as a graph"
    );
    let device = x.device();
    let mut walls = Vec::with_capacity(REPLAYS);
    for _ in 0..REPLAYS {
        device.synchronize()?;
        let start = Instant::now();
        y = Some(graphs.run(&[x, h], f)?.0);
        device.synchronize()?;
        walls.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok((crate::util::median(walls), y.expect("ran")))
}

/// Bytes read plus written per second by a 1 GiB device-to-device copy (median of 10).
fn copy_bandwidth(device: &Device) -> anyhow::Result<f64> {
    let n = 1usize << 28;
    let src = Tensor::randn(0f32, 1.0, n, device)?;
    let dst = src.zeros_like()?;
    let mut walls = Vec::new();
    for rep in 0..12 {
        device.synchronize()?;
        let start = Instant::now();
        dst.slice_set(&src, 0, 0)?;
        device.synchronize()?;
        if rep >= 2 {
            walls.push(start.elapsed().as_secs_f64());
        }
    }
    Ok(2.0 * (n * 4) as f64 / crate::util::median(walls))
}
