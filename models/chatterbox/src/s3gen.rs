//! `S3Token2Wav.inference`: speech tokens + a speaker reference → flow (mel) → HiFT (audio),
//! with upstream's fade-in over the first 40 ms.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::hift::{HiftConfig, HiftGenerator, SourceNoise};
use crate::{Error, Flow, FlowConfig, Result, SeededSourceNoise};

/// Output sample rate.
pub const SAMPLE_RATE: u32 = 24_000;

/// Both halves' configs; the defaults are the released model (upstream hard-codes them).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct S3GenConfig {
    /// Tokens → mel.
    pub flow: FlowConfig,
    /// Mel → audio.
    pub hift: HiftConfig,
}

/// Who speaks: the reference's S3 tokens, its 24 kHz log-mel and its x-vector (upstream's
/// `ref_dict`: `prompt_token`, `prompt_feat`, `embedding`).
#[derive(Debug, Clone)]
pub struct SpeakerReference {
    /// S3 tokens of the reference (may be empty).
    pub prompt_tokens: Vec<u32>,
    /// `[1, frames, 80]` log-mel of the reference, time-major.
    pub prompt_feat: Tensor,
    /// `[1, 192]` CAMPPlus x-vector.
    pub xvector: Tensor,
}

/// The random draws of one synthesis: the CFM starting noise and HiFT's source draws.
#[allow(missing_debug_implementations)] // holds a `dyn SourceNoise`
pub struct S3GenNoise<'a> {
    /// `[1, 80, mel frames]` standard normal, prompt frames included ([`S3Gen::noise_frames`]).
    pub cfm: Tensor,
    /// The sine source's phase and noise.
    pub source: &'a mut dyn SourceNoise,
}

/// Fade-in applied to the first 960 samples: 20 ms of silence, then a 20 ms raised cosine.
/// It hides the vocoder's start-up transient.
pub fn trim_fade() -> Vec<f32> {
    let n = 480;
    let mut fade = vec![0f32; 2 * n];
    for (i, v) in fade[n..].iter_mut().enumerate() {
        let x = std::f32::consts::PI * (1.0 - i as f32 / (n - 1) as f32);
        *v = (x.cos() + 1.0) / 2.0;
    }
    fade
}

/// S3Gen: the flow and the vocoder.
#[derive(Debug)]
pub struct S3Gen {
    flow: Flow,
    hift: HiftGenerator,
    fade: Vec<f32>,
}

impl S3Gen {
    /// Builds from a VarBuilder at the checkpoint root (`flow.*`, `mel2wav.*`).
    pub fn new(cfg: &S3GenConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            flow: Flow::new(&cfg.flow, vb.pp("flow"))?,
            hift: HiftGenerator::new(&cfg.hift, vb.pp("mel2wav"))?,
            fade: trim_fade(),
        })
    }

    /// Loads the released `s3gen.safetensors` (full size) onto `device`; a missing or
    /// misshapen tensor names the file and the key.
    pub fn load(path: &Path, cfg: &S3GenConfig, device: &Device) -> Result<Self> {
        let checkpoint = |reason: String| Error::Checkpoint {
            path: path.display().to_string(),
            reason,
        };
        if !path.is_file() {
            return Err(checkpoint("file not found".into()));
        }
        // SAFETY: the file is mapped read-only and not modified while the model lives.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, device) }
            .map_err(|e| checkpoint(e.to_string()))?;
        Self::new(cfg, vb).map_err(|e| match e {
            Error::Candle(c) => checkpoint(c.to_string()),
            Error::Checkpoint { reason, .. } => checkpoint(reason),
            other => other,
        })
    }

    /// The flow.
    pub fn flow(&self) -> &Flow {
        &self.flow
    }

    /// The vocoder.
    pub fn hift(&self) -> &HiftGenerator {
        &self.hift
    }

    /// Length of the CFM noise for `tokens` target tokens with `reference`.
    pub fn noise_frames(&self, reference: &SpeakerReference, tokens: usize) -> usize {
        self.flow.mel_frames(reference.prompt_tokens.len(), tokens)
    }

    /// Tokens to the mel spectrogram `[1, 80, 2 · tokens]` (the reference part cut off).
    pub fn mel(
        &self,
        tokens: &[u32],
        reference: &SpeakerReference,
        cfm_noise: &Tensor,
    ) -> Result<Tensor> {
        self.flow.inference(
            &reference.prompt_tokens,
            tokens,
            &reference.prompt_feat,
            &reference.xvector,
            cfm_noise,
        )
    }

    /// Tokens to audio `[1, 960 · tokens]` at 24 kHz with the given draws.
    pub fn inference(
        &self,
        tokens: &[u32],
        reference: &SpeakerReference,
        noise: S3GenNoise<'_>,
    ) -> Result<Tensor> {
        let mel = self.mel(tokens, reference, &noise.cfm)?;
        let audio = self.hift.inference(&mel, None, noise.source)?.audio;
        self.fade_in(&audio)
    }

    /// Tokens to audio samples, every draw from `seed`.
    pub fn synthesize(
        &self,
        tokens: &[u32],
        reference: &SpeakerReference,
        seed: u64,
    ) -> Result<Vec<f32>> {
        let frames = self.noise_frames(reference, tokens.len());
        let device = reference.prompt_feat.device();
        let mut rng = SeededSourceNoise::new(seed);
        let bins = self.flow.config().output_size;
        let cfm = rng.sine_normal(1, bins, frames, device)?;
        let audio = self.inference(
            tokens,
            reference,
            S3GenNoise {
                cfm,
                source: &mut rng,
            },
        )?;
        Ok(audio.squeeze(0)?.to_vec1::<f32>()?)
    }

    fn fade_in(&self, audio: &Tensor) -> Result<Tensor> {
        let n = audio.dim(1)?;
        let k = self.fade.len().min(n);
        let mut gain = self.fade[..k].to_vec();
        gain.resize(n, 1.0);
        let gain = Tensor::from_vec(gain, (1, n), audio.device())?.to_dtype(audio.dtype())?;
        Ok(audio.broadcast_mul(&gain)?)
    }
}
