//! Mirrors `tts.py`'s `prepare_conditionals` and `s3gen.py`'s `embed_ref` (chatterbox-tts 0.1.7):
//! a reference clip to a voice, [`Conditionals`] (`ChatterboxTTS.prepare_conditionals`, with
//! `S3Token2Mel.embed_ref` making S3Gen's half).
//!
//! Upstream reads the clip at 24 kHz and makes a 16 kHz copy (librosa's soxr resampler); from
//! those:
//!
//! | part | from |
//! |---|---|
//! | S3Gen's prompt mel | the 24 kHz clip's first 10 s |
//! | S3Gen's prompt tokens and x-vector | `embed_ref`'s own 16 kHz copy (torchaudio's resampler) of those 10 s |
//! | T3's prompt tokens | the first 6 s of the 16 kHz clip, at most `speech_cond_prompt_len` tokens |
//! | T3's speaker embedding | the whole 16 kHz clip (the voice encoder trims it itself) |
//!
//! Chatterbox Turbo and Nano (`tts_turbo.py`) differ by [`ReferenceRule::TURBO`]: the clip must
//! be longer than 5 s, is first scaled to −27 LUFS (pyloudnorm's meter), and T3's prompt tokens
//! come from its first 15 s.
//!
//! [`VoiceCloner::conditionals_with`] takes all three signals, so a caller holding upstream's
//! own gets upstream's voice; [`VoiceCloner::conditionals`] makes `embed_ref`'s copy with
//! [`ferrovox_audio::resample`], and [`VoiceCloner::from_clip`] both 16 kHz copies.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use ferrovox_audio::{MelSpectrogram, ReferenceClip};

use crate::campplus::{self, CampPlus, CampPlusConfig};
use crate::s3gen::token2wav::MIN_REFERENCE_SECONDS;
use crate::s3gen::SpeakerReference;
use crate::s3tokenizer::{self, S3Tokenizer, S3TokenizerConfig};
use crate::t3::T3Cond;
use crate::voice_encoder::VoiceEncoder;
use crate::{Conditionals, Error, Result};

/// S3Gen's rate: the clip's rate for the prompt mel.
pub const S3GEN_RATE: u32 = crate::s3gen::SAMPLE_RATE;
/// The rate of the tokenizer, CAMPPlus and the voice encoder.
pub const ENCODER_RATE: u32 = 16_000;
/// Samples of the 24 kHz clip S3Gen is conditioned on (`DEC_COND_LEN`, 10 s).
pub const DEC_COND_LEN: usize = 10 * S3GEN_RATE as usize;
/// The same 10 s at 16 kHz (`embed_ref`'s copy).
const DEC_COND_LEN_16K: usize = 10 * ENCODER_RATE as usize;
/// Samples of the 16 kHz clip T3's prompt tokens come from (`ENC_COND_LEN`, 6 s).
pub const ENC_COND_LEN: usize = 6 * ENCODER_RATE as usize;

/// How a model family conditions on a reference clip, where its `prepare_conditionals` differs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReferenceRule {
    /// Seconds of the 16 kHz clip T3's prompt tokens come from (`ENC_COND_LEN`).
    pub t3_prompt_s: usize,
    /// The loudness (LUFS, pyloudnorm's meter) the clip is scaled to first, if any.
    pub target_lufs: Option<f64>,
    /// A clip must be longer than this many seconds.
    pub longer_than_s: f64,
}

impl ReferenceRule {
    /// English and multilingual Chatterbox (`tts.py`, `mtl_tts.py`).
    pub const CHATTERBOX: Self = Self {
        t3_prompt_s: ENC_COND_LEN / ENCODER_RATE as usize,
        target_lufs: None,
        longer_than_s: 0.0,
    };
    /// Chatterbox Turbo and Nano (`tts_turbo.py`): more than 5 s, −27 LUFS, 15 s of prompt.
    pub const TURBO: Self = Self {
        t3_prompt_s: 15,
        target_lufs: Some(-27.0),
        longer_than_s: 5.0,
    };

    /// The rule of the model in `dir`: Turbo's for a Turbo or Nano directory that holds no
    /// English or multilingual T3, else Chatterbox's.
    pub fn of_dir(dir: &Path) -> Self {
        let other_t3 = ["t3_cfg.safetensors", crate::MTL_T3, crate::MTL_T3_V2]
            .iter()
            .any(|f| dir.join(f).is_file());
        if !other_t3 && crate::TurboSize::of_dir(dir).is_some() {
            Self::TURBO
        } else {
            Self::CHATTERBOX
        }
    }

    /// The gain upstream applies to a 24 kHz clip before anything else (1 without a target).
    fn gain(&self, clip_24k: &[f32]) -> f32 {
        self.target_lufs
            .and_then(|target| ferrovox_audio::loudness_gain(clip_24k, S3GEN_RATE, target))
            .unwrap_or(1.0)
    }
}

/// A clip whose RMS is below this carries no voice: the encoders' outputs would be the
/// normalisation of (near) zero.
const SILENCE_RMS: f32 = 1e-4;
/// How far the durations of the same clip at two rates may differ: resamplers round the
/// length, and the difference stays under a millisecond; 20 ms means a different clip.
const DURATION_SLACK_S: f64 = 0.02;

/// One reference clip at the rates upstream uses it at, for [`VoiceCloner::conditionals_with`].
#[derive(Debug, Clone, Copy)]
pub struct ReferenceAudio<'a> {
    /// The whole clip at 24 kHz (`librosa.load(path, sr=24000)`); its first 10 s condition
    /// S3Gen.
    pub clip_24k: &'a [f32],
    /// The whole clip at 16 kHz (`librosa.resample` of `clip_24k`): the voice encoder takes all
    /// of it, T3's prompt tokens its first 6 s.
    pub clip_16k: &'a [f32],
    /// `embed_ref`'s own 16 kHz copy of `clip_24k`'s first 10 s (torchaudio's `Resample`), for
    /// S3Gen's tokens and x-vector; cut to 10 s here too. `None` resamples those 10 s with
    /// [`ferrovox_audio::resample`].
    pub s3gen_16k: Option<&'a [f32]>,
}

/// The encoders a reference clip goes through, and T3's prompt length.
#[derive(Debug, Clone)]
pub struct VoiceCloner {
    voice_encoder: VoiceEncoder,
    tokenizer: S3Tokenizer,
    speaker_encoder: CampPlus,
    mel: MelSpectrogram,
    prompt_len: usize,
    rule: ReferenceRule,
    device: Device,
}

impl VoiceCloner {
    /// From encoders built elsewhere; `speech_cond_prompt_len` is T3's (`T3Config`), the most
    /// prompt tokens T3 takes. Outputs are placed on the voice encoder's device.
    pub fn new(
        voice_encoder: VoiceEncoder,
        tokenizer: S3Tokenizer,
        speaker_encoder: CampPlus,
        speech_cond_prompt_len: usize,
    ) -> Result<Self> {
        let rate = voice_encoder.config().sample_rate;
        if rate != ENCODER_RATE {
            return Err(Error::Config(format!(
                "voice cloning: the voice encoder takes {rate} Hz audio; prepare_conditionals \
                 hands it {ENCODER_RATE} Hz"
            )));
        }
        // Upstream only builds T3's prompt when the length is set (and fails without it).
        if speech_cond_prompt_len == 0 {
            return Err(Error::Config(
                "voice cloning: speech_cond_prompt_len is 0, T3 would get no prompt tokens".into(),
            ));
        }
        let mel = MelSpectrogram::s3gen()
            .map_err(|e| Error::Config(format!("S3Gen's mel front end: {e}")))?;
        Ok(Self {
            device: voice_encoder.device().clone(),
            voice_encoder,
            tokenizer,
            speaker_encoder,
            mel,
            prompt_len: speech_cond_prompt_len,
            rule: ReferenceRule::CHATTERBOX,
        })
    }

    /// The same encoders under `rule` (Turbo's, for Turbo and Nano).
    pub fn with_rule(mut self, rule: ReferenceRule) -> Self {
        self.rule = rule;
        self
    }

    /// How this cloner conditions on a clip.
    pub fn rule(&self) -> ReferenceRule {
        self.rule
    }

    /// The voice encoder's and S3Gen's checkpoints in a model directory: the English model's
    /// safetensors, else the multilingual model's PyTorch files (`ve.pt`, `s3gen.pt`), else
    /// Turbo's meanflow S3Gen (`s3gen_meanflow.safetensors`, which holds the same encoders).
    /// The voice encoder's is named missing when none is there.
    pub fn encoder_files(dir: &Path) -> Result<(PathBuf, PathBuf)> {
        let first = |names: &[&str]| {
            names
                .iter()
                .map(|n| dir.join(n))
                .find(|p| p.is_file())
                .ok_or_else(|| Error::Checkpoint {
                    path: dir.join(names[0]).display().to_string(),
                    reason: format!(
                        "file not found (nor {}): cloning a voice needs the voice encoder and \
                         S3Gen of the hub repository",
                        names[1..].join(", ")
                    ),
                })
        };
        Ok((
            first(&["ve.safetensors", "ve.pt"])?,
            first(&[
                "s3gen.safetensors",
                "s3gen.pt",
                crate::turbo_tts::TURBO_S3GEN,
            ])?,
        ))
    }

    /// Loads the encoders of a model directory laid out as the hub repository: the voice
    /// encoder from `ve.safetensors` (or `ve.pt`), the S3 tokenizer (`tokenizer.*`) and
    /// CAMPPlus (`speaker_encoder.*`) from `s3gen.safetensors` (or `s3gen.pt`; see
    /// [`VoiceCloner::encoder_files`]), T3's prompt length from the sizes
    /// (`ferrovox-voice.json`'s `t3`, `voice_encoder`, `s3tokenizer`, `campplus` and `s3gen`
    /// sections where present, else the released ones).
    pub fn from_dir(dir: &Path, device: &Device) -> Result<Self> {
        Self::from_dir_as(dir, ReferenceRule::of_dir(dir), device)
    }

    /// [`Self::from_dir`] under `rule`; Turbo's rule takes T3's prompt length from Turbo's
    /// sizes (375 tokens) where the directory declares none.
    pub fn from_dir_as(dir: &Path, rule: ReferenceRule, device: &Device) -> Result<Self> {
        let (ve_file, s3gen_file) = Self::encoder_files(dir)?;
        let sizes = if rule == ReferenceRule::TURBO {
            crate::tts::Sizes::with_t3(dir, Some(crate::t3::T3Config::turbo()))?
        } else {
            crate::tts::Sizes::of_dir(dir)?
        };
        let ve = &sizes.voice_encoder;
        if ve.speaker_embed_size != sizes.t3.speaker_embed_size {
            return Err(Error::Config(format!(
                "{}: the voice encoder's embedding has {} values, T3 takes {}",
                dir.display(),
                ve.speaker_embed_size,
                sizes.t3.speaker_embed_size
            )));
        }
        if sizes.campplus.embedding_size != sizes.s3gen.flow.spk_embed_dim {
            return Err(Error::Config(format!(
                "{}: CAMPPlus's x-vector has {} values, S3Gen's flow takes {}",
                dir.display(),
                sizes.campplus.embedding_size,
                sizes.s3gen.flow.spk_embed_dim
            )));
        }
        let voice_encoder = VoiceEncoder::load(&ve_file, ve, device)?;
        let (tokenizer, speaker_encoder) =
            load_s3gen_encoders(&s3gen_file, &sizes.s3tokenizer, &sizes.campplus, device)?;
        Ok(Self::new(
            voice_encoder,
            tokenizer,
            speaker_encoder,
            sizes.t3.speech_cond_prompt_len,
        )?
        .with_rule(rule))
    }

    pub fn voice_encoder(&self) -> &VoiceEncoder {
        &self.voice_encoder
    }

    pub fn tokenizer(&self) -> &S3Tokenizer {
        &self.tokenizer
    }

    pub fn speaker_encoder(&self) -> &CampPlus {
        &self.speaker_encoder
    }

    /// The most prompt tokens T3 gets (`speech_cond_prompt_len`).
    pub fn speech_cond_prompt_len(&self) -> usize {
        self.prompt_len
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `prepare_conditionals` on a clip decoded and checked by ferrovox-audio: the clip at
    /// 24 kHz and 16 kHz, each resampled from the clip's source rate with
    /// [`ferrovox_audio::resample`], then [`Self::conditionals`]. The clip's silent margins are
    /// already trimmed (upstream keeps them; its voice encoder trims its own copy).
    pub fn from_clip(&self, clip: &ReferenceClip, exaggeration: f32) -> Result<Conditionals> {
        let at = |rate: u32| -> Result<Vec<f32>> {
            if clip.sample_rate == rate {
                return Ok(clip.samples.clone());
            }
            clip.at_rate(rate)
                .map(|c| c.samples)
                .map_err(|e| Error::Input(format!("the reference clip at {rate} Hz: {e}")))
        };
        let (clip_24k, clip_16k) = (at(S3GEN_RATE)?, at(ENCODER_RATE)?);
        self.conditionals(&clip_24k, &clip_16k, exaggeration)
    }

    /// `prepare_conditionals` given the clip at 24 kHz and at 16 kHz (upstream's `librosa.load`
    /// and `librosa.resample` outputs); `embed_ref`'s own 16 kHz copy of the first 10 s is made
    /// with [`ferrovox_audio::resample`].
    pub fn conditionals(
        &self,
        clip_24k: &[f32],
        clip_16k: &[f32],
        exaggeration: f32,
    ) -> Result<Conditionals> {
        self.conditionals_with(
            &ReferenceAudio {
                clip_24k,
                clip_16k,
                s3gen_16k: None,
            },
            exaggeration,
        )
    }

    /// `prepare_conditionals` with each signal given: S3Gen's part from the 24 kHz clip's first
    /// 10 s ([`Self::speaker_reference`]), T3's from the 16 kHz clip ([`Self::t3_cond`]).
    /// Audio too short, silent or non-finite, or two signals of different durations, is an
    /// [`Error::Input`].
    pub fn conditionals_with(
        &self,
        audio: &ReferenceAudio<'_>,
        exaggeration: f32,
    ) -> Result<Conditionals> {
        check_exaggeration(exaggeration)?;
        check_clip("the 24 kHz reference clip", audio.clip_24k, S3GEN_RATE)?;
        check_clip("the 16 kHz reference clip", audio.clip_16k, ENCODER_RATE)?;
        check_same_clip(
            ("24 kHz clip", audio.clip_24k, S3GEN_RATE),
            ("16 kHz clip", audio.clip_16k, ENCODER_RATE),
        )?;
        let seconds = audio.clip_24k.len() as f64 / S3GEN_RATE as f64;
        if seconds <= self.rule.longer_than_s {
            return Err(Error::Input(format!(
                "the reference clip is {seconds:.2} s long; this model needs more than {} s",
                self.rule.longer_than_s
            )));
        }
        // Upstream scales the 24 kHz clip and resamples the result; resampling is linear, so
        // the same gain on each copy.
        let gain = self.rule.gain(audio.clip_24k);
        let scale = |w: &[f32]| w.iter().map(|&s| s * gain).collect::<Vec<f32>>();
        let scaled;
        let audio = if gain == 1.0 {
            *audio
        } else {
            scaled = (
                scale(audio.clip_24k),
                scale(audio.clip_16k),
                audio.s3gen_16k.map(scale),
            );
            ReferenceAudio {
                clip_24k: &scaled.0,
                clip_16k: &scaled.1,
                s3gen_16k: scaled.2.as_deref(),
            }
        };
        let s3gen_24k = head(audio.clip_24k, DEC_COND_LEN);
        let s3gen_16k = audio.s3gen_16k.map(|w| head(w, DEC_COND_LEN_16K));
        if let Some(w) = s3gen_16k {
            check_same_clip(
                ("first 10 s at 24 kHz", s3gen_24k, S3GEN_RATE),
                ("embed_ref's 16 kHz copy", w, ENCODER_RATE),
            )?;
        }
        let gen = self.speaker_reference(s3gen_24k, s3gen_16k)?;
        let t3 = self.t3_cond(audio.clip_16k, exaggeration)?;
        Ok(Conditionals { t3, gen })
    }

    /// `S3Token2Mel.embed_ref(ref_24k, 24000)`: the prompt mel of the 24 kHz clip as it is
    /// (`prepare_conditionals` cuts it to 10 s first), the x-vector and the tokens of its
    /// 16 kHz copy (`ref_16k`, else resampled here), the tokens then cut to half the mel's
    /// frames when there are more.
    pub fn speaker_reference(
        &self,
        ref_24k: &[f32],
        ref_16k: Option<&[f32]>,
    ) -> Result<SpeakerReference> {
        check_clip("the 24 kHz reference clip", ref_24k, S3GEN_RATE)?;
        let resampled;
        let ref_16k = match ref_16k {
            Some(w) => w,
            None => {
                resampled = ferrovox_audio::resample(ref_24k, S3GEN_RATE, ENCODER_RATE)
                    .map_err(|e| Error::Input(format!("resampling the reference: {e}")))?;
                &resampled
            }
        };
        check_clip("the 16 kHz reference clip", ref_16k, ENCODER_RATE)?;
        let mel = self
            .mel
            .compute(ref_24k)
            .map_err(|e| Error::Input(format!("the reference's mel: {e}")))?;
        // mel-major [80, frames] to the flow's time-major [1, frames, 80].
        let prompt_feat = Tensor::from_vec(mel.values, (mel.n_mels, mel.frames), &self.device)?
            .t()?
            .contiguous()?
            .unsqueeze(0)?;
        let xvector = self
            .speaker_encoder
            .embed(ref_16k)?
            .to_device(&self.device)?;
        let (mut tokens, _) = self.tokenizer.tokenize(&[ref_16k], None)?;
        let mut prompt_tokens = tokens.swap_remove(0);
        // Upstream slices `[:frames // 2]` only when the lengths disagree; a slice past the end
        // keeps everything.
        prompt_tokens.truncate(mel.frames / 2);
        Ok(SpeakerReference {
            prompt_tokens,
            prompt_feat,
            xvector,
        })
    }

    /// T3's half of `prepare_conditionals` from the whole 16 kHz clip: the tokens of its first
    /// 6 s (15 s under Turbo's rule; at most `speech_cond_prompt_len`), the voice encoder's speaker embedding of all of
    /// it, and `exaggeration` as `emotion_adv`.
    pub fn t3_cond(&self, clip_16k: &[f32], exaggeration: f32) -> Result<T3Cond> {
        check_exaggeration(exaggeration)?;
        check_clip("the 16 kHz reference clip", clip_16k, ENCODER_RATE)?;
        let (mut tokens, _) = self.tokenizer.tokenize(
            &[head(
                clip_16k,
                self.rule.t3_prompt_s * ENCODER_RATE as usize,
            )],
            Some(self.prompt_len),
        )?;
        let tokens = tokens.swap_remove(0);
        let n = tokens.len();
        let cond_prompt_speech_tokens = Tensor::from_vec(tokens, (1, n), &self.device)?;
        let speaker_emb = self
            .voice_encoder
            .speaker_emb(clip_16k)?
            .to_dtype(DType::F32)?
            .to_device(&self.device)?;
        Ok(T3Cond {
            speaker_emb,
            cond_prompt_speech_tokens: Some(cond_prompt_speech_tokens),
            emotion_adv: exaggeration,
        })
    }
}

/// Loads the S3 tokenizer (`tokenizer.*`) and CAMPPlus (`speaker_encoder.*`) from an
/// `s3gen.safetensors`. Under each prefix a missing tensor, or one neither model has (another
/// model's file), is an [`Error::Checkpoint`] naming it; the tokenizer's computed buffers and
/// the BatchNorms' `num_batches_tracked` counters may be absent. Other prefixes (`flow.*`,
/// `mel2wav.*`) are S3Gen's and not read.
pub fn load_s3gen_encoders(
    path: &Path,
    tokenizer: &S3TokenizerConfig,
    campplus: &CampPlusConfig,
    device: &Device,
) -> Result<(S3Tokenizer, CampPlus)> {
    let checkpoint = crate::checkpoint::error(path);
    let names = crate::checkpoint::names_in(path).map_err(&checkpoint)?;
    let tokenizer_keys = S3Tokenizer::expected_keys(tokenizer);
    crate::checkpoint::check_key_set(
        &names,
        &format!("{}.", s3tokenizer::CHECKPOINT_PREFIX),
        &tokenizer_keys,
        |k| s3tokenizer::BUFFER_KEYS.contains(&k),
        "the S3 tokenizer",
    )
    .map_err(&checkpoint)?;
    crate::checkpoint::check_key_set(
        &names,
        &format!("{}.", campplus::PREFIX),
        &CampPlus::expected_keys(),
        |k| k.ends_with(".num_batches_tracked"),
        "CAMPPlus",
    )
    .map_err(&checkpoint)?;
    crate::checkpoint::build_mapped(path, DType::F32, device, |vb| {
        Ok((
            S3Tokenizer::new(tokenizer, vb.pp(s3tokenizer::CHECKPOINT_PREFIX))?,
            CampPlus::new(campplus, vb.pp(campplus::PREFIX))?,
        ))
    })
}

/// The first `n` samples (all of them when shorter), as upstream's `wav[:n]`.
fn head(samples: &[f32], n: usize) -> &[f32] {
    &samples[..n.min(samples.len())]
}

fn check_exaggeration(exaggeration: f32) -> Result<()> {
    if !(exaggeration.is_finite() && (0.0..=2.0).contains(&exaggeration)) {
        return Err(Error::Input(format!(
            "exaggeration: {exaggeration} is outside 0..=2"
        )));
    }
    Ok(())
}

/// Refuses audio with no voice to clone: empty, non-finite, shorter than S3Gen's
/// [`MIN_REFERENCE_SECONDS`], or silent.
fn check_clip(what: &str, samples: &[f32], rate: u32) -> Result<()> {
    if let Some(i) = samples.iter().position(|x| !x.is_finite()) {
        return Err(Error::Input(format!(
            "{what} has a non-finite sample ({}) at {i}",
            samples[i]
        )));
    }
    let seconds = samples.len() as f64 / rate as f64;
    if seconds < MIN_REFERENCE_SECONDS {
        return Err(Error::Input(format!(
            "{what} is {seconds:.3} s long; at least {MIN_REFERENCE_SECONDS} s is needed \
             (several seconds of speech clone a voice)"
        )));
    }
    let rms = (samples
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        / samples.len() as f64)
        .sqrt() as f32;
    if rms < SILENCE_RMS {
        return Err(Error::Input(format!("{what} is silent (rms {rms:.1e})")));
    }
    Ok(())
}

/// Refuses two signals that cannot be the same clip at two rates (their durations differ).
fn check_same_clip(a: (&str, &[f32], u32), b: (&str, &[f32], u32)) -> Result<()> {
    let (da, db) = (a.1.len() as f64 / a.2 as f64, b.1.len() as f64 / b.2 as f64);
    if (da - db).abs() > DURATION_SLACK_S {
        return Err(Error::Input(format!(
            "the {} lasts {da:.3} s but the {} {db:.3} s: they must be the same audio at \
             {} Hz and {} Hz",
            a.0, b.0, a.2, b.2
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_python_slices() {
        let x = [1.0f32, 2.0, 3.0];
        assert_eq!(head(&x, 2), &[1.0, 2.0]);
        assert_eq!(head(&x, 10), &x);
    }
}
