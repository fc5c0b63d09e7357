//! Hyper-parameters of `HiFTGenerator` and `ConvRNNF0Predictor` (`s3gen/hifigan.py`,
//! `s3gen/f0_predictor.py`), named as upstream names its constructor arguments so the fixture
//! configs deserialize as they are. `Default` is the released model (`S3Token2Wav.__init__`).

use serde::Deserialize;

use crate::{Error, Result};

/// `HiFTGenerator`: neural source filter plus an iSTFT head.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct HiftConfig {
    /// Mel bins of the input.
    pub in_channels: usize,
    /// Width after `conv_pre`; halves at each upsampling.
    pub base_channels: usize,
    /// Overtones above the fundamental in the sine source (9 sines at 8).
    pub nb_harmonics: usize,
    pub sampling_rate: u32,
    /// Sine amplitude of the source (`sine_amp`); unvoiced noise has std `nsf_alpha / 3`.
    pub nsf_alpha: f64,
    /// Noise std in voiced samples.
    pub nsf_sigma: f64,
    /// F0 (Hz) above which a sample counts as voiced.
    pub nsf_voiced_threshold: f64,
    pub upsample_rates: Vec<usize>,
    pub upsample_kernel_sizes: Vec<usize>,
    pub istft_params: IstftParams,
    pub resblock_kernel_sizes: Vec<usize>,
    pub resblock_dilation_sizes: Vec<Vec<usize>>,
    pub source_resblock_kernel_sizes: Vec<usize>,
    pub source_resblock_dilation_sizes: Vec<Vec<usize>>,
    /// Leaky ReLU slope before each upsampling (the one before `conv_post` is torch's 0.01).
    pub lrelu_slope: f64,
    /// Output clamp.
    pub audio_limit: f64,
    pub f0_predictor: F0PredictorConfig,
}

/// The iSTFT head's transform (`istft_params`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct IstftParams {
    pub n_fft: usize,
    pub hop_len: usize,
}

/// `ConvRNNF0Predictor`: five convs and a linear classifier (no RNN despite the name).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct F0PredictorConfig {
    pub num_class: usize,
    pub in_channels: usize,
    pub cond_channels: usize,
}

impl Default for HiftConfig {
    fn default() -> Self {
        Self {
            in_channels: 80,
            base_channels: 512,
            nb_harmonics: 8,
            sampling_rate: 24_000,
            nsf_alpha: 0.1,
            nsf_sigma: 0.003,
            nsf_voiced_threshold: 10.0,
            upsample_rates: vec![8, 5, 3],
            upsample_kernel_sizes: vec![16, 11, 7],
            istft_params: IstftParams::default(),
            resblock_kernel_sizes: vec![3, 7, 11],
            resblock_dilation_sizes: vec![vec![1, 3, 5]; 3],
            source_resblock_kernel_sizes: vec![7, 7, 11],
            source_resblock_dilation_sizes: vec![vec![1, 3, 5]; 3],
            lrelu_slope: 0.1,
            audio_limit: 0.99,
            f0_predictor: F0PredictorConfig::default(),
        }
    }
}

impl Default for IstftParams {
    fn default() -> Self {
        Self {
            n_fft: 16,
            hop_len: 4,
        }
    }
}

impl Default for F0PredictorConfig {
    fn default() -> Self {
        Self {
            num_class: 1,
            in_channels: 80,
            cond_channels: 512,
        }
    }
}

impl HiftConfig {
    /// Output samples per mel frame: the upsampling product times the iSTFT hop (480).
    pub fn samples_per_frame(&self) -> usize {
        self.upsample_rates.iter().product::<usize>() * self.istft_params.hop_len
    }

    /// Stride of each stage's source downsampling conv, stage 0 first: the cumulative
    /// product of the upsampling rates read from the end (`[15, 3, 1]` for `[8, 5, 3]`).
    pub fn source_down_rates(&self) -> Vec<usize> {
        let n = self.upsample_rates.len();
        (0..n)
            .map(|i| self.upsample_rates[i + 1..].iter().product())
            .collect()
    }

    /// Checks the sizes the modules rely on, so a bad config fails at load.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        let n = self.upsample_rates.len();
        if n == 0 || self.upsample_kernel_sizes.len() != n {
            return bad(format!(
                "{n} upsample rates need as many kernel sizes, got {}",
                self.upsample_kernel_sizes.len()
            ));
        }
        if self.source_resblock_kernel_sizes.len() != n
            || self.source_resblock_dilation_sizes.len() != n
        {
            return bad(format!(
                "{n} upsamplings need {n} source resblock kernels and dilations"
            ));
        }
        if self.resblock_kernel_sizes.is_empty()
            || self.resblock_dilation_sizes.len() != self.resblock_kernel_sizes.len()
        {
            return bad("resblock kernel and dilation lists must be non-empty and match".into());
        }
        for (&u, &k) in self.upsample_rates.iter().zip(&self.upsample_kernel_sizes) {
            // ConvTranspose1d(k, u, padding (k - u) / 2) grows the length exactly u times only
            // when k - u is even and non-negative.
            if u == 0 || k < u || !(k - u).is_multiple_of(2) {
                return bad(format!("upsample kernel {k} does not fit rate {u}"));
            }
        }
        let kernels = self
            .resblock_kernel_sizes
            .iter()
            .chain(&self.source_resblock_kernel_sizes);
        let dilations = self
            .resblock_dilation_sizes
            .iter()
            .chain(&self.source_resblock_dilation_sizes);
        for (&k, ds) in kernels.zip(dilations) {
            if k.is_multiple_of(2) || ds.is_empty() || ds.contains(&0) {
                return bad(format!("resblock kernel {k} with dilations {ds:?}: need odd kernels and positive dilations"));
            }
        }
        if self.base_channels == 0 || !self.base_channels.is_multiple_of(1 << n) {
            return bad(format!(
                "base_channels {} must halve {n} times",
                self.base_channels
            ));
        }
        let p = &self.istft_params;
        if p.n_fft < 2 || !p.n_fft.is_multiple_of(2) || p.hop_len == 0 || p.hop_len > p.n_fft {
            return bad(format!(
                "istft n_fft {} / hop {} unusable",
                p.n_fft, p.hop_len
            ));
        }
        if self.sampling_rate == 0 || self.in_channels == 0 {
            return bad("sampling_rate and in_channels must be positive".into());
        }
        let f0 = &self.f0_predictor;
        if f0.num_class != 1 || f0.in_channels != self.in_channels || f0.cond_channels == 0 {
            return bad(format!(
                "f0 predictor {f0:?}: needs one class and {} input channels",
                self.in_channels
            ));
        }
        Ok(())
    }
}
