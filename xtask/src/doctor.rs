use std::process::Command;

use crate::util::{repo_root, run_cmd};

/// Builds the release binary and runs `ferrovox doctor` with the given arguments.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    run_cmd(
        Command::new(cargo)
            .current_dir(repo_root())
            .args([
                "run",
                "--release",
                "-p",
                "ferrovox-cli",
                "--bin",
                "ferrovox",
                "--",
                "doctor",
            ])
            .args(args),
    )
}
