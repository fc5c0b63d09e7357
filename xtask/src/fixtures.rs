//! `cargo xtask fixtures vits|chatterbox`: regenerates parity fixtures from the upstream
//! PyTorch code, installed into venvs outside the repository (each brings torch, several GB;
//! Chatterbox pins its own torch, so it gets a venv of its own).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::util::{repo_root, run_cmd};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("vits") => vits(),
        Some("chatterbox") => chatterbox(&args[1..]),
        other => {
            bail!("usage: cargo xtask fixtures vits|chatterbox [--full-size DIR] (got {other:?})")
        }
    }
}

/// A venv: `$<env_var>`, else `../<default>` beside the checkout.
fn venv_dir(env_var: &str, default: &str) -> PathBuf {
    std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("..").join(default))
}

/// The VITS fixtures venv (`FERROVOX_FIXTURES_VENV`, else `../.venv-fixtures`), created with
/// the pinned requirements if needed; returns its python.
pub fn ensure_venv(requirements: &Path) -> anyhow::Result<PathBuf> {
    ensure_venv_at(
        &venv_dir("FERROVOX_FIXTURES_VENV", ".venv-fixtures"),
        requirements,
    )
}

fn ensure_venv_at(venv: &Path, requirements: &Path) -> anyhow::Result<PathBuf> {
    let python = venv.join("bin/python");
    if !python.exists() {
        let host = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
        run_cmd(Command::new(host).args(["-m", "venv"]).arg(venv))
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

/// The Chatterbox venv (`FERROVOX_CHATTERBOX_VENV`, else `../.venv-chatterbox`), created with
/// its pinned requirements if needed; returns its python.
pub fn ensure_chatterbox_venv() -> anyhow::Result<PathBuf> {
    ensure_venv_at(
        &venv_dir("FERROVOX_CHATTERBOX_VENV", ".venv-chatterbox"),
        &repo_root().join("xtask/fixtures/chatterbox/requirements.txt"),
    )
}

/// S3Gen's fixtures, then T3's (with the tokenizer and `conds.pt`), then the end-to-end one
/// that reads both, then the voice encoder's, the S3 tokenizer's and CAMPPlus's (whose script
/// also writes `ferrovox-audio`'s Kaldi fbank fixture), then the released-size key manifests
/// of `s3gen.safetensors` and `ve.safetensors`, then voice cloning's (`prepare_conditionals`
/// over the three encoders, whose weights it reads from their fixtures). `--full-size DIR`
/// also writes released-size checkpoints into `DIR` (T3 2.1 GB, S3Gen and the voice encoder
/// about 1 GB, kept outside the repository).
fn chatterbox(args: &[String]) -> anyhow::Result<()> {
    let root = repo_root();
    let scripts = root.join("xtask/fixtures/chatterbox");
    let python = ensure_chatterbox_venv()?;
    let out = root.join("models/chatterbox/tests/fixtures");
    let full = args
        .iter()
        .position(|a| a == "--full-size")
        .map(|i| args.get(i + 1).context("--full-size takes a directory"))
        .transpose()?;
    for script in [
        "gen_s3gen.py",
        "gen_t3.py",
        "gen_tts_e2e.py",
        "gen_ve.py",
        "gen_s3tokenizer.py",
        "gen_campplus.py",
        "gen_full_keys.py",
        "gen_cloning.py",
        "gen_mtl_tokenizer.py",
        "gen_t3_mtl.py",
        "gen_t3_turbo.py",
        "gen_s3gen_meanflow.py",
        "gen_turbo_tokenizer.py",
        "gen_loudness.py",
        "gen_turbo_e2e.py",
    ] {
        println!("== {script}");
        let mut cmd = Command::new(&python);
        cmd.arg(scripts.join(script)).arg(&out);
        if let (Some(dir), "gen_t3.py" | "gen_full_keys.py") = (full, script) {
            cmd.arg("--full-size").arg(dir);
        }
        run_cmd(&mut cmd)?;
    }
    println!("fixtures written to {}", out.display());
    Ok(())
}
