//! Helpers shared by the parity tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use ferrovox_vits::Config;

/// The fixture directory: `FERROVOX_VITS_FIXTURES`, else this crate's `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    std::env::var_os("FERROVOX_VITS_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}

/// The device the tests run on: `FERROVOX_TEST_DEVICE` (`cpu`, `cuda`, ...), default CPU,
/// with the device layer's tuning applied (TF32 on sm80+ unless `FERROVOX_TF32=0`).
pub fn device() -> Device {
    static RUNTIME: std::sync::OnceLock<ferrovox_device::Runtime> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let request: ferrovox_device::DeviceRequest = std::env::var("FERROVOX_TEST_DEVICE")
                .unwrap_or_else(|_| "cpu".into())
                .parse()
                .expect("FERROVOX_TEST_DEVICE");
            let tuning = ferrovox_device::TuningConfig::from_env().expect("tuning variables");
            ferrovox_device::Runtime::init(&request, &tuning).expect("test device")
        })
        .device()
        .clone()
}

/// The parity tolerance on the test device: 1e-4 in f32; 2e-2 where TF32 is on, whose
/// products keep 10 mantissa bits (relative error near 3e-4 per GEMM, measured on the H100),
/// compounded through the encoder, the four coupling flows and the decoder of random tiny
/// models: the largest error seen was 1.4e-2 on a spectrogram of magnitude up to ~5.
pub fn tolerance() -> f32 {
    match device() {
        Device::Cpu => 1e-4,
        _ if candle_core::cuda::gemm_reduced_precision_f32() => 2e-2,
        _ => 1e-4,
    }
}

/// One parity case: the weights and the recorded inputs/outputs (`io.*`).
#[derive(Debug)]
pub struct Case {
    pub cfg: Config,
    pub tensors: HashMap<String, Tensor>,
}

impl Case {
    pub fn load(name: &str) -> Self {
        let dir = fixtures();
        let cfg_text = std::fs::read_to_string(dir.join(format!("{name}.config.json"))).unwrap();
        let cfg = Config::from_json(&cfg_text).unwrap();
        let tensors =
            candle_core::safetensors::load(dir.join(format!("{name}.safetensors")), &Device::Cpu)
                .unwrap();
        Self { cfg, tensors }
    }

    pub fn vb(&self) -> VarBuilder<'static> {
        VarBuilder::from_tensors(self.tensors.clone(), DType::F32, &device())
    }

    pub fn io(&self, name: &str) -> Tensor {
        self.tensors
            .get(&format!("io.{name}"))
            .unwrap_or_else(|| panic!("fixture lacks io.{name}"))
            .to_device(&device())
            .unwrap()
    }

    /// The recorded speaker embedding `[b, s, 1]`, for multi-speaker cases.
    pub fn speaker_embedding(&self) -> Option<Tensor> {
        self.tensors
            .contains_key("io.speaker_embedding")
            .then(|| self.io("speaker_embedding"))
    }

    pub fn ids(&self, name: &str) -> Vec<Vec<u32>> {
        let t = self
            .io(name)
            .to_dtype(DType::I64)
            .unwrap()
            .to_device(&Device::Cpu)
            .unwrap();
        t.to_vec2::<i64>()
            .unwrap()
            .into_iter()
            .map(|row| row.into_iter().map(|v| v as u32).collect())
            .collect()
    }
}

/// Largest absolute difference; panics when the shapes differ.
pub fn max_abs_diff(ours: &Tensor, reference: &Tensor) -> f32 {
    ferrovox_kernels::compare::max_abs_diff(ours, reference).expect("comparable tensors")
}

/// Asserts `ours` matches `reference` within `tol`, printing the measured figure.
pub fn assert_close(what: &str, ours: &Tensor, reference: &Tensor, tol: f32) {
    let err = max_abs_diff(ours, reference);
    eprintln!("{what}: max abs error {err:.3e} (tolerance {tol:.0e})");
    assert!(
        err <= tol,
        "{what}: max abs error {err:.3e} exceeds {tol:.0e}"
    );
}
