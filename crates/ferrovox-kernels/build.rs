//! With the `cuda` feature, compiles ferrovox's CUDA kernels (`src/cuda/*.cu`) into a
//! fatbin with nvcc: SASS for `CUDA_COMPUTE_CAP` (the same variable candle's kernels use,
//! default 90) plus PTX for newer GPUs. Tensor-core kernels need compute capability 8.0+; for
//! older targets none are built and the models keep Candle's ops.

use std::path::PathBuf;
use std::process::Command;

const KERNELS: [&str; 3] = ["conv1d", "spline", "decode"];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(ferrovox_cuda_kernels)");
    for k in KERNELS {
        println!("cargo::rerun-if-changed=src/cuda/{k}.cu");
    }
    println!("cargo::rerun-if-env-changed=NVCC");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let cap: u32 = std::env::var("CUDA_COMPUTE_CAP")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(90);
    if cap < 80 {
        println!("cargo::warning=CUDA_COMPUTE_CAP {cap} < 80: ferrovox's tensor-core kernels are not built");
        return;
    }
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".to_string());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    for k in KERNELS {
        let src = format!("src/cuda/{k}.cu");
        let status = Command::new(&nvcc)
            .args(["-fatbin", "-O3", "-std=c++17", "-gencode"])
            .arg(format!("arch=compute_{cap},code=[sm_{cap},compute_{cap}]"))
            .arg("-o")
            .arg(out_dir.join(format!("{k}.fatbin")))
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("running {nvcc} for {src}: {e}"));
        assert!(status.success(), "{nvcc} failed on {src}");
    }
    println!("cargo::rustc-cfg=ferrovox_cuda_kernels");
}
