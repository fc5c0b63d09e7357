//! Prometheus metrics in the text exposition format: requests by status, errors by kind, the
//! queue, batch sizes, audio produced and real-time factor.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use ferrovox_engine::{BatcherStats, BATCH_SIZE_BOUNDS};

/// A per-voice metric: name, help, type and its value in a batcher's counts.
type PerVoice = (
    &'static str,
    &'static str,
    &'static str,
    fn(&BatcherStats) -> usize,
);

/// Upper bounds of the real-time-factor histogram (audio seconds per wall second).
const RTF_BOUNDS: [f64; 9] = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 500.0];
/// Upper bounds of the time-to-first-audio histogram, in seconds.
const TTFA_BOUNDS: [f64; 9] = [0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];

#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| v <= b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c;
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", self.sum, self.count);
    }
}

/// The server's counters.
#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    in_flight: AtomicI64,
    audio_seconds_micros: AtomicU64,
    rtf: Mutex<Histogram>,
    ttfa: Mutex<Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::default(),
            errors: Mutex::default(),
            in_flight: AtomicI64::new(0),
            audio_seconds_micros: AtomicU64::new(0),
            rtf: Mutex::new(Histogram::new(&RTF_BOUNDS)),
            ttfa: Mutex::new(Histogram::new(&TTFA_BOUNDS)),
        }
    }
}

/// A lock that a panicked holder left poisoned still guards plain data.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    /// Counts a finished request.
    pub fn request(&self, endpoint: &'static str, status: u16) {
        *lock(&self.requests).entry((endpoint, status)).or_default() += 1;
    }

    /// Counts an error by kind.
    pub fn error(&self, kind: &'static str) {
        *lock(&self.errors).entry(kind).or_default() += 1;
    }

    /// A synthesis request started (+1) or ended (-1).
    pub fn in_flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    /// Records a finished synthesis.
    pub fn synthesis(&self, audio_seconds: f64, wall_seconds: f64, first_audio_seconds: f64) {
        self.audio_seconds_micros
            .fetch_add((audio_seconds * 1e6) as u64, Ordering::Relaxed);
        if wall_seconds > 0.0 {
            lock(&self.rtf).observe(audio_seconds / wall_seconds);
        }
        lock(&self.ttfa).observe(first_audio_seconds);
    }

    /// The exposition text; `batchers` are the served voices' batcher counters.
    pub fn render(&self, batchers: &[(String, BatcherStats)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP ferrovox_requests_total HTTP requests by endpoint and status.\n# TYPE ferrovox_requests_total counter\n");
        for ((endpoint, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "ferrovox_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP ferrovox_errors_total Failed requests by error kind.\n# TYPE ferrovox_errors_total counter\n");
        for (kind, n) in lock(&self.errors).iter() {
            let _ = writeln!(out, "ferrovox_errors_total{{kind=\"{kind}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP ferrovox_queue_depth Synthesis requests admitted and not finished.\n# TYPE ferrovox_queue_depth gauge\nferrovox_queue_depth {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP ferrovox_audio_seconds_total Seconds of audio synthesized.\n# TYPE ferrovox_audio_seconds_total counter\nferrovox_audio_seconds_total {}",
            self.audio_seconds_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        lock(&self.rtf).write(
            &mut out,
            "ferrovox_real_time_factor",
            "Audio seconds per wall second, per request.",
        );
        lock(&self.ttfa).write(
            &mut out,
            "ferrovox_time_to_first_audio_seconds",
            "Seconds from admission to the first audio, per request.",
        );
        out.push_str("# HELP ferrovox_batch_size Units per model batch.\n# TYPE ferrovox_batch_size histogram\n");
        for (voice, stats) in batchers {
            let mut cumulative = 0;
            for (bound, n) in BATCH_SIZE_BOUNDS.iter().zip(&stats.size_histogram) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "ferrovox_batch_size_bucket{{voice=\"{voice}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "ferrovox_batch_size_bucket{{voice=\"{voice}\",le=\"+Inf\"}} {}\nferrovox_batch_size_sum{{voice=\"{voice}\"}} {}\nferrovox_batch_size_count{{voice=\"{voice}\"}} {}",
                stats.batches, stats.units, stats.batches
            );
        }
        let per_voice: [PerVoice; 2] = [
            (
                "ferrovox_batch_oom_retries_total",
                "Batches that ran out of device memory and ran again smaller.",
                "counter",
                |s| s.oom_retries,
            ),
            (
                "ferrovox_batch_ceiling",
                "Most units a model batch holds now (lowered after out-of-memory).",
                "gauge",
                |s| s.ceiling,
            ),
        ];
        for (name, help, kind, value) in per_voice {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (voice, stats) in batchers {
                let _ = writeln!(out, "{name}{{voice=\"{voice}\"}} {}", value(stats));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family_and_cumulative_buckets() {
        let m = Metrics::default();
        m.request("speech", 200);
        m.request("speech", 200);
        m.request("speech", 429);
        m.error("overloaded");
        m.synthesis(10.0, 1.0, 0.04);
        let stats = BatcherStats {
            batches: 3,
            units: 7,
            largest_batch: 4,
            oom_retries: 1,
            ceiling: 4,
            size_histogram: [1, 0, 2, 0, 0, 0, 0],
        };
        let text = m.render(&[("joe".into(), stats)]);
        for line in [
            "ferrovox_requests_total{endpoint=\"speech\",status=\"200\"} 2",
            "ferrovox_requests_total{endpoint=\"speech\",status=\"429\"} 1",
            "ferrovox_errors_total{kind=\"overloaded\"} 1",
            "ferrovox_queue_depth 0",
            "ferrovox_batch_oom_retries_total{voice=\"joe\"} 1",
            "ferrovox_batch_ceiling{voice=\"joe\"} 4",
            "ferrovox_audio_seconds_total 10",
            "ferrovox_real_time_factor_bucket{le=\"10\"} 1",
            "ferrovox_real_time_factor_bucket{le=\"5\"} 0",
            "ferrovox_time_to_first_audio_seconds_bucket{le=\"0.05\"} 1",
            "ferrovox_batch_size_bucket{voice=\"joe\",le=\"2\"} 1",
            "ferrovox_batch_size_bucket{voice=\"joe\",le=\"4\"} 3",
            "ferrovox_batch_size_sum{voice=\"joe\"} 7",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
