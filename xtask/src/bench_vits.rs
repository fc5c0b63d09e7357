//! `cargo xtask bench vits`: ferrovox against Piper's onnxruntime and transformers' PyTorch
//! VITS on the same texts, voice, weights and thread counts, each engine in its own process.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::bench_texts;
use crate::util::repo_root;

/// One engine run: its label, thread count and the worker's JSON.
pub struct Run {
    pub label: String,
    pub threads: usize,
    pub result: Value,
}

fn write_spec(dir: &Path, name: &str, spec: &Value) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string(spec)?)?;
    Ok(path)
}

/// Runs `cmd` and parses the last line of its stdout that starts with `{`.
/// A `bench-worker` process that sizes its pools from its spec's `threads` alone: the pool
/// variables this process set for itself (`RAYON_NUM_THREADS`, `CANDLE_NUM_THREADS`) would
/// otherwise be inherited and override the spec.
fn worker(me: &Path, spec: &Path, threads: usize) -> Command {
    let mut cmd = Command::new(me);
    cmd.arg("bench-worker")
        .arg(spec)
        .env("FERROVOX_NUM_THREADS", threads.to_string())
        .env_remove("RAYON_NUM_THREADS")
        .env_remove("CANDLE_NUM_THREADS");
    cmd
}

/// Runs a `bench-worker` and checks that it ran the thread count asked for.
fn worker_output(me: &Path, spec: &Path, threads: usize) -> anyhow::Result<Value> {
    let out = json_output(&mut worker(me, spec, threads))?;
    let ran = out["threads"].as_u64().unwrap_or(0) as usize;
    if ran != threads {
        bail!(
            "bench worker {} ran {ran} threads, not {threads}",
            spec.display()
        );
    }
    Ok(out)
}

pub fn json_output(cmd: &mut Command) -> anyhow::Result<Value> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("no JSON output")?;
    Ok(serde_json::from_str(line)?)
}

/// `threads`: the thread counts to compare at (default: 2 in quick mode, else 1 and 2).
pub fn run(quick: bool, threads: Option<&[usize]>) -> anyhow::Result<Vec<Run>> {
    let reps = if quick { 2 } else { 5 };
    // ferrovox and Piper: rounds of a few repeats each (see below).
    let (rounds, round_reps) = if quick { (2, 1) } else { (3, 3) };
    let cases: serde_json::Map<String, Value> = bench_texts::cases(quick)
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::String(v)))
        .collect();
    // The MMS configuration speaks slowly with random weights (the paragraph is 53 s of
    // audio, 22 s a call for PyTorch at 2 threads, the page would be minutes a call): it is
    // timed on the short case and the paragraph, and on the short case alone in `--quick`.
    let mms_cases: serde_json::Map<String, Value> = cases
        .iter()
        .filter(|(name, _)| name.as_str() == "short" || (!quick && name.as_str() == "paragraph"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let (onnx, config) = match ferrovox_voices::resolve(ferrovox_voices::DEFAULT_VOICE)? {
        ferrovox_voices::VoiceFiles::Piper { onnx, config } => (onnx, config),
        other => bail!("unexpected default voice files {other:?}"),
    };
    let work = std::env::temp_dir().join("ferrovox-bench");
    std::fs::create_dir_all(&work)?;
    let me = std::env::current_exe()?;
    let python =
        crate::fixtures::ensure_venv(&repo_root().join("xtask/fixtures/vits/requirements.txt"))?;
    let scripts = repo_root().join("xtask/bench");
    let mms_dir = work.join("mms-tts-eng-random");
    let mut runs = Vec::new();
    let thread_counts: &[usize] = threads.unwrap_or(if quick { &[2] } else { &[1, 2] });
    // ferrovox untuned: one thread and Candle's stock CPU ops.
    let untuned = json!({"model": "piper", "onnx": onnx, "config": config, "threads": 1, "kernels": false, "reps": reps, "cases": cases});
    eprintln!("bench: ferrovox untuned (1 thread, Candle ops)");
    runs.push(Run {
        label: "ferrovox untuned".into(),
        threads: 1,
        result: worker_output(&me, &write_spec(&work, "untuned", &untuned)?, 1)?,
    });
    for &threads in thread_counts {
        eprintln!("bench: {threads} thread(s)");
        // ferrovox and Piper alternate, round by round, so that a slow stretch of a shared
        // host falls on both rather than on whichever ran then.
        let spec = json!({"model": "piper", "onnx": onnx, "config": config, "threads": threads, "kernels": true, "reps": round_reps, "cases": cases});
        let ferrovox_spec = write_spec(&work, &format!("ferrovox-{threads}"), &spec)?;
        let spec = json!({"onnx": onnx, "config": config, "threads": threads, "reps": round_reps, "cases": cases});
        let piper_spec = write_spec(&work, &format!("piper-{threads}"), &spec)?;
        let (mut ferrovox, mut piper) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            eprintln!("bench: {threads} thread(s), ferrovox and Piper, round {round} of {rounds}");
            ferrovox.push(worker_output(&me, &ferrovox_spec, threads)?);
            piper.push(json_output(
                Command::new(&python)
                    .arg(scripts.join("piper_bench.py"))
                    .arg(&piper_spec),
            )?);
        }
        runs.push(Run {
            label: "ferrovox".into(),
            threads,
            result: pooled(ferrovox),
        });
        runs.push(Run {
            label: "piper onnxruntime".into(),
            threads,
            result: pooled(piper),
        });
        let spec = json!({"dir": mms_dir, "threads": threads, "reps": reps, "cases": mms_cases});
        runs.push(Run {
            label: "transformers pytorch (mms)".into(),
            threads,
            result: json_output(
                Command::new(&python)
                    .env("OMP_NUM_THREADS", threads.to_string())
                    .arg(scripts.join("mms_torch_bench.py"))
                    .arg(write_spec(&work, &format!("torch-{threads}"), &spec)?),
            )?,
        });
        let spec = json!({"model": "mms", "dir": mms_dir, "threads": threads, "kernels": true, "reps": reps, "cases": mms_cases});
        runs.push(Run {
            label: "ferrovox (mms)".into(),
            threads,
            result: worker_output(
                &me,
                &write_spec(&work, &format!("mms-{threads}"), &spec)?,
                threads,
            )?,
        });
    }
    Ok(runs)
}

/// One engine's rounds as one result: every round's samples in one list per case, the
/// highest peak RSS, and stage times averaged over the rounds.
fn pooled(rounds: Vec<Value>) -> Value {
    let n = rounds.len().max(1) as f64;
    let mut rounds = rounds.into_iter();
    let mut out = rounds.next().unwrap_or(Value::Null);
    for round in rounds {
        let peak = |v: &Value| v["peak_rss"].as_f64().unwrap_or(0.0);
        out["peak_rss"] = json!(peak(&out).max(peak(&round)));
        let Some(cases) = round["cases"].as_object() else {
            continue;
        };
        for (name, case) in cases {
            let into = &mut out["cases"][name];
            for key in ["wall_s", "first_audio_s", "first_unit_s"] {
                if let (Some(all), Some(more)) = (into[key].as_array_mut(), case[key].as_array()) {
                    all.extend(more.iter().cloned());
                }
            }
            if let Some(stages) = case["stages"].as_object() {
                for (stage, t) in stages {
                    let sum =
                        into["stages"][stage].as_f64().unwrap_or(0.0) + t.as_f64().unwrap_or(0.0);
                    into["stages"][stage] = json!(sum);
                }
            }
        }
    }
    if let Some(cases) = out["cases"].as_object_mut() {
        for case in cases.values_mut() {
            if let Some(stages) = case["stages"].as_object_mut() {
                for t in stages.values_mut() {
                    *t = json!(t.as_f64().unwrap_or(0.0) / n);
                }
            }
        }
    }
    out["rounds"] = json!(n);
    out
}

/// Median of a JSON array of seconds.
pub fn median(v: &Value) -> f64 {
    let mut xs: Vec<f64> = v
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    if xs.len().is_multiple_of(2) {
        (xs[mid - 1] + xs[mid]) / 2.0
    } else {
        xs[mid]
    }
}

fn spread(v: &Value) -> (f64, f64) {
    let xs: Vec<f64> = v
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    (
        xs.iter().copied().fold(f64::INFINITY, f64::min),
        xs.iter().copied().fold(0.0, f64::max),
    )
}

/// Real-time factor of a case: audio seconds per median wall second.
pub fn rtf(run: &Run, case: &str) -> f64 {
    let c = &run.result["cases"][case];
    c["audio_s"].as_f64().unwrap_or(f64::NAN) / median(&c["wall_s"])
}

/// The markdown table and the ratio lines.
pub fn report(runs: &[Run], case_names: &[&str]) -> String {
    let mut md = String::from(
        "| engine | threads | case | audio s | wall s median (min–max) | RTF | first audio ms | peak RSS MiB |\n|---|---|---|---|---|---|---|---|\n",
    );
    for run in runs {
        for case in case_names {
            let c = &run.result["cases"][*case];
            if c.is_null() {
                continue;
            }
            let (lo, hi) = spread(&c["wall_s"]);
            let first = c
                .get("first_audio_s")
                .map(|f| format!("{:.0}", median(f) * 1e3))
                .unwrap_or_else(|| "–".into());
            md += &format!(
                "| {} | {} | {case} | {:.2} | {:.3} ({:.3}–{:.3}) | {:.1}× | {first} | {:.0} |\n",
                run.label,
                run.threads,
                c["audio_s"].as_f64().unwrap_or(f64::NAN),
                median(&c["wall_s"]),
                lo,
                hi,
                rtf(run, case),
                run.result["peak_rss"].as_f64().unwrap_or(f64::NAN) / (1u64 << 20) as f64,
            );
        }
    }
    if let Some(f) = runs.iter().find(|r| r.label == "ferrovox") {
        md += &format!(
            "\nferrovox and Piper ran alternately in {} rounds, one process per engine a round; each row pools the wall times of every round.\n",
            f.result["rounds"].as_f64().unwrap_or(1.0)
        );
    }
    md += "\nRatios (RTF of ferrovox / RTF of the baseline, same case and thread count):\n\n";
    let find = |label: &str, threads: usize| {
        runs.iter()
            .find(|r| r.label == label && r.threads == threads)
    };
    for case in case_names {
        for threads in [1, 2] {
            if let (Some(f), Some(p)) = (
                find("ferrovox", threads),
                find("piper onnxruntime", threads),
            ) {
                md += &format!(
                    "- {case}, {threads} thread(s): ferrovox / Piper onnxruntime = {:.2}×\n",
                    rtf(f, case) / rtf(p, case)
                );
            }
            if let (Some(f), Some(p)) = (
                find("ferrovox (mms)", threads),
                find("transformers pytorch (mms)", threads),
            ) {
                // `--quick` times the MMS configuration on the short case only.
                let ratio = rtf(f, case) / rtf(p, case);
                if ratio.is_finite() {
                    md += &format!("- {case}, {threads} thread(s): ferrovox / PyTorch eager (MMS config) = {ratio:.2}×\n");
                }
            }
        }
        if let (Some(t), Some(u)) = (
            find("ferrovox", 2).or(find("ferrovox", 1)),
            find("ferrovox untuned", 1),
        ) {
            md += &format!(
                "- {case}: ferrovox tuned ({} threads) / untuned = {:.2}×\n",
                t.threads,
                rtf(t, case) / rtf(u, case)
            );
        }
    }
    md
}

/// A bar chart of RTF per engine and case, as SVG.
pub fn svg(runs: &[Run], case_names: &[&str], title: &str) -> String {
    let bars: Vec<(String, f64)> = case_names
        .iter()
        .flat_map(|case| {
            runs.iter().map(move |r| {
                (
                    format!("{case} · {} · {}t", r.label, r.threads),
                    rtf(r, case),
                )
            })
        })
        .filter(|(_, v)| v.is_finite())
        .collect();
    let max = bars.iter().map(|b| b.1).fold(1.0, f64::max);
    let (row, left, width) = (22.0, 330.0, 420.0);
    let height = 50.0 + row * bars.len() as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<text x=\"10\" y=\"20\" font-size=\"14\">{title}</text>\n",
        left + width + 80.0
    );
    for (i, (label, value)) in bars.iter().enumerate() {
        let y = 35.0 + row * i as f64;
        let w = width * value / max;
        let colour = if label.contains("ferrovox") {
            "#c0392b"
        } else {
            "#7f8c8d"
        };
        s += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{label}</text><rect x=\"{left}\" y=\"{}\" width=\"{w:.1}\" height=\"{}\" fill=\"{colour}\"/><text x=\"{}\" y=\"{}\">{value:.1}×</text>\n",
            left - 6.0,
            y + 14.0,
            y + 2.0,
            row - 6.0,
            left + w + 4.0,
            y + 14.0
        );
    }
    s + "</svg>\n"
}
