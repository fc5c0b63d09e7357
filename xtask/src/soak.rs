//! `cargo xtask soak [--seconds N] [--voice ID]`: the release `ferrovox serve` on 127.0.0.1
//! under an open-loop load (requests sent on a schedule, whether or not earlier ones are
//! done, as real clients do): first at the rate a closed-loop calibration says it sustains,
//! then at twice that, then SIGTERM in the middle of the load. Every response's status,
//! latency and time to first audio are recorded and every accepted response's audio length
//! checked against the same request's length when the server was idle (a fixed seed makes it
//! exact); the server's RSS and open descriptors are sampled each second. Results:
//! `bench/results/MACHINE-DATE-soak.json`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use crate::bench_server::{read_timed, start, Server};
use crate::util::{machine_name, quantile, repo_root, run_cmd, today};

const TEXTS: [&str; 4] = [
    "The train leaves at nine.",
    "Bring your ticket and a warm coat, because the station is cold in the morning.",
    "The journey takes about three hours. Lunch is served in the second carriage.",
    "We arrive in the city before sunset, and a car will be waiting for us outside.",
];

#[derive(Debug, Clone)]
struct Outcome {
    phase: &'static str,
    /// Seconds from the soak's start to the send.
    sent: f64,
    /// 0: no HTTP answer (connection refused or broken).
    status: u16,
    latency: f64,
    first_audio: Option<f64>,
    complete: bool,
}

fn body(text: &str) -> String {
    json!({"model": "tts-1", "voice": "alloy", "input": text, "response_format": "pcm", "seed": 7})
        .to_string()
}

/// Sends one request; the audio's byte count, or the status.
fn send(agent: &ureq::Agent, url: &str, text: &str) -> (u16, Option<f64>, usize) {
    let start = Instant::now();
    match agent
        .post(&format!("{url}/v1/audio/speech"))
        .set("content-type", "application/json")
        .send_string(&body(text))
    {
        Ok(response) => {
            let status = response.status();
            let (first, total) = read_timed(response, start);
            // A body cut off is counted as incomplete.
            (status, first, total.unwrap_or(usize::MAX))
        }
        Err(ureq::Error::Status(code, _)) => (code, None, 0),
        Err(_) => (0, None, 0),
    }
}

/// Open loop: a request every `1 / rate` seconds for `seconds`, each on its own thread.
fn open_loop(
    phase: &'static str,
    rate: f64,
    seconds: f64,
    ctx: &Ctx,
    during: &mut dyn FnMut(f64),
) -> Vec<std::thread::JoinHandle<()>> {
    let mut handles = Vec::new();
    let begin = Instant::now();
    let mut i = 0usize;
    loop {
        let due = i as f64 / rate;
        if due >= seconds {
            break;
        }
        let wait = due - begin.elapsed().as_secs_f64();
        if wait > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
        during(begin.elapsed().as_secs_f64());
        let (ctx2, text) = (ctx.clone(), i % TEXTS.len());
        handles.push(std::thread::spawn(move || {
            let sent = ctx2.t0.elapsed().as_secs_f64();
            let start = Instant::now();
            let (status, first_audio, bytes) = send(&ctx2.agent, &ctx2.url, TEXTS[text]);
            ctx2.outcomes.lock().unwrap().push(Outcome {
                phase,
                sent,
                status,
                latency: start.elapsed().as_secs_f64(),
                first_audio,
                complete: status != 200 || bytes == ctx2.expected[text],
            });
        }));
        i += 1;
    }
    handles
}

#[derive(Clone)]
struct Ctx {
    agent: ureq::Agent,
    url: String,
    expected: Arc<Vec<usize>>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    t0: Instant,
}

/// (seconds since start, RSS KiB, open descriptors) of `pid`.
fn sample(pid: u32, t0: Instant) -> Option<(f64, u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((t0.elapsed().as_secs_f64(), rss, fds))
}

fn summary(phase: &str, rate: f64, all: &[Outcome]) -> serde_json::Value {
    let of: Vec<&Outcome> = all.iter().filter(|o| o.phase == phase).collect();
    let mut statuses = std::collections::BTreeMap::new();
    for o in &of {
        *statuses.entry(o.status.to_string()).or_insert(0usize) += 1;
    }
    let ok: Vec<&&Outcome> = of.iter().filter(|o| o.status == 200).collect();
    let lat: Vec<f64> = ok.iter().map(|o| o.latency).collect();
    let ttfa: Vec<f64> = ok.iter().filter_map(|o| o.first_audio).collect();
    let incomplete = ok.iter().filter(|o| !o.complete).count();
    json!({
        "phase": phase,
        "offered_per_s": rate,
        "requests": of.len(),
        "statuses": statuses,
        "incomplete_200": incomplete,
        "latency_s": {"p50": quantile(lat.clone(), 0.5), "p95": quantile(lat.clone(), 0.95), "p99": quantile(lat, 0.99)},
        "first_audio_s": {"p50": quantile(ttfa.clone(), 0.5), "p95": quantile(ttfa.clone(), 0.95), "p99": quantile(ttfa, 0.99)},
    })
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut seconds: f64 = 60.0;
    let mut voice = ferrovox_voices::DEFAULT_VOICE.to_string();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => seconds = it.next().context("--seconds N")?.parse()?,
            "--voice" => voice = it.next().context("--voice ID")?.clone(),
            other => bail!("unknown soak option {other}"),
        }
    }
    run_cmd(std::process::Command::new(env!("CARGO")).args([
        "build",
        "--release",
        "-p",
        "ferrovox-cli",
    ]))?;
    let binary = repo_root().join("target/release/ferrovox");
    let slots = 8;
    let mut server: Server = start(
        &binary,
        &[
            "--voice",
            &voice,
            "--max-concurrent-requests",
            &slots.to_string(),
        ],
    )?;
    let pid = server.child.id();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build();
    let t0 = Instant::now();
    let expected: Vec<usize> = TEXTS
        .iter()
        .map(|t| match send(&agent, &server.url, t) {
            (200, _, n) => Ok(n),
            (s, _, _) => Err(anyhow::anyhow!("reference request answered {s}")),
        })
        .collect::<anyhow::Result<_>>()?;
    let ctx = Ctx {
        agent,
        url: server.url.clone(),
        expected: Arc::new(expected),
        outcomes: Arc::new(Mutex::new(Vec::new())),
        t0,
    };

    // Closed loop, one client per core: the rate the server sustains.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let calibrate = (seconds / 4.0).max(10.0);
    let start = Instant::now();
    let clients: Vec<_> = (0..cores)
        .map(|c| {
            let ctx = ctx.clone();
            std::thread::spawn(move || {
                let mut n = 0usize;
                while start.elapsed().as_secs_f64() < calibrate {
                    send(&ctx.agent, &ctx.url, TEXTS[(c + n) % TEXTS.len()]);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let done: usize = clients.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    let rate = done as f64 / start.elapsed().as_secs_f64();
    println!("sustained (closed loop, {cores} clients): {rate:.2} requests/s");

    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (samples, sampling) = (samples.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(s) = sample(pid, t0) {
                    samples.lock().unwrap().push(s);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let mut spans = Vec::new();
    for (phase, r) in [("sustained", rate), ("twice", 2.0 * rate)] {
        let begin = t0.elapsed().as_secs_f64();
        for h in open_loop(phase, r, seconds, &ctx, &mut |_| {}) {
            let _ = h.join();
        }
        spans.push((phase, begin, t0.elapsed().as_secs_f64()));
        println!("{}", summary(phase, r, &ctx.outcomes.lock().unwrap()));
    }
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = sampler.join();

    // SIGTERM in the middle of a load at the sustained rate.
    let mut term_at = None;
    let handles = open_loop("sigterm", rate, 4.0, &ctx, &mut |t| {
        if t >= 2.0 && term_at.is_none() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            term_at = Some(ctx.t0.elapsed().as_secs_f64());
        }
    });
    for h in handles {
        let _ = h.join();
    }
    let exit = server.child.wait()?;
    let term_at = term_at.unwrap_or(f64::INFINITY);
    let outcomes = ctx.outcomes.lock().unwrap().clone();
    let term: Vec<&Outcome> = outcomes.iter().filter(|o| o.phase == "sigterm").collect();
    let before = |o: &&&Outcome| o.sent < term_at;
    let before_ok = term
        .iter()
        .filter(before)
        .filter(|o| o.status == 200 && o.complete)
        .count();
    let before_n = term.iter().filter(before).count();
    let mut after_statuses = std::collections::BTreeMap::new();
    for o in term.iter().filter(|o| o.sent >= term_at) {
        *after_statuses.entry(o.status.to_string()).or_insert(0usize) += 1;
    }

    let samples = samples.lock().unwrap().clone();
    // Growth within each phase, after its first quarter (warm-up at that load): its last third
    // against the third after the warm-up. Phases differ in load, so they are not compared.
    let window = |lo: f64, hi: f64| -> Vec<(f64, u64, usize)> {
        samples
            .iter()
            .copied()
            .filter(|s| s.0 >= lo && s.0 < hi)
            .collect()
    };
    let mean_rss =
        |w: &[(f64, u64, usize)]| w.iter().map(|s| s.1 as f64).sum::<f64>() / w.len().max(1) as f64;
    let max_fds = |w: &[(f64, u64, usize)]| w.iter().map(|s| s.2).max().unwrap_or(0);
    let growth: Vec<serde_json::Value> = spans
        .iter()
        .map(|&(phase, begin, end)| {
            let d = end - begin;
            let (early, late) = (
                window(begin + d / 4.0, begin + d / 4.0 + d / 4.0),
                window(end - d / 4.0, end + 0.5),
            );
            let g = mean_rss(&late) / mean_rss(&early) - 1.0;
            println!(
                "{phase}: RSS {:.0} → {:.0} MiB ({:+.1} %), descriptors {} → {}",
                mean_rss(&early) / 1024.0,
                mean_rss(&late) / 1024.0,
                g * 100.0,
                max_fds(&early),
                max_fds(&late)
            );
            json!({"phase": phase, "rss_kib_early": mean_rss(&early), "rss_kib_late": mean_rss(&late),
                   "rss_growth": g, "fds_early": max_fds(&early), "fds_late": max_fds(&late)})
        })
        .collect();
    let result = json!({
        "machine": machine_name(),
        "cpu": crate::bench::cpu_name(),
        "date": today(),
        "voice": voice,
        "max_concurrent_requests": slots,
        "seconds_per_phase": seconds,
        "sustained_per_s": rate,
        "phases": [summary("sustained", rate, &outcomes), summary("twice", 2.0 * rate, &outcomes)],
        "growth": growth,
        "rss_kib_max": samples.iter().map(|s| s.1).max(),
        "samples": samples.iter().map(|s| json!([s.0, s.1, s.2])).collect::<Vec<_>>(),
        "sigterm": {"in_flight_or_sent_before": before_n, "completed_200": before_ok,
                    "after_statuses": after_statuses, "exit_code": exit.code()},
    });
    let path =
        repo_root()
            .join("bench/results")
            .join(format!("{}-{}-soak.json", machine_name(), today()));
    std::fs::write(&path, serde_json::to_string_pretty(&result)?)?;
    println!(
        "SIGTERM: {before_ok}/{before_n} sent before it completed, after it {after_statuses:?} \
         (0: connection refused), exit {:?}",
        exit.code()
    );
    println!("wrote {}", path.display());
    Ok(())
}
