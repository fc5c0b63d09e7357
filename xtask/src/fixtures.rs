//! `cargo xtask fixtures vits`: regenerates parity fixtures from the upstream PyTorch code,
//! installed into a venv outside the repository (it brings torch, several GB).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::util::{repo_root, run_cmd};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("vits") => vits(),
        other => bail!("usage: cargo xtask fixtures vits (got {other:?})"),
    }
}

/// The venv: `FERROVOX_FIXTURES_VENV`, else `../.venv-fixtures` beside the checkout.
fn venv_dir() -> PathBuf {
    std::env::var_os("FERROVOX_FIXTURES_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../.venv-fixtures"))
}

/// Creates the venv if needed and installs the pinned requirements; returns its python.
pub fn ensure_venv(requirements: &Path) -> anyhow::Result<PathBuf> {
    let venv = venv_dir();
    let python = venv.join("bin/python");
    if !python.exists() {
        let host = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
        run_cmd(Command::new(host).args(["-m", "venv"]).arg(&venv))
            .context("creating the fixtures venv (needs python3 with venv)")?;
    }
    run_cmd(
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "-r"])
            .arg(requirements),
    )?;
    Ok(python)
}

fn vits() -> anyhow::Result<()> {
    let root = repo_root();
    let scripts = root.join("xtask/fixtures/vits");
    let python = ensure_venv(&scripts.join("requirements.txt"))?;
    let out = root.join("models/vits/tests/fixtures");
    for script in ["gen_vits.py", "gen_tokenizer.py", "gen_piper.py"] {
        println!("== {script}");
        run_cmd(Command::new(&python).arg(scripts.join(script)).arg(&out))?;
    }
    println!("fixtures written to {}", out.display());
    Ok(())
}
