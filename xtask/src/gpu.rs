//! `cargo xtask gpu`: builds the CUDA binaries here (CUDA 13.0 from PyPI, see
//! `xtask/gpu/cuda-env.sh`) and packs them with the fixtures, the wheels the upstream S3Gen
//! reference needs and `run.sh` into `.gpu-carry/`, so the GPU machine builds nothing:
//! `bash .gpu-carry/run.sh` runs doctor, parity and the GPU benches there.

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

/// The test executables of one `cargo test --no-run --message-format=json` output, by name.
fn test_executables(json: &str) -> Vec<(String, String)> {
    json.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["profile"]["test"] == true && v["target"]["kind"][0] == "test")
        .filter_map(|v| {
            Some((
                v["target"]["name"].as_str()?.to_string(),
                v["executable"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Packs the test executables `names` of one cargo output into `carry` as `<name>.xz`.
fn pack_tests(cargo_json: &str, names: &[&str], carry: &Path) -> anyhow::Result<()> {
    let built = test_executables(cargo_json);
    for name in names {
        let exe = built
            .iter()
            .find_map(|(n, exe)| (n == name).then_some(exe))
            .with_context(|| format!("no {name} test executable in cargo's output"))?;
        xz(Path::new(exe), &carry.join(format!("{name}.xz")))?;
    }
    Ok(())
}

/// Wheels for upstream S3Gen on the GPU machine's Python 3.12, which has PyTorch but not
/// chatterbox-tts and the few packages it pulls in.
fn download_wheels(dest: &Path) -> anyhow::Result<()> {
    let python = crate::fixtures::ensure_chatterbox_venv()?;
    run_cmd(
        Command::new(python)
            .args([
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
            ])
            .args([
                "--python-version",
                "3.12",
                "--platform",
                "manylinux_2_28_x86_64",
            ])
            .args(["--platform", "manylinux2014_x86_64", "-d"])
            .arg(dest)
            .arg("-r")
            .arg(repo_root().join("xtask/gpu/s3gen-wheels.txt")),
    )
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let cudnn = args.iter().any(|a| a == "--cudnn");
    // `--no-chatterbox`: VITS, the device layer and the benches only; skips the Chatterbox test
    // executables and the upstream wheels (which need the fixtures venv).
    let chatterbox = !args.iter().any(|a| a == "--no-chatterbox");
    let root = repo_root();
    let carry = root.join(".gpu-carry");
    let _ = std::fs::remove_dir_all(&carry);
    std::fs::create_dir_all(carry.join("fixtures"))?;
    std::fs::create_dir_all(carry.join("chatterbox"))?;
    let release = root.join(TARGET).join("release");
    // Every `cuda` build first, then the `cudnn` ones: cargo rebuilds candle-core each time
    // the feature set flips, so it flips once.
    pack_tests(
        &cargo_in_cuda_env(
            "test --release -p ferrovox-vits --features cuda --test parity --no-run --message-format=json",
            cudnn,
        )?,
        &["parity"],
        &carry,
    )?;
    // The kernels' CUDA tests against Candle's convolutions, and the device layer's CUDA graphs
    // against eager runs.
    for (package, test) in [
        ("ferrovox-kernels", "cuda_conv"),
        ("ferrovox-device", "cuda_graph"),
    ] {
        pack_tests(
            &cargo_in_cuda_env(
                &format!("test --release -p {package} --features cuda --test {test} --no-run --message-format=json"),
                cudnn,
            )?,
            &[test],
            &carry,
        )?;
    }
    if chatterbox {
        let tests = test_executables(&cargo_in_cuda_env(
            "test --release -p ferrovox-chatterbox --features cuda --tests --no-run --message-format=json",
            cudnn,
        )?);
        for (name, exe) in &tests {
            xz(
                Path::new(exe),
                &carry.join("chatterbox").join(format!("{name}.xz")),
            )?;
        }
    }
    cargo_in_cuda_env("build --release -p xtask --features cuda", cudnn)?;
    xz(&release.join("xtask"), &carry.join("xtask.xz"))?;
    let cli_features = if cudnn { "cudnn" } else { "cuda" };
    cargo_in_cuda_env(
        &format!("build --release -p ferrovox-cli --features {cli_features}"),
        cudnn,
    )?;
    xz(&release.join("ferrovox"), &carry.join("ferrovox.xz"))?;
    if cudnn {
        // The benches again with cuDNN convolutions, for the on/off comparison.
        cargo_in_cuda_env("build --release -p xtask --features cudnn", cudnn)?;
        xz(&release.join("xtask"), &carry.join("xtask-cudnn.xz"))?;
    }
    if chatterbox {
        download_wheels(&carry.join("wheels"))?;
    }
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
