//! Fixture loading shared by the parity tests: safetensors files of f32 tensors.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// A fixture file's tensors, read as (shape, f32 values).
pub struct Fixture {
    bytes: Vec<u8>,
}

impl Fixture {
    /// The file at `path`.
    pub fn at(path: &Path) -> Self {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self { bytes }
    }

    /// `tests/fixtures/NAME.safetensors` of this crate.
    pub fn own(name: &str) -> Self {
        Self::at(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(format!("{name}.safetensors")),
        )
    }

    /// `NAME.safetensors` among the fixtures Chatterbox's tests share
    /// (`FERROVOX_CHATTERBOX_FIXTURES`, else `models/chatterbox/tests/fixtures`).
    pub fn chatterbox(name: &str) -> Self {
        let dir = std::env::var_os("FERROVOX_CHATTERBOX_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../../models/chatterbox/tests/fixtures")
            });
        Self::at(&dir.join(format!("{name}.safetensors")))
    }

    /// A tensor as (shape, f32 values).
    pub fn get(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let tensors = safetensors::SafeTensors::deserialize(&self.bytes).unwrap();
        let view = tensors
            .tensor(name)
            .unwrap_or_else(|e| panic!("fixture has no `{name}`: {e}"));
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (view.shape().to_vec(), values)
    }
}
