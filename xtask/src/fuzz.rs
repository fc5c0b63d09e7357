use std::process::Command;

use crate::util::{repo_root, run_cmd};

/// Builds `ferrovox-fuzz` (release) and runs it: `fuzz TARGET|all [--seconds N] [--seed S]
/// [--limit-s L] [--input FILE]`. What fails is kept under `target/fuzz/TARGET/`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    run_cmd(
        Command::new(cargo)
            .current_dir(repo_root())
            .args(["run", "--release", "-p", "ferrovox-fuzz", "--"])
            .args(args),
    )
}
