//! `cargo xtask bench`: measured speed, each figure a ratio against a baseline from the same run.

use anyhow::bail;
use ferrovox_chatterbox::TurboSize;
use ferrovox_device::{doctor, DeviceRequest, Runtime, TuningConfig};

use crate::util::{machine_name, repo_root, today};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let device: DeviceRequest = match args.iter().position(|a| a == "--device") {
        Some(i) => args
            .get(i + 1)
            .map(|d| d.parse())
            .transpose()?
            .ok_or_else(|| anyhow::anyhow!("--device needs a value (cpu, cuda)"))?,
        None => DeviceRequest::Cpu,
    };
    let threads: Option<Vec<usize>> = match args.iter().position(|a| a == "--threads") {
        Some(i) => Some(
            args.get(i + 1)
                .ok_or_else(|| anyhow::anyhow!("--threads needs a list, e.g. 1,2"))?
                .split(',')
                .map(|t| t.trim().parse::<usize>())
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("--threads: {e}"))?,
        ),
        None => None,
    };
    let cases: Vec<&str> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            !a.starts_with("--")
                && (*i == 0 || !matches!(args[i - 1].as_str(), "--device" | "--threads"))
        })
        .map(|(_, a)| a.as_str())
        .collect();
    let cases = if cases.is_empty() {
        vec!["matmul", "kernels", "vits"]
    } else {
        cases
    };
    let mut results = serde_json::Map::new();
    let dir = repo_root().join("bench/results");
    std::fs::create_dir_all(&dir)?;
    let stem = format!("{}-{}", machine_name(), today());
    for case in cases {
        match case {
            "matmul" => {
                results.insert("matmul".into(), matmul(quick)?);
            }
            "vits" => {
                let before = load_average().unwrap_or_default();
                let runs = crate::bench_vits::run(quick, threads.as_deref())?;
                let names: Vec<&str> = crate::bench_texts::cases(quick)
                    .iter()
                    .map(|c| c.0)
                    .collect();
                let md = format!(
                    "Load average (1, 5, 15 min) before: {before}; after: {}.\n\n{}",
                    load_average().unwrap_or_default(),
                    crate::bench_vits::report(&runs, &names)
                );
                println!("{md}");
                let title = format!(
                    "VITS real-time factor on {} ({}), higher is better",
                    machine_name(),
                    today()
                );
                std::fs::write(dir.join(format!("{stem}-vits.md")), &md)?;
                std::fs::write(
                    dir.join(format!("{stem}-vits.svg")),
                    crate::bench_vits::svg(&runs, &names, &title),
                )?;
                let raw: Vec<serde_json::Value> = runs
                    .iter()
                    .map(|r| serde_json::json!({"label": r.label, "threads": r.threads, "result": r.result}))
                    .collect();
                results.insert("vits".into(), serde_json::Value::Array(raw));
            }
            "kernels" => {
                results.insert("kernels".into(), crate::bench_kernels::run(quick)?);
            }
            "batching" => {
                results.insert("batching".into(), crate::bench_batching::run()?);
            }
            "s3gen-stream" => {
                results.insert("s3gen_stream".into(), crate::bench_s3gen::stream(&device)?);
            }
            "s3gen" => {
                results.insert("s3gen".into(), crate::bench_s3gen::run(quick, &device)?);
            }
            "chatterbox" => {
                results.insert(
                    "chatterbox".into(),
                    crate::bench_chatterbox::run(quick, &device)?,
                );
            }
            "formats" => {
                results.insert("formats".into(), crate::bench_formats::run()?);
            }
            "chatterbox-turbo" => {
                results.insert(
                    "chatterbox_turbo".into(),
                    crate::bench_turbo::run(quick, &device, TurboSize::Turbo)?,
                );
            }
            "chatterbox-nano" => {
                results.insert(
                    "chatterbox_nano".into(),
                    crate::bench_turbo::run(quick, &device, TurboSize::Nano)?,
                );
            }
            "chatterbox-streams" => {
                results.insert(
                    "chatterbox_streams".into(),
                    crate::bench_streams::run(quick, &device)?,
                );
            }
            "clone" => {
                results.insert("clone".into(), crate::bench_clone::run(quick, &device)?);
            }
            "vits-gpu" => {
                results.insert(
                    "vits_gpu".into(),
                    crate::bench_vits_gpu::run(quick, &device)?,
                );
            }
            "vits-gpu-planner" => {
                results.insert(
                    "vits_gpu_planner".into(),
                    crate::bench_vits_gpu::planner(&device)?,
                );
            }
            "decode-gemm" => {
                results.insert(
                    "decode_gemm".into(),
                    crate::bench_decode_gemm::run(&device)?,
                );
            }
            "server" => {
                results.insert("server".into(), crate::bench_server::run(quick)?);
            }
            other => {
                bail!("unknown bench case `{other}` (known: matmul, kernels, decode-gemm, vits, vits-gpu, vits-gpu-planner, batching, server, s3gen, s3gen-stream, chatterbox, chatterbox-streams, chatterbox-turbo, chatterbox-nano, clone, formats)")
            }
        }
    }
    let path = dir.join(format!("{stem}.json"));
    // Several invocations on one day accumulate in one file; a case measured again replaces
    // its earlier entry.
    let mut merged = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("results").and_then(|r| r.as_object().cloned()))
        .unwrap_or_default();
    merged.extend(results);
    let doc = serde_json::json!({
        "machine": machine_name(),
        "cpu": cpu_name(),
        "cpu_features": ferrovox_kernels::cpu_features().detected,
        "date": today(),
        "load_average": load_average(),
        "results": merged,
    });
    std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The CPU's model name as the kernel reports it (results name the CPU they ran on).
pub(crate) fn cpu_name() -> Option<String> {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
}

fn load_average() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// 1024^3 f32 matmul on CPU: one thread vs the tuned pool, median of several runs.
fn matmul(quick: bool) -> anyhow::Result<serde_json::Value> {
    let runtime = Runtime::init(&DeviceRequest::Cpu, &TuningConfig::from_env()?)?;
    let reps = if quick { 5 } else { 21 };
    let (one, pool) = doctor::cpu_matmul_one_vs_pool(reps)?;
    let threads = runtime.tuning.threads.threads;
    let gflops = |d: std::time::Duration| 2.0 * 1024f64.powi(3) / d.as_secs_f64() / 1e9;
    let ratio = one.as_secs_f64() / pool.as_secs_f64();
    println!("| case | 1 thread | tuned pool ({threads} threads) | speedup |");
    println!("|---|---|---|---|");
    println!(
        "| f32 matmul 1024^3 | {:.2} ms ({:.1} GFLOP/s) | {:.2} ms ({:.1} GFLOP/s) | {ratio:.2}x |",
        one.as_secs_f64() * 1e3,
        gflops(one),
        pool.as_secs_f64() * 1e3,
        gflops(pool)
    );
    Ok(serde_json::json!({
        "threads": threads,
        "reps": reps,
        "one_thread_ms": one.as_secs_f64() * 1e3,
        "pool_ms": pool.as_secs_f64() * 1e3,
        "speedup": ratio,
    }))
}
