//! `cargo xtask gpu`: builds the CUDA binaries here (CUDA 13.0 from PyPI, see
//! `xtask/gpu/cuda-env.sh`) and packs them with the fixtures and `run.sh` into `.gpu-carry/`,
//! so the GPU machine builds nothing: `bash .gpu-carry/run.sh` runs doctor and parity there.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

use crate::util::{repo_root, run_cmd};

const TARGET: &str = "../target-cuda";

fn cargo_in_cuda_env(args: &str, cudnn: bool) -> anyhow::Result<String> {
    let root = repo_root();
    let script = format!(
        "{}source xtask/gpu/cuda-env.sh >&2 && CARGO_TARGET_DIR={TARGET} cargo {args}",
        if cudnn { "FERROVOX_CUDA_CUDNN=1 " } else { "" }
    );
    let out = Command::new("bash")
        .current_dir(&root)
        .args(["-c", &script])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo under the CUDA environment")?;
    if !out.status.success() {
        bail!("`cargo {args}` failed under the CUDA environment");
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn xz(src: &Path, dest: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::create(dest)?;
    let status = Command::new("xz")
        .args(["-6", "-T2", "-c"])
        .arg(src)
        .stdout(file)
        .status()
        .context("xz")?;
    if !status.success() {
        bail!("xz failed on {}", src.display());
    }
    Ok(())
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let cudnn = args.iter().any(|a| a == "--cudnn");
    let features = if cudnn { "cudnn" } else { "cuda" };
    let root = repo_root();
    cargo_in_cuda_env(
        &format!("build --release -p ferrovox-cli --features {features}"),
        cudnn,
    )?;
    let vits_features = "cuda";
    let json = cargo_in_cuda_env(
        &format!("test --release -p ferrovox-vits --features {vits_features} --test parity --no-run --message-format=json"),
        cudnn,
    )?;
    let parity = json
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == "parity" && v["profile"]["test"] == true)
        .find_map(|v| v["executable"].as_str().map(String::from))
        .context("no parity test executable in cargo's output")?;
    let carry = root.join(".gpu-carry");
    let _ = std::fs::remove_dir_all(&carry);
    std::fs::create_dir_all(carry.join("fixtures"))?;
    xz(
        &root.join(TARGET).join("release/ferrovox"),
        &carry.join("ferrovox.xz"),
    )?;
    xz(Path::new(&parity), &carry.join("parity.xz"))?;
    for entry in std::fs::read_dir(root.join("models/vits/tests/fixtures"))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("tiny_") {
            std::fs::copy(&path, carry.join("fixtures").join(&name))?;
        }
    }
    std::fs::copy(root.join("xtask/gpu/run.sh"), carry.join("run.sh"))?;
    run_cmd(Command::new("du").args(["-sh"]).arg(&carry))?;
    println!(
        "packed {}; on the GPU machine: bash .gpu-carry/run.sh",
        carry.display()
    );
    Ok(())
}
