//! Fixture loading shared by the parity tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

/// The fixture directory: `FERROVOX_CHATTERBOX_FIXTURES`, else this crate's `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    std::env::var_os("FERROVOX_CHATTERBOX_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}

/// Every tensor of a fixture file (weights, inputs, outputs) and its `config` metadata.
pub struct Fixture {
    pub tensors: HashMap<String, Tensor>,
    pub config: serde_json::Value,
}

impl Fixture {
    pub fn load(name: &str) -> Self {
        let path = fixtures().join(format!("{name}.safetensors"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let config = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("config"))
            .map(|c| serde_json::from_str(c).unwrap())
            .unwrap_or(serde_json::Value::Null);
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
        Self { tensors, config }
    }

    /// A tensor by name, as f32 unless it holds ids.
    pub fn get(&self, name: &str) -> Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("fixture has no `{name}`"))
            .clone()
    }

    /// A VarBuilder over every tensor (weights are under their upstream keys).
    pub fn vb(&self) -> VarBuilder<'static> {
        VarBuilder::from_tensors(self.tensors.clone(), DType::F32, &Device::Cpu)
    }

    /// A VarBuilder over the tensors of several fixtures at once (the e2e test).
    pub fn vb_of(fixtures: &[&Fixture]) -> VarBuilder<'static> {
        let mut all = HashMap::new();
        for f in fixtures {
            all.extend(f.tensors.clone());
        }
        VarBuilder::from_tensors(all, DType::F32, &Device::Cpu)
    }
}

/// Largest absolute difference, as f32 (shapes must agree).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
