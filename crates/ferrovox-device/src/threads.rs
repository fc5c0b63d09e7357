//! CPU thread sizing: physical cores, lowered by a cgroup CPU quota and the affinity mask,
//! overridden by `FERROVOX_NUM_THREADS` or `RAYON_NUM_THREADS`.

use serde::Serialize;

/// Why the CPU pool has the size it has.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ThreadPlan {
    /// Threads the pool runs.
    pub threads: usize,
    /// Where the number came from: `FERROVOX_NUM_THREADS`, `RAYON_NUM_THREADS`, `config` or `auto`.
    pub source: String,
    /// Logical CPUs this process may run on (affinity mask).
    pub logical_cpus: usize,
    /// Physical cores (hyper-threads counted once).
    pub physical_cores: usize,
    /// CPUs allowed by the cgroup quota, when one is set.
    pub cgroup_cpu_limit: Option<f64>,
    /// Threads of Candle's own element-wise pool: 1 unless `CANDLE_NUM_THREADS` says
    /// otherwise. Its idle workers spin for 25,000 iterations after every op, taking the cores
    /// the rayon pool's kernels and GEMMs run on; element-wise ops are memory-bound and gain
    /// little from threads. Measured on 2 cores, joe paragraph: flow 0.27 → 0.14 s, text
    /// encoder 0.13 → 0.10 s, whole paragraph 0.95 → 0.76 s.
    pub elementwise_threads: usize,
}

/// Decides the pool size. `configured` is an explicit size from the caller's config.
pub fn plan(configured: Option<usize>) -> crate::Result<ThreadPlan> {
    let topology = Topology::read();
    let quota = cgroup_cpu_limit();
    let env = |name: &'static str| -> crate::Result<Option<usize>> {
        match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(crate::Error::InvalidSetting {
                    name,
                    value: v,
                    reason: "expected a positive integer".to_string(),
                }),
            },
            _ => Ok(None),
        }
    };
    let (threads, source) = if let Some(n) = env("FERROVOX_NUM_THREADS")? {
        (n, "FERROVOX_NUM_THREADS")
    } else if let Some(n) = env("RAYON_NUM_THREADS")? {
        (n, "RAYON_NUM_THREADS")
    } else if let Some(n) = configured.filter(|n| *n > 0) {
        (n, "config")
    } else {
        (auto_threads(&topology, quota), "auto")
    };
    Ok(ThreadPlan {
        threads,
        source: source.to_string(),
        logical_cpus: topology.logical,
        physical_cores: topology.physical,
        cgroup_cpu_limit: quota,
        elementwise_threads: env("CANDLE_NUM_THREADS")?.unwrap_or(1),
    })
}

/// Physical cores, never more than the quota allows (rounded up: a 1.5-CPU quota still
/// benefits from a second thread) nor the logical CPUs in the affinity mask.
pub fn auto_threads(topology: &Topology, quota: Option<f64>) -> usize {
    let mut n = topology.physical.min(topology.logical);
    if let Some(q) = quota {
        n = n.min(q.ceil().max(1.0) as usize);
    }
    n.max(1)
}

/// CPU topology as the process sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    /// Logical CPUs available to this process.
    pub logical: usize,
    /// Physical cores among them.
    pub physical: usize,
}

impl Topology {
    /// Reads the topology from `/sys` (Linux) or falls back to std's count.
    pub fn read() -> Self {
        let allowed = affinity_cpus();
        let logical = allowed.as_ref().map(Vec::len).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        let physical = allowed
            .as_deref()
            .and_then(physical_cores)
            .map_or(logical, |p| p.clamp(1, logical.max(1)));
        Self { logical, physical }
    }
}

/// The CPUs in this process's affinity mask (`Cpus_allowed_list` of /proc/self/status).
fn affinity_cpus() -> Option<Vec<usize>> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    parse_cpu_list(list.trim())
}

/// Distinct `(package, core)` pairs among `cpus`, from /sys.
fn physical_cores(cpus: &[usize]) -> Option<usize> {
    let mut cores = std::collections::HashSet::new();
    for cpu in cpus {
        let base = format!("/sys/devices/system/cpu/cpu{cpu}/topology");
        let package = std::fs::read_to_string(format!("{base}/physical_package_id")).ok()?;
        let core = std::fs::read_to_string(format!("{base}/core_id")).ok()?;
        cores.insert((package.trim().to_string(), core.trim().to_string()));
    }
    Some(cores.len())
}

/// Parses a kernel CPU list such as `0-3,8,10-11`.
pub fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (
                    a.trim().parse::<usize>().ok()?,
                    b.trim().parse::<usize>().ok()?,
                );
                cpus.extend(a..=b);
            }
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    Some(cpus)
}

/// CPUs allowed by the cgroup quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us`), if limited.
pub fn cgroup_cpu_limit() -> Option<f64> {
    if let Ok(s) = std::fs::read_to_string("/sys/fs/cgroup/cpu.max") {
        return parse_cpu_max(&s);
    }
    let quota = std::fs::read_to_string("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").ok()?;
    let period = std::fs::read_to_string("/sys/fs/cgroup/cpu/cpu.cfs_period_us").ok()?;
    let quota: i64 = quota.trim().parse().ok()?;
    let period: i64 = period.trim().parse().ok()?;
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
}

/// Parses cgroup v2 `cpu.max` (`"max 100000"` or `"150000 100000"`).
pub fn parse_cpu_max(s: &str) -> Option<f64> {
    let mut it = s.split_whitespace();
    let quota = it.next()?;
    let period: f64 = it.next()?.parse().ok()?;
    if quota == "max" || period <= 0.0 {
        return None;
    }
    Some(quota.parse::<f64>().ok()? / period)
}

/// The CPU model string from /proc/cpuinfo.
pub fn cpu_model_name() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11").unwrap(),
            [0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(parse_cpu_list("5").unwrap(), [5]);
        assert!(parse_cpu_list("a-b").is_none());
    }

    #[test]
    fn cpu_max() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(1.5));
        assert_eq!(parse_cpu_max("garbage"), None);
    }

    #[test]
    fn auto_uses_physical_cores_and_respects_quota() {
        let smt = Topology {
            logical: 16,
            physical: 8,
        };
        assert_eq!(auto_threads(&smt, None), 8);
        assert_eq!(auto_threads(&smt, Some(2.0)), 2);
        assert_eq!(auto_threads(&smt, Some(1.5)), 2);
        assert_eq!(auto_threads(&smt, Some(0.2)), 1);
        let pinned = Topology {
            logical: 2,
            physical: 8,
        };
        assert_eq!(auto_threads(&pinned, None), 2);
    }
}
