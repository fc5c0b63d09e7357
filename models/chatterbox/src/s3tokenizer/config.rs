//! Mirrors `ModelConfig` (`s3tokenizer/model_v2.py`, s3tokenizer 0.3.0). `Default` is the size
//! Chatterbox's wrapper always builds (`S3Tokenizer("speech_tokenizer_v2_25hz")`); the fixtures'
//! small build deserializes into the same struct.

use serde::Deserialize;

use crate::{Error, Result};

/// Width of upstream's rotary table (`precompute_freqs_cis(64, 2048)`), fixed whatever the
/// model's width: every attention head must be this wide.
pub const HEAD_DIM: usize = 64;

/// Positions in upstream's rotary table: the longest token sequence one encoder call takes.
pub const MAX_POSITIONS: usize = 2048;

/// FSQ's codebook: 8 digits of 3 levels.
pub const CODEBOOK_SIZE: usize = 6561;

/// The speech tokenizer's sizes, under upstream's field names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct S3TokenizerConfig {
    /// Mel bins of the front end and input channels of `conv1`.
    pub n_mels: usize,
    /// Whisper's context length, which the v2 encoder does not read (its positions come from
    /// the rotary table).
    pub n_audio_ctx: usize,
    pub n_audio_state: usize,
    pub n_audio_head: usize,
    pub n_audio_layer: usize,
    /// Upstream overwrites it with 3^8 for every v2 model.
    pub n_codebook_size: usize,
    /// Upstream's choice between its explicit softmax and `scaled_dot_product_attention`; the
    /// two compute the same attention.
    pub use_sdpa: bool,
}

impl Default for S3TokenizerConfig {
    fn default() -> Self {
        Self {
            n_mels: 128,
            n_audio_ctx: 1500,
            n_audio_state: 1280,
            n_audio_head: 20,
            n_audio_layer: 6,
            n_codebook_size: CODEBOOK_SIZE,
            use_sdpa: false,
        }
    }
}

impl S3TokenizerConfig {
    /// Checks that the sizes describe a model upstream's v2 code can build and run.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::Config(format!("S3 tokenizer: {why}")));
        if self.n_mels == 0 || self.n_audio_state == 0 || self.n_audio_head == 0 {
            return bad(format!(
                "n_mels ({}), n_audio_state ({}) and n_audio_head ({}) must be positive",
                self.n_mels, self.n_audio_state, self.n_audio_head
            ));
        }
        if self.n_audio_state != self.n_audio_head * HEAD_DIM {
            return bad(format!(
                "n_audio_state {} over {} heads is not {HEAD_DIM} per head, the width of the \
                 rotary table",
                self.n_audio_state, self.n_audio_head
            ));
        }
        if self.n_codebook_size != CODEBOOK_SIZE {
            return bad(format!(
                "n_codebook_size {} is not 3^8 = {CODEBOOK_SIZE}, the only FSQ codebook of v2",
                self.n_codebook_size
            ));
        }
        Ok(())
    }
}
