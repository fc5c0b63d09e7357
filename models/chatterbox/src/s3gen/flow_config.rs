//! Hyper-parameters of S3Gen's flow half (`CausalMaskedDiffWithXvec` and its parts), named as
//! upstream names its constructor arguments (`s3gen.py`, `flow.py`, `decoder.py`) so the small
//! fixture configs deserialize as they are. `Default` is the released model (`S3Gen()`).

use serde::Deserialize;

use crate::{Error, Result};

/// `CausalMaskedDiffWithXvec`: token embedding, speaker projection, encoder, CFM decoder.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct FlowConfig {
    /// Speech-token vocabulary (S3 tokens are `0..6561`; 6561/6562 are T3's SOS/EOS).
    pub vocab_size: usize,
    /// Token embedding width (the encoder's input width).
    pub input_size: usize,
    /// Mel bins.
    pub output_size: usize,
    /// CAMPPlus x-vector width.
    pub spk_embed_dim: usize,
    /// Mel frames per speech token.
    pub token_mel_ratio: usize,
    /// Tokens of right context the encoder's pre-lookahead conv reads.
    pub pre_lookahead_len: usize,
    pub encoder: EncoderConfig,
    pub estimator: EstimatorConfig,
    pub cfm: CfmConfig,
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            vocab_size: 6561,
            input_size: 512,
            output_size: 80,
            spk_embed_dim: 192,
            token_mel_ratio: 2,
            pre_lookahead_len: 3,
            encoder: EncoderConfig::default(),
            estimator: EstimatorConfig::default(),
            cfm: CfmConfig::default(),
        }
    }
}

impl FlowConfig {
    /// Checks the sizes the modules rely on, so a bad config fails at load, not mid-synthesis.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.vocab_size == 0 || self.output_size == 0 || self.spk_embed_dim == 0 {
            return bad("vocab_size, output_size and spk_embed_dim must be positive".into());
        }
        if self.encoder.input_size != self.input_size {
            return bad(format!(
                "encoder.input_size {} differs from the token embedding width {}",
                self.encoder.input_size, self.input_size
            ));
        }
        if self.encoder.upsample_stride != self.token_mel_ratio {
            return bad(format!(
                "encoder.upsample_stride {} must equal token_mel_ratio {}",
                self.encoder.upsample_stride, self.token_mel_ratio
            ));
        }
        if self.encoder.pre_lookahead_len != self.pre_lookahead_len {
            return bad(format!(
                "encoder.pre_lookahead_len {} differs from pre_lookahead_len {}",
                self.encoder.pre_lookahead_len, self.pre_lookahead_len
            ));
        }
        // The estimator's input is [x, mu, spks, cond] stacked on channels.
        if self.estimator.in_channels != 4 * self.output_size
            || self.estimator.out_channels != self.output_size
        {
            return bad(format!(
                "estimator in/out channels {}/{} do not fit {} mel bins (need {}/{})",
                self.estimator.in_channels,
                self.estimator.out_channels,
                self.output_size,
                4 * self.output_size,
                self.output_size
            ));
        }
        self.encoder.validate()?;
        self.estimator.validate()?;
        self.cfm.validate()
    }
}

/// `UpsampleConformerEncoder` (`transformer/upsample_encoder.py`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct EncoderConfig {
    pub input_size: usize,
    /// The model width `d`.
    pub output_size: usize,
    pub attention_heads: usize,
    /// Feed-forward inner width.
    pub linear_units: usize,
    /// Conformer blocks before the upsampling.
    pub num_blocks: usize,
    /// Conformer blocks after it (hard-coded to 4 upstream).
    pub num_up_blocks: usize,
    /// `Upsample1D` stride: mel frames per token.
    pub upsample_stride: usize,
    pub pre_lookahead_len: usize,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self {
            input_size: 512,
            output_size: 512,
            attention_heads: 8,
            linear_units: 2048,
            num_blocks: 6,
            num_up_blocks: 4,
            upsample_stride: 2,
            pre_lookahead_len: 3,
        }
    }
}

impl EncoderConfig {
    pub fn validate(&self) -> Result<()> {
        let d = self.output_size;
        if d == 0
            || !d.is_multiple_of(2)
            || self.attention_heads == 0
            || !d.is_multiple_of(self.attention_heads)
        {
            return Err(Error::Config(format!(
                "encoder width {d} must be even and divisible by {} heads",
                self.attention_heads
            )));
        }
        if self.upsample_stride == 0 || self.pre_lookahead_len == 0 {
            return Err(Error::Config(
                "encoder upsample_stride and pre_lookahead_len must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// `ConditionalDecoder` (`decoder.py`), the CFM's causal U-Net.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct EstimatorConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// U-Net widths, one per level. S3Gen has one level (no down/upsampling), the only shape
    /// this port builds.
    pub channels: Vec<usize>,
    pub attention_head_dim: usize,
    pub num_heads: usize,
    /// Transformer blocks per U-Net block.
    pub n_blocks: usize,
    pub num_mid_blocks: usize,
    /// The meanflow estimator (Turbo's `s3gen_meanflow.safetensors`): its time embedding
    /// mixes the step's start and end times (`time_embed_mixer`), and the CFM solves it
    /// without guidance on a linear schedule.
    pub meanflow: bool,
}

impl Default for EstimatorConfig {
    fn default() -> Self {
        Self {
            in_channels: 320,
            out_channels: 80,
            channels: vec![256],
            attention_head_dim: 64,
            num_heads: 8,
            n_blocks: 4,
            num_mid_blocks: 12,
            meanflow: false,
        }
    }
}

impl EstimatorConfig {
    /// The U-Net width (`channels[0]`).
    pub fn channels(&self) -> usize {
        self.channels.first().copied().unwrap_or(0)
    }

    pub fn validate(&self) -> Result<()> {
        if self.channels.len() != 1 || self.channels[0] == 0 {
            return Err(Error::Config(format!(
                "estimator channels {:?}: only a single U-Net level is supported (S3Gen's [256])",
                self.channels
            )));
        }
        if !self.in_channels.is_multiple_of(2) || self.in_channels < 4 {
            return Err(Error::Config(format!(
                "estimator in_channels {} must be even (it sizes the sinusoidal time embedding)",
                self.in_channels
            )));
        }
        if self.num_heads == 0 || self.attention_head_dim == 0 {
            return Err(Error::Config(
                "estimator num_heads and attention_head_dim must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// `CausalConditionalCFM` inference settings (`CFM_PARAMS` plus `flow_inference`'s steps).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct CfmConfig {
    /// Euler steps: on the cosine time schedule, or a linear one for a meanflow estimator
    /// (Turbo runs 2).
    pub n_timesteps: usize,
    /// Classifier-free guidance weight: `(1 + w) · cond − w · uncond`.
    pub inference_cfg_rate: f64,
}

impl Default for CfmConfig {
    fn default() -> Self {
        Self {
            n_timesteps: 10,
            inference_cfg_rate: 0.7,
        }
    }
}

impl CfmConfig {
    pub fn validate(&self) -> Result<()> {
        if self.n_timesteps == 0 {
            return Err(Error::Config("cfm n_timesteps must be positive".into()));
        }
        Ok(())
    }
}
