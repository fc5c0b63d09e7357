//! Memory figures per device: the CUDA driver's, the cgroup limit, or MemAvailable.

use candle_core::Device;
use serde::Serialize;

use crate::{BackendKind, Error, Result};

/// Total and free memory of a device, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryInfo {
    /// Memory the device (or the process's cgroup) has in all.
    pub total: u64,
    /// Memory free for new allocations now.
    pub free: u64,
}

/// A source of memory figures; tests substitute a fake.
pub trait MemorySource {
    /// The current figures.
    fn memory(&self) -> Result<MemoryInfo>;
}

impl<F: Fn() -> Result<MemoryInfo>> MemorySource for F {
    fn memory(&self) -> Result<MemoryInfo> {
        self()
    }
}

/// The memory of `device`.
pub fn device_memory(device: &Device) -> Result<MemoryInfo> {
    match device {
        Device::Cpu => cpu_memory(),
        #[cfg(feature = "cuda")]
        Device::Cuda(cuda) => {
            let stream = cuda.cuda_stream();
            let (free, total) = stream.context().mem_get_info().map_err(|e| Error::Memory {
                backend: BackendKind::Cuda,
                reason: e.to_string(),
            })?;
            Ok(MemoryInfo {
                total: total as u64,
                free: free as u64,
            })
        }
        #[cfg(feature = "metal")]
        Device::Metal(_) => {
            // Apple GPUs share system memory; the recommended working set is not exposed by
            // Candle, so the host figures are the best available bound (unverified).
            cpu_memory()
        }
        #[allow(unreachable_patterns)]
        other => Err(Error::Memory {
            backend: match other {
                Device::Cuda(_) => BackendKind::Cuda,
                _ => BackendKind::Metal,
            },
            reason: "backend not compiled in".to_string(),
        }),
    }
}

/// Host memory: the cgroup limit (v2, then v1) when it is lower than the machine's, else
/// `MemTotal` / `MemAvailable`.
pub fn cpu_memory() -> Result<MemoryInfo> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").map_err(|e| Error::Memory {
        backend: BackendKind::Cpu,
        reason: format!("/proc/meminfo: {e}"),
    })?;
    let host = parse_meminfo(&meminfo).ok_or_else(|| Error::Memory {
        backend: BackendKind::Cpu,
        reason: "/proc/meminfo lacks MemTotal or MemAvailable".to_string(),
    })?;
    Ok(match read_cgroup_limit() {
        Some(cgroup) => apply_cgroup(host, cgroup),
        None => host,
    })
}

/// `(limit, usage)` of the process's memory cgroup, when a limit is set.
fn read_cgroup_limit() -> Option<(u64, u64)> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    if let Some(max) = read("/sys/fs/cgroup/memory.max") {
        let limit = max.trim().parse::<u64>().ok()?;
        let usage = read("/sys/fs/cgroup/memory.current")?.trim().parse().ok()?;
        return Some((limit, usage));
    }
    let limit = read("/sys/fs/cgroup/memory/memory.limit_in_bytes")?
        .trim()
        .parse::<u64>()
        .ok()?;
    let usage = read("/sys/fs/cgroup/memory/memory.usage_in_bytes")?
        .trim()
        .parse()
        .ok()?;
    Some((limit, usage))
}

/// Combines host figures with a cgroup `(limit, usage)`: the tighter bound wins.
pub fn apply_cgroup(host: MemoryInfo, (limit, usage): (u64, u64)) -> MemoryInfo {
    if limit >= host.total {
        return host;
    }
    let cgroup_free = limit.saturating_sub(usage);
    MemoryInfo {
        total: limit,
        free: cgroup_free.min(host.free),
    }
}

/// Parses `MemTotal` and `MemAvailable` (kB) from /proc/meminfo text.
pub fn parse_meminfo(text: &str) -> Option<MemoryInfo> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kb| kb * 1024)
    };
    Some(MemoryInfo {
        total: field("MemTotal:")?,
        free: field("MemAvailable:")?,
    })
}

/// Peak resident set size of this process (`VmHWM`), in bytes.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_parsing() {
        let text = "MemTotal:       24000000 kB\nMemFree:   100 kB\nMemAvailable:   12000000 kB\n";
        let m = parse_meminfo(text).unwrap();
        assert_eq!(m.total, 24_000_000 * 1024);
        assert_eq!(m.free, 12_000_000 * 1024);
        assert!(parse_meminfo("MemTotal: 5 kB\n").is_none());
    }

    #[test]
    fn cgroup_limit_tightens_host_figures() {
        let host = MemoryInfo {
            total: 64 << 30,
            free: 40 << 30,
        };
        let m = apply_cgroup(host, (8 << 30, 3 << 30));
        assert_eq!(
            m,
            MemoryInfo {
                total: 8 << 30,
                free: 5 << 30
            }
        );
        assert_eq!(apply_cgroup(host, (u64::MAX, 0)), host);
    }

    #[test]
    fn this_machine_reports_sane_figures() {
        let m = cpu_memory().unwrap();
        assert!(m.total > 0 && m.free > 0 && m.free <= m.total, "{m:?}");
    }
}
