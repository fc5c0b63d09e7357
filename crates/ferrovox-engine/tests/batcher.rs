//! Dynamic batching with a model whose output reveals its input, and the real joe voice.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrovox_engine::{
    check_range, BatchKey, Batcher, BatcherConfig, EngineError, SynthesisOptions, TtsModel, Unit,
    VitsOptions,
};

/// An id the echo model refuses as input.
const REFUSED: u32 = 999_999;

/// Returns, for each unit, its ids as samples; records each batch size; sleeps per batch.
/// With a memory budget, a batch needs `per_unit` bytes a unit out of what a (fake) memory
/// source says is free, and a bigger one fails as CUDA does when it runs out.
struct Echo {
    batches: Mutex<Vec<usize>>,
    budget: Option<(Box<dyn ferrovox_device::MemorySource + Send + Sync>, u64)>,
    /// A device each unit allocates this many bytes on, its output passing through them.
    on_device: Option<(candle_core::Device, usize)>,
}

impl Echo {
    fn new() -> Self {
        Self {
            batches: Mutex::new(Vec::new()),
            budget: None,
            on_device: None,
        }
    }

    fn tight(free: u64, per_unit: u64) -> Self {
        let memory = move || {
            Ok(ferrovox_device::MemoryInfo {
                total: free.max(1) * 8,
                free,
            })
        };
        Self {
            budget: Some((Box::new(memory), per_unit)),
            ..Self::new()
        }
    }
}

impl TtsModel for Echo {
    fn id(&self) -> &str {
        "echo"
    }
    fn sample_rate(&self) -> u32 {
        8000
    }
    fn speakers(&self) -> usize {
        1
    }
    fn languages(&self) -> Vec<String> {
        vec!["xx".into()]
    }
    fn family(&self) -> ferrovox_voices::Family {
        ferrovox_voices::Family::Piper
    }
    fn validate(&self, options: &SynthesisOptions) -> Result<(), EngineError> {
        check_range("noise_w", options.vits.noise_w, 0.0, 2.0)
    }
    fn batch_key(&self, _: &SynthesisOptions) -> BatchKey {
        Vec::new()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn prepare(&self, text: &str, _: &SynthesisOptions) -> Result<Vec<Unit>, EngineError> {
        Ok(text
            .split('.')
            .filter(|s| !s.trim().is_empty())
            .map(|s| Unit::sentence(s.bytes().map(u32::from).collect()))
            .collect())
    }
    fn synthesize_units(
        &self,
        units: &[Unit],
        _: &SynthesisOptions,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        self.batches.lock().unwrap().push(units.len());
        std::thread::sleep(Duration::from_millis(20));
        if let Some((memory, per_unit)) = &self.budget {
            let needed = units.len() as u64 * per_unit;
            if needed > memory.memory().unwrap().free {
                return Err(candle_core::Error::Msg(format!(
                    "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\") allocating {needed} bytes"
                ))
                .into());
            }
        }
        if let Some((device, per_unit)) = &self.on_device {
            let work = candle_core::Tensor::ones(
                (units.len(), per_unit / 4),
                candle_core::DType::F32,
                device,
            )?;
            let ones = work.mean(1)?.to_vec1::<f32>()?;
            return Ok(units
                .iter()
                .zip(ones)
                .map(|(u, one)| u.ids.iter().map(|&i| i as f32 * one).collect())
                .collect());
        }
        // A unit starting with REFUSED is input the model refuses.
        if units.iter().any(|u| u.ids.first() == Some(&REFUSED)) {
            return Err(EngineError::InvalidOption {
                field: "input",
                reason: "a refused id".into(),
            });
        }
        Ok(units
            .iter()
            .map(|u| u.ids.iter().map(|&i| i as f32).collect())
            .collect())
    }
}

#[test]
fn concurrent_requests_are_batched_and_routed_back() {
    let echo = Arc::new(Echo::new());
    let config = BatcherConfig {
        max_batch: 8,
        max_wait: Duration::from_millis(30),
        queue_capacity: 64,
    };
    let batcher = Arc::new(Batcher::new(echo.clone(), config));
    let handles: Vec<_> = (0..16u32)
        .map(|i| {
            let b = batcher.clone();
            std::thread::spawn(move || {
                let unit = Unit::sentence(vec![i, i + 1, i + 2]);
                let out = b
                    .synthesize_units(vec![unit], SynthesisOptions::default())
                    .unwrap();
                assert_eq!(
                    out,
                    vec![vec![i as f32, (i + 1) as f32, (i + 2) as f32]],
                    "request {i}"
                );
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let stats = batcher.stats();
    assert_eq!(stats.units, 16);
    assert!(stats.largest_batch > 1, "{stats:?}");
    assert!(stats.batches < 16, "{stats:?}");
    assert!(echo.batches.lock().unwrap().iter().all(|&b| b <= 8));
    assert_eq!(
        stats.size_histogram.iter().sum::<u64>(),
        stats.batches as u64
    );
    let mut expected = [0u64; ferrovox_engine::BATCH_SIZE_BOUNDS.len()];
    for &b in echo.batches.lock().unwrap().iter() {
        expected[ferrovox_engine::BATCH_SIZE_BOUNDS
            .iter()
            .position(|&x| b <= x)
            .unwrap()] += 1;
    }
    assert_eq!(stats.size_histogram, expected);
}

#[test]
fn a_full_queue_refuses_and_nothing_inside_the_bound_is_lost() {
    let echo = Arc::new(Echo::new());
    let config = BatcherConfig {
        max_batch: 1,
        max_wait: Duration::ZERO,
        queue_capacity: 2,
    };
    let batcher = Arc::new(Batcher::new(echo, config));
    let handles: Vec<_> = (0..12u32)
        .map(|i| {
            let b = batcher.clone();
            std::thread::spawn(move || {
                b.synthesize_units(vec![Unit::sentence(vec![i])], SynthesisOptions::default())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(EngineError::Overloaded)))
        .count();
    let served = results.iter().filter(|r| r.is_ok()).count();
    assert!(refused > 0, "no request was refused");
    assert_eq!(served + refused, 12, "a request was lost: {results:?}");
}

#[test]
fn invalid_options_are_refused_before_queueing() {
    let echo = Arc::new(Echo::new());
    let batcher = Batcher::new(echo.clone(), BatcherConfig::default());
    let options = SynthesisOptions {
        vits: VitsOptions {
            noise_w: Some(7.0),
            ..Default::default()
        },
        ..Default::default()
    };
    let err = batcher
        .synthesize_units(vec![Unit::sentence(vec![1])], options)
        .unwrap_err();
    assert!(err.to_string().contains("noise_w"), "{err}");
    assert!(echo.batches.lock().unwrap().is_empty());
}

/// A request the model refuses, batched with good ones: it gets its own input error (its kind
/// kept), and the others their audio.
#[test]
fn a_bad_request_in_a_batch_keeps_its_error_and_spares_the_others() {
    let echo = Arc::new(Echo::new());
    let config = BatcherConfig {
        max_batch: 8,
        max_wait: Duration::from_millis(100),
        queue_capacity: 8,
    };
    let batcher = Arc::new(Batcher::new(echo.clone(), config));
    let handles: Vec<_> = [vec![5u32, 6], vec![REFUSED], vec![7]]
        .into_iter()
        .map(|ids| {
            let b = batcher.clone();
            std::thread::spawn(move || {
                b.synthesize_units(vec![Unit::sentence(ids)], SynthesisOptions::default())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results[0].as_ref().unwrap()[0], [5.0, 6.0]);
    let err = results[1].as_ref().unwrap_err();
    assert!(
        matches!(err, EngineError::InvalidOption { field: "input", .. }),
        "{err}"
    );
    assert!(err.is_input_error());
    assert_eq!(results[2].as_ref().unwrap()[0], [7.0]);
    assert!(
        echo.batches.lock().unwrap().iter().any(|&n| n > 1),
        "they did share a batch"
    );
}

#[test]
fn a_batch_out_of_memory_runs_again_smaller_and_every_request_succeeds() {
    // 3 units' worth free: batches of 8 and 4 run out, 2 fits.
    let per_unit = 1 << 30;
    let tight = Arc::new(Echo::tight(3 * per_unit, per_unit));
    let batcher = Arc::new(Batcher::new(
        tight.clone(),
        BatcherConfig {
            max_batch: 8,
            max_wait: Duration::from_millis(50),
            queue_capacity: 64,
        },
    ));
    let run = |n: u32| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let b = batcher.clone();
                std::thread::spawn(move || {
                    let out = b.synthesize_units(
                        vec![Unit::sentence(vec![i])],
                        SynthesisOptions::default(),
                    );
                    assert_eq!(out.unwrap(), vec![vec![i as f32]], "request {i}");
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    };
    run(8);
    let stats = batcher.stats();
    assert!(stats.oom_retries >= 1, "{stats:?}");
    assert_eq!(stats.ceiling, 2, "{stats:?}");
    assert_eq!(stats.units, 8);
    // Later batches start at the lowered ceiling: nothing runs out of memory again.
    tight.batches.lock().unwrap().clear();
    run(8);
    let later = tight.batches.lock().unwrap().clone();
    assert!(
        later
            .iter()
            .all(|&n| n <= 2 && n as u64 * per_unit <= 3 * per_unit),
        "{later:?}"
    );
    assert_eq!(batcher.stats().oom_retries, stats.oom_retries);
}

#[test]
fn a_single_unit_out_of_memory_fails_with_the_device_error() {
    let tight = Arc::new(Echo::tight(0, 1));
    let batcher = Batcher::new(tight, BatcherConfig::default());
    let err = batcher
        .synthesize_units(vec![Unit::sentence(vec![1])], SynthesisOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("out of memory"), "{err}");
    assert!(!err.is_input_error());
}

/// The same on a real GPU: a planner that reads the device's free memory before most of it was
/// taken plans batches of 8, the device then has room for 2, and CUDA itself refuses the
/// larger batches. Each unit allocates `per_unit` bytes on the device, and its output passes
/// through that memory.
#[cfg(feature = "cuda")]
#[test]
fn on_cuda_a_batch_the_device_cannot_hold_runs_again_smaller() {
    use candle_core::{DType, Device, Tensor};
    use ferrovox_device::planner::{BatchPlanner, ItemCost, PlannerConfig};

    let device = Device::new_cuda(0).expect("a CUDA device");
    let gib = 1usize << 30;
    let per_unit = 2 * gib;
    let before = ferrovox_device::memory::device_memory(&device).unwrap();
    let planner = BatchPlanner::new(
        PlannerConfig {
            margin: 0.9,
            max_batch: 8,
        },
        ItemCost {
            fixed: 0,
            per_item: per_unit as u64,
        },
    );
    let planned = planner.plan_for_free(before.free);
    assert_eq!(planned, 8, "{before:?}");
    // Leave 5 GiB: batches of 8 (16 GiB) and 4 (8 GiB) cannot be held, 2 (4 GiB) can.
    let ballast =
        Tensor::zeros(((before.free as usize - 5 * gib) / 4,), DType::F32, &device).unwrap();
    let after = ferrovox_device::memory::device_memory(&device).unwrap();
    eprintln!(
        "device memory: {} MiB free planned on, {} MiB free with the ballast",
        before.free >> 20,
        after.free >> 20
    );
    let model = Arc::new(Echo {
        on_device: Some((device, per_unit)),
        ..Echo::new()
    });
    let batcher = Arc::new(Batcher::new(
        model.clone(),
        BatcherConfig {
            max_batch: planned,
            max_wait: Duration::from_millis(100),
            queue_capacity: 64,
        },
    ));
    let run = |n: u32| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let b = batcher.clone();
                std::thread::spawn(move || {
                    b.synthesize_units(vec![Unit::sentence(vec![i + 1])], Default::default())
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            let out = h.join().unwrap().expect("every request succeeds");
            assert_eq!(out, vec![vec![i as f32 + 1.0]], "request {i}");
        }
    };
    run(8);
    let stats = batcher.stats();
    eprintln!("batches {:?}, {stats:?}", model.batches.lock().unwrap());
    assert!(stats.oom_retries >= 1, "{stats:?}");
    assert_eq!(stats.ceiling, 2, "{stats:?}");
    assert_eq!(stats.units, 8);
    model.batches.lock().unwrap().clear();
    run(8);
    assert!(model.batches.lock().unwrap().iter().all(|&n| n <= 2));
    assert_eq!(batcher.stats().oom_retries, stats.oom_retries);
    drop(ballast);
}
