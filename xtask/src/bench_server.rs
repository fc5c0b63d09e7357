//! `cargo xtask bench server`: the release `ferrovox serve` over real HTTP on 127.0.0.1.
//! Time to first audio of a streamed 5-sentence request against the same request's total, and
//! throughput of 8 concurrent clients with `--batching on` against `--batching off`.

use std::io::{BufRead, Read};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::Context;
use serde_json::json;

use crate::util::{median, repo_root, run_cmd};

const FIVE_SENTENCES: &str = "The train leaves at nine. Bring your ticket and a warm coat. \
    The journey takes about three hours. Lunch is served in the second carriage. \
    We arrive in the city before sunset.";

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

pub(crate) fn start(binary: &std::path::Path, extra: &[&str]) -> anyhow::Result<Server> {
    let mut child = Command::new(binary)
        .args(["serve", "--bind", "127.0.0.1:0", "--device", "cpu"])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .context("starting ferrovox serve")?;
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut url = None;
    for line in lines.by_ref() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("listening on ") {
            url = rest.split_whitespace().next().map(str::to_string);
        }
        if line == "ready" {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let url = url.context("the server did not print its address")?;
    Ok(Server { child, url })
}

/// Seconds to the first audio byte and to the last, and the body size.
fn timed_request(url: &str, input: &str, format: &str) -> anyhow::Result<(f64, f64, usize)> {
    let body =
        json!({"model": "tts-1", "voice": "alloy", "input": input, "response_format": format});
    let start = Instant::now();
    let response = ureq::post(&format!("{url}/v1/audio/speech"))
        .set("content-type", "application/json")
        .send_string(&body.to_string())?;
    let (first, total) = read_timed(response, start);
    Ok((
        first.unwrap_or_default(),
        start.elapsed().as_secs_f64(),
        total?,
    ))
}

/// Reads `response`'s body to its end: seconds from `start` to its first byte, and its length
/// (or the error that cut it off).
pub(crate) fn read_timed(
    response: ureq::Response,
    start: Instant,
) -> (Option<f64>, std::io::Result<usize>) {
    let mut reader = response.into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let (mut first, mut total) = (None, 0usize);
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return (first, Ok(total)),
            Ok(n) => {
                first.get_or_insert_with(|| start.elapsed().as_secs_f64());
                total += n;
            }
            Err(e) => return (first, Err(e)),
        }
    }
}

fn throughput(url: &str, clients: usize, per_client: usize) -> anyhow::Result<f64> {
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let url = url.to_string();
            std::thread::spawn(move || -> anyhow::Result<usize> {
                let mut bytes = 0;
                for _ in 0..per_client {
                    bytes += timed_request(&url, crate::bench_texts::PARAGRAPH, "pcm")?.2;
                }
                Ok(bytes)
            })
        })
        .collect();
    let mut bytes = 0;
    for h in handles {
        bytes += h.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
    }
    // pcm is 24 kHz s16le.
    Ok(bytes as f64 / 2.0 / 24_000.0 / start.elapsed().as_secs_f64())
}

pub fn run(quick: bool) -> anyhow::Result<serde_json::Value> {
    run_cmd(Command::new(env!("CARGO")).args(["build", "--release", "-p", "ferrovox-cli"]))?;
    let binary = repo_root().join("target/release/ferrovox");
    let repeats = if quick { 3 } else { 7 };
    let (clients, per_client) = (8, if quick { 1 } else { 3 });

    let server = start(&binary, &["--batching", "on"])?;
    timed_request(&server.url, FIVE_SENTENCES, "pcm")?;
    let mut ttfa = Vec::new();
    let mut total = Vec::new();
    for _ in 0..repeats {
        let (first, all, _) = timed_request(&server.url, FIVE_SENTENCES, "pcm")?;
        ttfa.push(first);
        total.push(all);
    }
    let (ttfa, total) = (median(ttfa), median(total));
    println!(
        "streamed 5 sentences: first audio {:.0} ms, whole response {:.0} ms ({:.1}× sooner; median of {repeats})",
        ttfa * 1e3,
        total * 1e3,
        total / ttfa
    );
    let on = throughput(&server.url, clients, per_client)?;
    drop(server);
    let server = start(&binary, &["--batching", "off"])?;
    throughput(&server.url, 2, 1)?;
    let off = throughput(&server.url, clients, per_client)?;
    drop(server);
    println!(
        "{clients} clients × {per_client} paragraphs: {on:.1} audio s per wall s with batching, {off:.1} without ({:.2}×)",
        on / off
    );
    Ok(json!({
        "ttfa_streamed_5_sentences_s": ttfa,
        "total_5_sentences_s": total,
        "repeats": repeats,
        "clients": clients,
        "requests_per_client": per_client,
        "throughput_batching_on": on,
        "throughput_batching_off": off,
        "ratio_on_off": on / off,
    }))
}
