//! `GraphCache` on a CUDA device: capture on the second sight of a shape, replays equal to
//! eager runs on new inputs, and captures that cannot work fall back to eager with a reason.
//! Built with `--features cuda` and run on the GPU machine by `run.sh parity`.
#![cfg(feature = "cuda")]

use candle_core::{Device, Tensor};
use ferrovox_device::{GraphCache, GraphRun};
use ferrovox_kernels::CudaConv1d;

fn cuda() -> Device {
    Device::new_cuda(0).expect("a CUDA device")
}

/// A decoder-like chain: ferrovox's conv, a broadcast add (a strided op whose index arrays
/// go through Candle's parameter cache), a reduction and tanh.
fn chain<'a>(
    conv: &'a CudaConv1d,
    bias: &'a Tensor,
) -> impl Fn(&[Tensor]) -> candle_core::Result<Tensor> + 'a {
    move |x: &[Tensor]| {
        let y = x[0].apply_op1(conv.clone())?.broadcast_add(bias)?;
        let y = y.broadcast_sub(&y.mean_keepdim(2)?)?;
        y.tanh()
    }
}

#[test]
fn replays_match_eager_runs_on_new_inputs() {
    let dev = cuda();
    let w = Tensor::randn(0f32, 0.2, (32, 16, 7), &dev).unwrap();
    let conv = CudaConv1d::new(&w, None, 3, 1)
        .unwrap()
        .expect("conv kernel");
    let bias = Tensor::randn(0f32, 1., (1, 32, 1), &dev).unwrap();
    let f = chain(&conv, &bias);
    let cache = GraphCache::new("test");
    let mut runs = Vec::new();
    for i in 0..5 {
        let x = Tensor::randn(0f32, 1., (2, 16, 300), &dev).unwrap();
        let (got, run) = cache.run(&[&x], &f).unwrap();
        let want = f(&[x]).unwrap();
        let diff = ferrovox_kernels::compare::max_abs_diff(&got, &want).unwrap();
        println!("call {i}: {run:?}, max abs difference from eager {diff:e}");
        assert_eq!(diff, 0.0, "call {i} ({run:?}) differs from eager");
        runs.push(run);
    }
    assert_eq!(
        runs[..3],
        [GraphRun::FirstSeen, GraphRun::Captured, GraphRun::Replayed]
    );
    assert_eq!(cache.graphs(), 1);
    // Another shape is another entry; the first graph still replays.
    let x = Tensor::randn(0f32, 1., (1, 16, 100), &dev).unwrap();
    assert_eq!(cache.run(&[&x], &f).unwrap().1, GraphRun::FirstSeen);
    let x = Tensor::randn(0f32, 1., (2, 16, 300), &dev).unwrap();
    assert_eq!(cache.run(&[&x], &f).unwrap().1, GraphRun::Replayed);
}

#[test]
fn a_host_round_trip_under_capture_falls_back_to_eager() {
    let dev = cuda();
    let cache = GraphCache::new("test");
    // Reads a value back to the host mid-way: cannot be captured.
    let f = |x: &[Tensor]| -> candle_core::Result<Tensor> {
        let scale = x[0]
            .abs()?
            .max_keepdim(1)?
            .flatten_all()?
            .to_vec1::<f32>()?[0];
        &x[0] * f64::from(scale)
    };
    let mut reasons = Vec::new();
    for _ in 0..4 {
        let x = Tensor::randn(0f32, 1., (1, 64), &dev).unwrap();
        let (got, run) = cache.run(&[&x], f).unwrap();
        let want = f(&[x]).unwrap();
        assert_eq!(
            ferrovox_kernels::compare::max_abs_diff(&got, &want).unwrap(),
            0.0
        );
        if let GraphRun::Fallback(reason) = run {
            reasons.push(reason);
        }
    }
    println!("fallback reasons: {reasons:?}");
    assert_eq!(
        reasons.len(),
        3,
        "the capture and both later calls are eager"
    );
    assert_eq!(cache.graphs(), 0);
    // The device is still usable after the failed capture.
    let x = Tensor::ones((4, 4), candle_core::DType::F32, &dev).unwrap();
    assert_eq!(
        x.sum_all().unwrap().to_scalar::<f32>().unwrap(),
        16.0,
        "device unusable after a failed capture"
    );
}

#[test]
fn the_cache_limit_keeps_further_shapes_eager() {
    std::env::set_var("FERROVOX_CUDA_GRAPHS_MAX", "1");
    let cache = GraphCache::new("test");
    std::env::remove_var("FERROVOX_CUDA_GRAPHS_MAX");
    let dev = cuda();
    let f = |x: &[Tensor]| (&x[0] * 3.0)?.exp();
    for len in [10, 20] {
        let x = Tensor::ones(len, candle_core::DType::F32, &dev).unwrap();
        cache.run(&[&x], f).unwrap();
        cache.run(&[&x], f).unwrap();
    }
    assert_eq!(cache.graphs(), 1);
    let x = Tensor::ones(20, candle_core::DType::F32, &dev).unwrap();
    assert!(matches!(
        cache.run(&[&x], f).unwrap().1,
        GraphRun::Fallback(_)
    ));
}

#[test]
fn several_outputs_and_variants_replay_like_eager_runs() {
    let dev = cuda();
    let table = Tensor::randn(0f32, 1., (50, 24), &dev).unwrap();
    // An index input (u32) and two outputs, one of them a view; the variant picks which
    // reduction is recorded.
    let f = |variant: usize| {
        let table = table.clone();
        move |i: &[Tensor]| -> candle_core::Result<Vec<Tensor>> {
            let rows = table.index_select(&i[0].flatten_all()?, 0)?;
            let scaled = rows.broadcast_mul(&i[1])?;
            let pooled = match variant {
                0 => scaled.sum_keepdim(1)?,
                _ => scaled.max_keepdim(1)?,
            };
            // A transposed view: outputs need not be contiguous.
            Ok(vec![scaled.exp()?.t()?, pooled])
        }
    };
    let cache = GraphCache::new("test");
    for variant in [0, 1] {
        let mut runs = Vec::new();
        for call in 0..4u32 {
            let ids: Vec<u32> = (0..12)
                .map(|j| (j * 7 + call * 3 + variant as u32) % 50)
                .collect();
            let ids = Tensor::new(ids.as_slice(), &dev).unwrap();
            let scale = Tensor::randn(0f32, 1., (12, 1), &dev).unwrap();
            let (got, run) = cache
                .run_many(variant, &[&ids, &scale], f(variant))
                .unwrap();
            let want = f(variant)(&[ids, scale]).unwrap();
            assert_eq!(got.len(), 2);
            for (g, w) in got.iter().zip(&want) {
                let diff = ferrovox_kernels::compare::max_abs_diff(g, w).unwrap();
                assert_eq!(diff, 0.0, "variant {variant} call {call} ({run:?})");
            }
            runs.push(run);
        }
        assert_eq!(
            runs[..3],
            [GraphRun::FirstSeen, GraphRun::Captured, GraphRun::Replayed],
            "variant {variant}"
        );
    }
    assert_eq!(cache.graphs(), 2);
    assert!(cache.fallbacks().is_empty());
}

/// A graph captured for a thread that has since ended replays like an eager run: the host
/// data its capture uploaded (here a small weight made inside the captured function) must
/// outlive that thread, even once the allocator has handed its memory out again.
#[test]
fn a_graph_asked_for_by_an_ended_thread_replays_like_eager() {
    let dev = cuda();
    let f = |x: &[Tensor]| -> candle_core::Result<Tensor> {
        let scale = Tensor::new(&[1.5f32, -2.0, 0.5, 4.0], x[0].device())?;
        x[0].broadcast_mul(&scale)?.tanh()
    };
    let cache = GraphCache::new("ended thread");
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..2 {
                let x = Tensor::randn(0f32, 1., (3, 4), &dev).unwrap();
                cache.run(&[&x], f).unwrap();
            }
        });
    });
    assert_eq!(cache.graphs(), 1);
    // Memory freed when the thread ended goes to new tensors of the same size.
    let filler: Vec<Tensor> = (0..64)
        .map(|i| Tensor::new(&[i as f32; 4], &dev).unwrap())
        .collect();
    for call in 0..3 {
        let x = Tensor::randn(0f32, 1., (3, 4), &dev).unwrap();
        let (got, run) = cache.run(&[&x], f).unwrap();
        assert_eq!(run, GraphRun::Replayed);
        let diff = ferrovox_kernels::compare::max_abs_diff(&got, &f(&[x]).unwrap()).unwrap();
        assert_eq!(diff, 0.0, "replay {call} after the capturing thread ended");
    }
    drop(filler);
}
