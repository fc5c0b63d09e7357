//! Where a model's time goes, by named stage, for benches and `doctor`-style reports: what
//! PyTorch users get from `record_function` without a profiler attached.
//!
//! Off by default, and then a stage costs one relaxed atomic load. Switched on (by
//! [`enable`] or `FERROVOX_PROFILE_STAGES=1`), each stage synchronizes its device before and
//! after, so asynchronous GPU work is charged to the stage that queued it; that serializes
//! the host and the device, so timings taken with stages on are a breakdown, not a speed.
//! Nested stages are charged to both, the inner under its own name.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use candle_core::Device;

/// 0: not yet read from the environment, 1: off, 2: on.
static STATE: AtomicU8 = AtomicU8::new(0);
static TOTALS: Mutex<Vec<StageTotal>> = Mutex::new(Vec::new());

/// The time charged to one stage since the last [`take`].
#[derive(Debug, Clone, PartialEq)]
pub struct StageTotal {
    pub name: &'static str,
    pub calls: u64,
    pub total: Duration,
}

/// Whether stages are being timed.
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        2 => true,
        1 => false,
        _ => {
            let on = matches!(
                std::env::var("FERROVOX_PROFILE_STAGES").as_deref(),
                Ok("1") | Ok("true")
            );
            STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
    }
}

/// Turns stage timing on or off for the whole process.
pub fn enable(on: bool) {
    STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// Runs `f`, charging its time on `device` to `name` when stages are timed.
pub fn stage<T, E>(
    name: &'static str,
    device: &Device,
    f: impl FnOnce() -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    if !enabled() {
        return f();
    }
    // A failed synchronisation surfaces in the work itself; the timing just goes without it.
    let _ = device.synchronize();
    let start = Instant::now();
    let out = f();
    let _ = device.synchronize();
    record(name, start.elapsed());
    out
}

fn record(name: &'static str, took: Duration) {
    let mut totals = TOTALS.lock().unwrap_or_else(|p| p.into_inner());
    match totals.iter_mut().find(|t| t.name == name) {
        Some(t) => {
            t.calls += 1;
            t.total += took;
        }
        None => totals.push(StageTotal {
            name,
            calls: 1,
            total: took,
        }),
    }
}

/// The totals since the last call, in the order the stages first ran; resets them.
pub fn take() -> Vec<StageTotal> {
    std::mem::take(&mut *TOTALS.lock().unwrap_or_else(|p| p.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_charged_only_when_enabled() {
        let cpu = Device::Cpu;
        enable(false);
        stage("off", &cpu, || Ok::<_, ()>(())).unwrap();
        assert!(take().iter().all(|t| t.name != "off"));
        enable(true);
        for _ in 0..3 {
            stage("outer", &cpu, || {
                stage("inner", &cpu, || {
                    std::thread::sleep(Duration::from_millis(2));
                    Ok::<_, ()>(())
                })
            })
            .unwrap();
        }
        let err = stage("failing", &cpu, || Err::<(), _>("no"));
        enable(false);
        assert_eq!(err, Err("no"));
        let totals = take();
        let get = |n: &str| totals.iter().find(|t| t.name == n).unwrap().clone();
        let (outer, inner) = (get("outer"), get("inner"));
        assert_eq!((outer.calls, inner.calls, get("failing").calls), (3, 3, 1));
        assert!(inner.total >= Duration::from_millis(6));
        assert!(outer.total >= inner.total);
        assert_eq!(totals[0].name, "inner", "first finished, first listed");
        assert!(take().is_empty());
    }
}
