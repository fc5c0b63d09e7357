//! Mirrors transformers' `VitsConfig` (`configuration_vits.py`): a `config.json` deserializes as
//! is, and every field defaults to `facebook/mms-tts-eng`'s value.

use serde::Deserialize;

/// The HiFi-GAN residual block variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum ResBlockKind {
    /// Two convolutions per dilation (`convs1`, `convs2`): transformers and VITS "1".
    #[default]
    #[serde(rename = "1")]
    One,
    /// One convolution per dilation (`convs`): VITS "2", used by Piper medium/low voices.
    #[serde(rename = "2")]
    Two,
}

macro_rules! defaults {
    ($($name:ident: $ty:ty = $value:expr;)*) => {
        $(pub(super) fn $name() -> $ty { $value })*
    };
}

mod default {
    use super::ResBlockKind;
    defaults! {
        vocab_size: usize = 38;
        hidden_size: usize = 192;
        num_hidden_layers: usize = 6;
        num_attention_heads: usize = 2;
        window_size: Option<usize> = Some(4);
        use_bias: bool = true;
        ffn_dim: usize = 768;
        ffn_kernel_size: usize = 3;
        flow_size: usize = 192;
        spectrogram_bins: usize = 513;
        hidden_act: String = "relu".to_string();
        layer_norm_eps: f64 = 1e-5;
        use_stochastic_duration_prediction: bool = true;
        num_speakers: usize = 1;
        speaker_embedding_size: usize = 0;
        upsample_initial_channel: usize = 512;
        upsample_rates: Vec<usize> = vec![8, 8, 2, 2];
        upsample_kernel_sizes: Vec<usize> = vec![16, 16, 4, 4];
        resblock_kernel_sizes: Vec<usize> = vec![3, 7, 11];
        resblock_dilation_sizes: Vec<Vec<usize>> = vec![vec![1, 3, 5]; 3];
        resblock_kind: ResBlockKind = ResBlockKind::One;
        leaky_relu_slope: f64 = 0.1;
        depth_separable_channels: usize = 2;
        depth_separable_num_layers: usize = 3;
        duration_predictor_flow_bins: usize = 10;
        duration_predictor_tail_bound: f64 = 5.0;
        duration_predictor_kernel_size: usize = 3;
        duration_predictor_num_flows: usize = 4;
        duration_predictor_filter_channels: usize = 256;
        prior_encoder_num_flows: usize = 4;
        prior_encoder_num_wavenet_layers: usize = 4;
        wavenet_kernel_size: usize = 5;
        wavenet_dilation_rate: usize = 1;
        speaking_rate: f64 = 1.0;
        noise_scale: f64 = 0.667;
        noise_scale_duration: f64 = 0.8;
        sampling_rate: u32 = 16_000;
        pad_token_id: u32 = 0;
    }
}

fn null_as_default_pad<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    Ok(Option::<u32>::deserialize(d)?.unwrap_or_else(default::pad_token_id))
}

/// VITS hyper-parameters, field for field as transformers' `VitsConfig`.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(default = "default::vocab_size")]
    pub vocab_size: usize,
    #[serde(default = "default::hidden_size")]
    pub hidden_size: usize,
    #[serde(default = "default::num_hidden_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "default::num_attention_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default::window_size")]
    pub window_size: Option<usize>,
    #[serde(default = "default::use_bias")]
    pub use_bias: bool,
    #[serde(default = "default::ffn_dim")]
    pub ffn_dim: usize,
    #[serde(default = "default::ffn_kernel_size")]
    pub ffn_kernel_size: usize,
    #[serde(default = "default::flow_size")]
    pub flow_size: usize,
    #[serde(default = "default::spectrogram_bins")]
    pub spectrogram_bins: usize,
    #[serde(default = "default::hidden_act")]
    pub hidden_act: String,
    #[serde(default = "default::layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default::use_stochastic_duration_prediction")]
    pub use_stochastic_duration_prediction: bool,
    #[serde(default = "default::num_speakers")]
    pub num_speakers: usize,
    #[serde(default = "default::speaker_embedding_size")]
    pub speaker_embedding_size: usize,
    #[serde(default = "default::upsample_initial_channel")]
    pub upsample_initial_channel: usize,
    #[serde(default = "default::upsample_rates")]
    pub upsample_rates: Vec<usize>,
    #[serde(default = "default::upsample_kernel_sizes")]
    pub upsample_kernel_sizes: Vec<usize>,
    #[serde(default = "default::resblock_kernel_sizes")]
    pub resblock_kernel_sizes: Vec<usize>,
    #[serde(default = "default::resblock_dilation_sizes")]
    pub resblock_dilation_sizes: Vec<Vec<usize>>,
    /// Not in transformers' config: Piper voices use VITS's second residual block.
    #[serde(default = "default::resblock_kind")]
    pub resblock_kind: ResBlockKind,
    #[serde(default = "default::leaky_relu_slope")]
    pub leaky_relu_slope: f64,
    #[serde(default = "default::depth_separable_channels")]
    pub depth_separable_channels: usize,
    #[serde(default = "default::depth_separable_num_layers")]
    pub depth_separable_num_layers: usize,
    #[serde(default = "default::duration_predictor_flow_bins")]
    pub duration_predictor_flow_bins: usize,
    #[serde(default = "default::duration_predictor_tail_bound")]
    pub duration_predictor_tail_bound: f64,
    #[serde(default = "default::duration_predictor_kernel_size")]
    pub duration_predictor_kernel_size: usize,
    #[serde(default = "default::duration_predictor_num_flows")]
    pub duration_predictor_num_flows: usize,
    #[serde(default = "default::duration_predictor_filter_channels")]
    pub duration_predictor_filter_channels: usize,
    #[serde(default = "default::prior_encoder_num_flows")]
    pub prior_encoder_num_flows: usize,
    #[serde(default = "default::prior_encoder_num_wavenet_layers")]
    pub prior_encoder_num_wavenet_layers: usize,
    #[serde(default = "default::wavenet_kernel_size")]
    pub wavenet_kernel_size: usize,
    #[serde(default = "default::wavenet_dilation_rate")]
    pub wavenet_dilation_rate: usize,
    #[serde(default = "default::speaking_rate")]
    pub speaking_rate: f64,
    #[serde(default = "default::noise_scale")]
    pub noise_scale: f64,
    #[serde(default = "default::noise_scale_duration")]
    pub noise_scale_duration: f64,
    #[serde(default = "default::sampling_rate")]
    pub sampling_rate: u32,
    /// transformers 5 writes `null` here when the tokenizer owns the pad id; MMS pads with 0.
    #[serde(
        default = "default::pad_token_id",
        deserialize_with = "null_as_default_pad"
    )]
    pub pad_token_id: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self::mms_tts_eng()
    }
}

impl Config {
    /// `facebook/mms-tts-eng`: transformers' `VitsConfig()` defaults, which that checkpoint uses.
    pub fn mms_tts_eng() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }

    /// Reads a transformers `config.json`.
    pub fn from_json(text: &str) -> crate::Result<Self> {
        let cfg: Self =
            serde_json::from_str(text).map_err(|e| crate::Error::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the invariants the modules rely on.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::Config(m));
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return bad(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.upsample_rates.len() != self.upsample_kernel_sizes.len() {
            return bad("upsample_rates and upsample_kernel_sizes differ in length".into());
        }
        if self.resblock_kernel_sizes.len() != self.resblock_dilation_sizes.len() {
            return bad(
                "resblock_kernel_sizes and resblock_dilation_sizes differ in length".into(),
            );
        }
        if self.hidden_act != "relu" && self.hidden_act != "gelu" {
            return bad(format!(
                "hidden_act `{}` is not supported (relu, gelu)",
                self.hidden_act
            ));
        }
        if !self.flow_size.is_multiple_of(2) || self.depth_separable_channels != 2 {
            return bad("flow_size must be even and depth_separable_channels 2".into());
        }
        Ok(())
    }

    /// Output samples per spectrogram frame.
    pub fn hop_length(&self) -> usize {
        self.upsample_rates.iter().product()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_mms_tts_eng() {
        let c = Config::mms_tts_eng();
        assert_eq!(
            (c.vocab_size, c.hidden_size, c.flow_size, c.ffn_dim),
            (38, 192, 192, 768)
        );
        assert_eq!(c.hop_length(), 256);
        assert_eq!(c.sampling_rate, 16_000);
        assert!(c.use_stochastic_duration_prediction);
    }

    #[test]
    fn rejects_inconsistent_configs() {
        let err =
            Config::from_json(r#"{"hidden_size": 10, "num_attention_heads": 3}"#).unwrap_err();
        assert!(err.to_string().contains("divisible"), "{err}");
        assert!(Config::from_json("{not json").is_err());
    }

    #[test]
    fn a_null_pad_id_means_mms_padding() {
        assert_eq!(
            Config::from_json(r#"{"pad_token_id": null}"#)
                .unwrap()
                .pad_token_id,
            0
        );
        assert_eq!(
            Config::from_json(r#"{"pad_token_id": 5}"#)
                .unwrap()
                .pad_token_id,
            5
        );
        assert!(Config::from_json(r#"{"pad_token_id": "x"}"#).is_err());
    }
}
