//! Fuzz targets for every reader of untrusted input in ferrovox, and the harness that runs
//! them: text front ends, the Piper ONNX reader, voice and checkpoint files, configs,
//! reference audio, the speech request body, the voice store's metadata and Wyoming framing.
//!
//! Each target takes bytes and must end in a result or a named error: no panic, no case past
//! its time limit, no allocation beyond what its input justifies (a 10 KB file whose header
//! claims gigabytes must not get them). `cargo test -p ferrovox-fuzz` runs every target on its
//! corpus, its regressions and a bounded number of mutations; `cargo xtask fuzz TARGET
//! --seconds N` runs one for longer and keeps what fails under `target/fuzz/`.
//!
//! Mutation is byte-level and blind (no coverage feedback, which needs a nightly toolchain):
//! the corpus gives the structure, the mutations break it in the places headers and lengths
//! live.

pub mod alloc_count;
pub mod harness;
pub mod mutate;
mod targets;

pub use alloc_count::Counting;

/// A reader of untrusted bytes, and what it may allocate.
#[derive(Debug)]
pub struct Target {
    /// The name on the command line and of its corpus folder.
    pub name: &'static str,
    /// What it reads.
    pub about: &'static str,
    /// Reads the bytes; `Err` is a defect the target checks for itself (an error that names
    /// nothing, a server error for the client's bytes).
    pub run: fn(&[u8]) -> Result<(), String>,
    /// Loads what every case shares (dictionaries, tokenizer files) before a case is counted:
    /// a fixed cost of the reader, not of the input.
    pub warm: fn(),
    /// Bytes a case may hold whatever its input (the reader's fixed cost).
    pub base_bytes: usize,
    /// Bytes a case may hold per input byte.
    pub bytes_per_input_byte: usize,
}

impl Target {
    /// The most bytes a case with `len` input bytes may hold at once.
    pub fn allowed_bytes(&self, len: usize) -> usize {
        self.base_bytes + self.bytes_per_input_byte * len
    }
}

/// Every target.
pub fn targets() -> Vec<Target> {
    targets::all()
}

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    targets().into_iter().find(|t| t.name == name)
}
