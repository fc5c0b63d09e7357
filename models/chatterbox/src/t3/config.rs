//! Mirrors `T3Config` (`t3/modules/t3_config.py`) and the `Llama_520M` entry of
//! `t3/llama_configs.py`. `Default` is the released English model (`T3Config.english_only()`);
//! the fixtures' small builds deserialize into the same structs.

use serde::Deserialize;

use crate::{Error, Result};

/// T3's token layout, conditioning and backbone.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct T3Config {
    pub start_text_token: u32,
    pub stop_text_token: u32,
    /// 704 (English), 2454 (multilingual).
    pub text_tokens_dict_size: usize,
    pub max_text_tokens: usize,
    pub start_speech_token: u32,
    pub stop_speech_token: u32,
    pub speech_tokens_dict_size: usize,
    pub max_speech_tokens: usize,
    /// Prompt speech tokens taken from a reference clip (6 s at 25 Hz).
    pub speech_cond_prompt_len: usize,
    pub speaker_embed_size: usize,
    pub use_perceiver_resampler: bool,
    pub emotion_adv: bool,
    pub llama: LlamaConfig,
    pub perceiver: PerceiverConfig,
    /// `(layer, head)` of the attention heads the stop detector reads
    /// ([`super::alignment`]); empty for models without one (English, multilingual v3).
    pub alignment_heads: Vec<(usize, usize)>,
}

impl Default for T3Config {
    fn default() -> Self {
        Self {
            start_text_token: 255,
            stop_text_token: 0,
            text_tokens_dict_size: 704,
            max_text_tokens: 2048,
            start_speech_token: 6561,
            stop_speech_token: 6562,
            speech_tokens_dict_size: 8194,
            max_speech_tokens: 4096,
            speech_cond_prompt_len: 150,
            speaker_embed_size: 256,
            use_perceiver_resampler: true,
            emotion_adv: true,
            llama: LlamaConfig::default(),
            perceiver: PerceiverConfig::default(),
            alignment_heads: Vec::new(),
        }
    }
}

/// The speech tokens S3Gen can decode: `0..6561`; above are T3's start and stop.
pub const SPEECH_CODES: u32 = 6561;

impl T3Config {
    /// The multilingual model's config (`T3Config.multilingual()`), as v3 runs it: without the
    /// stop detector.
    pub fn multilingual() -> Self {
        Self {
            text_tokens_dict_size: 2454,
            ..Self::default()
        }
    }

    /// The multilingual v2 model's config: [`T3Config::multilingual`] with the stop detector
    /// on upstream's heads.
    pub fn multilingual_v2() -> Self {
        Self {
            alignment_heads: super::alignment::ALIGNED_HEADS.to_vec(),
            ..Self::multilingual()
        }
    }

    /// The width of every embedding (the backbone's hidden size).
    pub fn n_channels(&self) -> usize {
        self.llama.hidden_size
    }

    /// The longest conditioning prefix: the speaker token, the prompt (the Perceiver's queries,
    /// or the prompt tokens themselves without it) and the exaggeration token.
    pub fn cond_len_max(&self) -> usize {
        let prompt = if self.use_perceiver_resampler {
            self.perceiver.query_tokens
        } else {
            self.speech_cond_prompt_len
        };
        1 + prompt + usize::from(self.emotion_adv)
    }

    /// Rows of the learned text position table (`max_text_tokens + 2`).
    pub fn text_positions(&self) -> usize {
        self.max_text_tokens + 2
    }

    /// Rows of the learned speech position table (`max_speech_tokens + 2 + 2`).
    pub fn speech_positions(&self) -> usize {
        self.max_speech_tokens + 4
    }

    /// Checks the sizes the modules rely on.
    pub fn validate(&self) -> Result<()> {
        let l = &self.llama;
        let bad = |m: String| Err(Error::Config(format!("T3: {m}")));
        if l.num_attention_heads == 0 || l.head_dim * l.num_attention_heads != l.hidden_size {
            return bad(format!(
                "head_dim {} × heads {} must equal hidden_size {}",
                l.head_dim, l.num_attention_heads, l.hidden_size
            ));
        }
        if l.num_key_value_heads == 0
            || !l.num_attention_heads.is_multiple_of(l.num_key_value_heads)
        {
            return bad(format!(
                "{} attention heads are not a multiple of {} key/value heads",
                l.num_attention_heads, l.num_key_value_heads
            ));
        }
        if !l.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim {} must be even for RoPE", l.head_dim));
        }
        if let Some((layer, head)) = self
            .alignment_heads
            .iter()
            .find(|&&(layer, head)| layer >= l.num_hidden_layers || head >= l.num_attention_heads)
        {
            return bad(format!(
                "the stop detector reads head {head} of layer {layer}, outside a backbone of {} \
                 layers of {} heads",
                l.num_hidden_layers, l.num_attention_heads
            ));
        }
        for (name, t) in [
            ("start_speech_token", self.start_speech_token),
            ("stop_speech_token", self.stop_speech_token),
        ] {
            if t as usize >= self.speech_tokens_dict_size {
                return bad(format!(
                    "{name} {t} is outside the speech vocabulary of {}",
                    self.speech_tokens_dict_size
                ));
            }
        }
        if self.use_perceiver_resampler && self.perceiver.query_size != self.n_channels() {
            return bad(format!(
                "perceiver query size {} differs from the model width {}",
                self.perceiver.query_size,
                self.n_channels()
            ));
        }
        Ok(())
    }
}

/// The Llama backbone (transformers' `LlamaConfig` fields T3 uses).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct LlamaConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
}

impl Default for LlamaConfig {
    fn default() -> Self {
        Self {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 30,
            num_attention_heads: 16,
            num_key_value_heads: 16,
            head_dim: 64,
            rms_norm_eps: 1e-5,
            rope_theta: 500_000.0,
            rope_scaling: Some(RopeScaling::default()),
        }
    }
}

/// transformers' `rope_type="llama3"` frequency scaling.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct RopeScaling {
    pub rope_type: String,
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

impl Default for RopeScaling {
    fn default() -> Self {
        Self {
            rope_type: "llama3".into(),
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        }
    }
}

/// `Perceiver(pre_attention_query_token, pre_attention_query_size, embedding_dim,
/// num_attn_heads)`; upstream always builds `Perceiver()` at these sizes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct PerceiverConfig {
    #[serde(alias = "pre_attention_query_token")]
    pub query_tokens: usize,
    #[serde(alias = "pre_attention_query_size")]
    pub query_size: usize,
    pub embedding_dim: usize,
    #[serde(alias = "num_attn_heads")]
    pub heads: usize,
}

impl Default for PerceiverConfig {
    fn default() -> Self {
        Self {
            query_tokens: 32,
            query_size: 1024,
            embedding_dim: 1024,
            heads: 4,
        }
    }
}
