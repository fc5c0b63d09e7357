use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

/// The workspace root: `FERROVOX_REPO` (for a prebuilt xtask run from another checkout, as on
/// the GPU machine), else the parent of `xtask/`.
pub fn repo_root() -> PathBuf {
    if let Some(root) = std::env::var_os("FERROVOX_REPO") {
        return root.into();
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
        .to_path_buf()
}

/// Runs `cmd`, failing with its command line when it exits non-zero.
pub fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} exited with {status}");
    }
    Ok(())
}

/// `YYYY-MM-DD` of today (UTC), from the system clock.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The name results are filed under: `FERROVOX_MACHINE`, else the host name.
pub fn machine_name() -> String {
    if let Ok(name) = std::env::var("FERROVOX_MACHINE") {
        return name;
    }
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The median of timings (the upper one of an even count; NaN when there are none).
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs `f` once with [`ferrovox_device::stages`] timing on: its result, each stage's seconds
/// (as JSON, plus `total`) and a one-line summary in milliseconds. The stages synchronize the
/// device, so this is a breakdown to read beside a timed run, not a speed of its own.
pub fn stage_split<T>(
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, serde_json::Value, String)> {
    use ferrovox_device::stages;
    let was_on = stages::enabled();
    stages::enable(true);
    stages::take();
    let start = std::time::Instant::now();
    let out = f();
    let total = start.elapsed().as_secs_f64();
    let totals = stages::take();
    stages::enable(was_on);
    let out = out?;
    let mut map = serde_json::Map::new();
    let mut line = Vec::new();
    for t in &totals {
        map.insert(t.name.into(), serde_json::json!(t.total.as_secs_f64()));
        line.push(format!(
            "{} {:.1} ms ×{}",
            t.name,
            t.total.as_secs_f64() * 1e3,
            t.calls
        ));
    }
    map.insert("total".into(), serde_json::json!(total));
    line.push(format!("total {:.1} ms", total * 1e3));
    Ok((out, map.into(), line.join(", ")))
}

/// [`stage_split`]'s one-line summary of stage seconds another engine reported as a JSON
/// object (`{name: seconds}`), in milliseconds.
pub fn stage_line(stages: &serde_json::Value) -> String {
    stages
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some(format!("{k} {:.1} ms", v.as_f64()? * 1e3)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// The value at quantile `q` of `xs` (NaN when empty).
pub fn quantile(mut xs: Vec<f64>, q: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(((xs.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// The PyTorch side of a bench: the JSON line `script` prints for `spec`, or, under
/// `FERROVOX_BENCH_TORCH=0`, nothing (ferrovox alone, for comparing its own variants or
/// profiling), which needs the weights and inputs an earlier run left (`inputs`).
pub fn torch_side(
    script: &str,
    spec: &std::path::Path,
    inputs: &std::path::Path,
    bench: &str,
) -> anyhow::Result<serde_json::Value> {
    if std::env::var("FERROVOX_BENCH_TORCH").as_deref() == Ok("0") {
        if !inputs.is_file() {
            bail!(
                "FERROVOX_BENCH_TORCH=0 needs the weights of an earlier `bench {bench}` ({} is missing)",
                inputs.display()
            );
        }
        return Ok(serde_json::json!({}));
    }
    let python = crate::bench_s3gen::bench_python()?;
    crate::bench_vits::json_output(
        Command::new(python)
            .arg(repo_root().join("xtask/bench").join(script))
            .arg(spec)
            .env("TQDM_DISABLE", "1"),
    )
    .with_context(|| format!("the PyTorch side of `bench {bench}`"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_416), (2025, 11, 24));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
    }
}
