//! `ferrovox-fuzz TARGET|all [--seconds N] [--seed S] [--limit-s L]`: runs targets on
//! mutations of their corpora for a time, printing what each ran and found;
//! `ferrovox-fuzz TARGET --input FILE` runs one input (a finding, to reproduce it). Each input is
//! written to `target/fuzz/TARGET/current` before it runs (so an input that kills the process
//! is kept), and every failing input to `target/fuzz/TARGET/finding-N`. Exits 1 if anything
//! failed. `cargo xtask fuzz` builds and runs it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferrovox_fuzz::harness::{campaign, Budget};

#[global_allocator]
static COUNTING: ferrovox_fuzz::Counting = ferrovox_fuzz::Counting;

struct Args {
    targets: Vec<String>,
    seconds: f64,
    seed: u64,
    limit: Duration,
    input: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        targets: Vec::new(),
        seconds: 60.0,
        seed: 1,
        limit: Duration::from_secs(10),
        input: None,
    };
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--seconds" => a.seconds = value("--seconds")?.parse().context("--seconds")?,
            "--seed" => a.seed = value("--seed")?.parse().context("--seed")?,
            "--limit-s" => {
                a.limit = Duration::from_secs_f64(value("--limit-s")?.parse().context("--limit-s")?)
            }
            "--input" => a.input = Some(value("--input")?.into()),
            "all" => a
                .targets
                .extend(ferrovox_fuzz::targets().iter().map(|t| t.name.to_string())),
            name if !name.starts_with('-') => a.targets.push(name.to_string()),
            other => bail!("unknown option {other}"),
        }
    }
    if a.targets.is_empty() {
        let names: Vec<&str> = ferrovox_fuzz::targets().iter().map(|t| t.name).collect();
        bail!("name a target or `all`: {}", names.join(", "));
    }
    Ok(a)
}

fn main() -> Result<()> {
    let a = args()?;
    if let Some(path) = &a.input {
        let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
        for name in &a.targets {
            let target =
                ferrovox_fuzz::target(name).with_context(|| format!("no target {name}"))?;
            match ferrovox_fuzz::harness::run_case(&target, &bytes, a.limit) {
                Ok(took) => println!("{name}: ok in {:.1} ms", took.as_secs_f64() * 1e3),
                Err(finding) => {
                    println!("{name}: {finding}");
                    std::process::exit(1);
                }
            }
        }
        return Ok(());
    }
    let mut failed = false;
    println!("| target | cases | findings | slowest case |\n|---|---|---|---|");
    for name in &a.targets {
        let target = ferrovox_fuzz::target(name).with_context(|| format!("no target {name}"))?;
        let dir = ferrovox_fuzz::harness::findings_dir(&target);
        std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        let current = dir.join("current");
        let budget = Budget::Time(Duration::from_secs_f64(a.seconds));
        let report = campaign(&target, budget, a.seed, a.limit, |input| {
            let _ = std::fs::write(&current, input);
        });
        let _ = std::fs::remove_file(&current);
        println!(
            "| {name} | {} | {} | {:.1} ms |",
            report.cases,
            report.findings.len(),
            report.slowest.as_secs_f64() * 1e3
        );
        for (i, (input, finding)) in report.findings.iter().enumerate() {
            let path = dir.join(format!("finding-{i}"));
            std::fs::write(&path, input).with_context(|| path.display().to_string())?;
            eprintln!("{name}: {finding} (input: {})", path.display());
            failed = true;
        }
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}
