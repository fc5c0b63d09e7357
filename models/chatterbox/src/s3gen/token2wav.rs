//! Mirrors `S3Token2Wav.inference` (`s3gen/s3gen.py`): speech tokens + a speaker reference →
//! flow (mel) → HiFT (audio), with upstream's fade-in over the first 40 ms.

use std::ops::Range;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use ferrovox_device::device_work;
use rayon::prelude::*;
use serde::Deserialize;

use crate::s3gen::encoder::length_mask;
use crate::s3gen::flow_batch::FlowBatcher;
use crate::s3gen::hift::{HiftConfig, HiftGenerator, SourceNoise};
use crate::s3gen::{Flow, FlowConfig, SeededSourceNoise};
use crate::{Error, Result};

/// Output sample rate.
pub const SAMPLE_RATE: u32 = 24_000;

/// What `S3Gen().state_dict()` holds: synthesis (`flow`, `mel2wav`) and, for cloning, the
/// S3 tokenizer (`tokenizer`) and CAMPPlus (`speaker_encoder`).
pub const CHECKPOINT_PARTS: [&str; 4] = ["flow.", "mel2wav.", "tokenizer.", "speaker_encoder."];

/// Both halves' configs; the defaults are the released model (upstream hard-codes them).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct S3GenConfig {
    /// Tokens → mel.
    pub flow: FlowConfig,
    /// Mel → audio.
    pub hift: HiftConfig,
}

impl S3GenConfig {
    /// Turbo's S3Gen (`S3Gen(meanflow=True)`, `s3gen_meanflow.safetensors`, solved in
    /// `tts_turbo.py`'s 2 steps).
    pub fn turbo() -> Self {
        let mut cfg = Self::default();
        cfg.flow.estimator.meanflow = true;
        cfg.flow.cfm.n_timesteps = 2;
        cfg
    }
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

/// Longest reference upstream conditions on (`prepare_conditionals` keeps 10 s).
pub const MAX_REFERENCE_SECONDS: f64 = 10.0;
/// Shortest reference accepted: 0.2 s is about one syllable (10 mel frames, 5 tokens); below
/// that there is no voice to condition on. Upstream recommends several seconds.
pub const MIN_REFERENCE_SECONDS: f64 = 0.2;

impl SpeakerReference {
    /// A reference from its audio at any sample rate (resampled to 24 kHz, cut to 10 s as
    /// upstream does), its S3 tokens and its x-vector `[1, 192]`. Tokens beyond the audio's
    /// length (2 mel frames each) are dropped, as upstream's `embed_ref` does. Audio that is
    /// too short or silent is refused.
    pub fn from_audio(
        prompt_tokens: &[u32],
        samples: &[f32],
        sample_rate: u32,
        xvector: Tensor,
    ) -> Result<Self> {
        let audio = ferrovox_audio::resample(samples, sample_rate, SAMPLE_RATE)
            .map_err(|e| Error::Input(format!("reference audio: {e}")))?;
        let seconds = audio.len() as f64 / SAMPLE_RATE as f64;
        if seconds < MIN_REFERENCE_SECONDS {
            return Err(Error::Input(format!(
                "reference audio is {seconds:.2} s long; at least {MIN_REFERENCE_SECONDS} s is needed"
            )));
        }
        let audio = &audio[..audio
            .len()
            .min((MAX_REFERENCE_SECONDS * SAMPLE_RATE as f64) as usize)];
        let rms = (audio.iter().map(|v| v * v).sum::<f32>() / audio.len() as f32).sqrt();
        if rms < 1e-4 || !rms.is_finite() {
            return Err(Error::Input(format!(
                "reference audio is silent or invalid (rms {rms:.1e})"
            )));
        }
        let mel = ferrovox_audio::MelSpectrogram::s3gen()
            .and_then(|m| m.compute(audio))
            .map_err(|e| Error::Input(format!("reference audio: {e}")))?;
        // LogMel is mel-major [80, frames]; the flow takes time-major [1, frames, 80].
        let prompt_feat = Tensor::from_vec(mel.values, (mel.n_mels, mel.frames), xvector.device())?
            .t()?
            .contiguous()?
            .unsqueeze(0)?;
        let xvector = match xvector.dims() {
            [n] => xvector.reshape((1, *n))?,
            [1, _] => xvector,
            dims => {
                return Err(Error::Input(format!(
                    "x-vector of shape {dims:?}, expected [1, 192]"
                )))
            }
        };
        let keep = prompt_tokens.len().min(mel.frames / 2);
        Ok(Self {
            prompt_tokens: prompt_tokens[..keep].to_vec(),
            prompt_feat,
            xvector,
        })
    }
}

/// The random draws of one synthesis: the CFM starting noise and HiFT's source draws.
#[allow(missing_debug_implementations)] // holds a `dyn SourceNoise`
pub struct S3GenNoise<'a> {
    /// `[1, 80, mel frames]` standard normal, prompt frames included ([`S3Gen::noise_frames`]).
    pub cfm: Tensor,
    /// The sine source's phase and noise.
    pub source: &'a mut dyn SourceNoise,
}

/// Every random draw of one utterance, addressed by position: the CFM starting noise of mel
/// frame `i` (prompt frames included) and the source's sine noise of target frame `j` do not
/// depend on how long the utterance is or how it is cut into pieces. That is what lets
/// [`crate::s3gen::S3GenStream`], which sees the tokens in chunks, start every frame from the same
/// noise as [`S3Gen::synthesize`], and a batch item draw what it draws alone.
#[derive(Debug, Clone)]
pub enum UtteranceNoise {
    /// Drawn from a seed: SplitMix64 keyed by (seed, kind, frame), Box-Muller normals.
    Seeded(u64),
    /// Recorded draws covering a whole utterance (upstream's `noise.*` fixtures):
    /// `cfm` `[1, 80, frames]` with the prompt frames, `phase_rand` `[1, H, 1]` uniform,
    /// `sine` `[1, H, 480 · target frames]`. A request beyond them is an [`Error::Input`].
    Recorded {
        cfm: Tensor,
        phase_rand: Tensor,
        sine: Tensor,
    },
}

/// Keys of the seeded draws, one per kind, so the kinds never share a generator.
const CFM_DRAWS: u64 = 1;
const PHASE_DRAWS: u64 = 2;
const SINE_DRAWS: u64 = 3;

impl UtteranceNoise {
    /// CFM starting noise `[1, bins, frames.len()]` for flow frames `frames`.
    pub fn cfm(&self, bins: usize, frames: Range<usize>, device: &Device) -> Result<Tensor> {
        match self {
            Self::Seeded(seed) => {
                // Frame-major draws, then one transpose to [1, bins, frames].
                let values: Vec<f32> = frames
                    .clone()
                    .flat_map(|i| {
                        SeededSourceNoise::keyed(*seed, CFM_DRAWS, i as u64).normals(bins)
                    })
                    .collect();
                Ok(Tensor::from_vec(values, (1, frames.len(), bins), device)?
                    .transpose(1, 2)?
                    .contiguous()?)
            }
            Self::Recorded { cfm, .. } => recorded_range(cfm, &[1, bins], frames, "CFM noise")?
                .to_device(device)
                .map_err(Into::into),
        }
    }

    /// The source's initial-phase draw `[1, harmonics, 1]`, uniform in `[0, 1)`.
    pub fn phase_uniform(&self, harmonics: usize, device: &Device) -> Result<Tensor> {
        match self {
            Self::Seeded(seed) => Ok(Tensor::from_vec(
                SeededSourceNoise::keyed(*seed, PHASE_DRAWS, 0).uniforms(harmonics),
                (1, harmonics, 1),
                device,
            )?),
            Self::Recorded { phase_rand, .. } => {
                if phase_rand.dims() != [1, harmonics, 1] {
                    return Err(Error::Input(format!(
                        "recorded phase draw has shape {:?}, expected [1, {harmonics}, 1]",
                        phase_rand.dims()
                    )));
                }
                Ok(phase_rand.to_device(device)?)
            }
        }
    }

    /// The source's sine noise `[1, harmonics, samples_per_frame · frames.len()]` for target
    /// (audio) frames `frames`.
    pub fn sine(
        &self,
        harmonics: usize,
        samples_per_frame: usize,
        frames: Range<usize>,
        device: &Device,
    ) -> Result<Tensor> {
        match self {
            Self::Seeded(seed) => {
                // One [harmonics, samples_per_frame] block per frame, concatenated in time. Each
                // frame's generator is keyed by its position, so frames are drawn in parallel
                // with the same values as in order (4320 Box-Muller normals a frame: 10 s of
                // audio is 2.2 M draws, tens of milliseconds on one core).
                let n = frames.len();
                let blocks: Vec<f32> = frames
                    .clone()
                    .into_par_iter()
                    .map(|j| {
                        SeededSourceNoise::keyed(*seed, SINE_DRAWS, j as u64)
                            .normals(harmonics * samples_per_frame)
                    })
                    .collect::<Vec<_>>()
                    .concat();
                Ok(
                    Tensor::from_vec(blocks, (n, harmonics, samples_per_frame), device)?
                        .transpose(0, 1)?
                        .reshape((1, harmonics, n * samples_per_frame))?,
                )
            }
            Self::Recorded { sine, .. } => {
                let samples = frames.start * samples_per_frame..frames.end * samples_per_frame;
                Ok(
                    recorded_range(sine, &[1, harmonics], samples, "sine noise")?
                        .to_device(device)?,
                )
            }
        }
    }

    /// A [`SourceNoise`] for one HiFT call over target frames `first_frame..`, so a one-shot
    /// vocoder call draws what the stream draws.
    pub fn source_from(
        &self,
        first_frame: usize,
        samples_per_frame: usize,
    ) -> FrameSourceNoise<'_> {
        FrameSourceNoise {
            noise: self,
            first_frame,
            samples_per_frame,
        }
    }
}

/// `tensor[.., range]` along the last axis, checking the leading dims and the length.
fn recorded_range(
    tensor: &Tensor,
    lead: &[usize],
    range: Range<usize>,
    what: &str,
) -> Result<Tensor> {
    let dims = tensor.dims();
    if dims.len() != lead.len() + 1 || dims[..lead.len()] != *lead || range.end > dims[lead.len()] {
        return Err(Error::Input(format!(
            "recorded {what} has shape {dims:?}; positions {range:?} of {lead:?} were asked for"
        )));
    }
    Ok(tensor.narrow(lead.len(), range.start, range.len())?)
}

/// [`UtteranceNoise`] seen as HiFT's [`SourceNoise`] for a call starting at target frame
/// `first_frame` (batch 1).
#[derive(Debug)]
pub struct FrameSourceNoise<'a> {
    noise: &'a UtteranceNoise,
    first_frame: usize,
    samples_per_frame: usize,
}

impl SourceNoise for FrameSourceNoise<'_> {
    fn phase_uniform(&mut self, batch: usize, harmonics: usize, device: &Device) -> Result<Tensor> {
        if batch != 1 {
            return Err(Error::Input(format!(
                "utterance noise for a batch of {batch}"
            )));
        }
        self.noise.phase_uniform(harmonics, device)
    }

    fn sine_normal(
        &mut self,
        batch: usize,
        harmonics: usize,
        samples: usize,
        device: &Device,
    ) -> Result<Tensor> {
        let spf = self.samples_per_frame;
        let frames = samples / spf;
        if batch != 1 || frames * spf != samples {
            return Err(Error::Input(format!(
                "utterance noise for {batch} x {samples} samples (whole frames of {spf}, batch 1)"
            )));
        }
        let first = self.first_frame;
        self.noise
            .sine(harmonics, spf, first..first + frames, device)
    }
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

/// S3Gen: the flow and the vocoder. Its calls run inside sections of device work
/// ([`device_work`]), so threads sharing one S3Gen stay out of each other's CUDA graph
/// captures, and one thread at a time goes through the flow and through the vocoder
/// ([`ferrovox_device::Serial`]), so two threads' kernels never interleave inside either. (Two
/// threads decoding at once gave one of them wrong audio on the H100; whether this lock cures
/// it has not been run on a GPU yet.)
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

    /// The flow's large products on bf16-rounded inputs with f32 sums where the CPU has AVX-512
    /// BF16 and `on` ([`Flow::bf16_products`]); HiFT stays f32. Off after loading.
    pub fn bf16_products(&mut self, on: bool) -> Result<()> {
        self.flow.bf16_products(on)
    }

    /// Loads the released `s3gen.safetensors` (full size) onto `device`; a missing or
    /// misshapen tensor names the file and the key.
    pub fn load(path: &Path, cfg: &S3GenConfig, device: &Device) -> Result<Self> {
        let checkpoint = crate::checkpoint::error(path);
        let names = crate::checkpoint::names_in(path).map_err(&checkpoint)?;
        let foreign: Vec<&String> = names
            .iter()
            .filter(|n| !CHECKPOINT_PARTS.iter().any(|p| n.starts_with(p)))
            .collect();
        if !foreign.is_empty() {
            return Err(checkpoint(format!(
                "{} tensors outside an S3Gen checkpoint's {} (is this another model's file?), e.g. {}",
                foreign.len(),
                CHECKPOINT_PARTS.join(", "),
                foreign
                    .iter()
                    .take(3)
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        crate::checkpoint::build_mapped(path, DType::F32, device, |vb| Self::new(cfg, vb))
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
        device_work(|| {
            let mel = self.mel(tokens, reference, &noise.cfm)?;
            let audio = self.hift.inference(&mel, None, noise.source)?.audio;
            self.fade_in(&audio)
        })
    }

    /// Tokens to audio samples, every draw from `seed` ([`UtteranceNoise::Seeded`]).
    pub fn synthesize(
        &self,
        tokens: &[u32],
        reference: &SpeakerReference,
        seed: u64,
    ) -> Result<Vec<f32>> {
        self.synthesize_with(tokens, reference, &UtteranceNoise::Seeded(seed))
    }

    /// Tokens to audio samples with the draws of `noise`.
    pub fn synthesize_with(
        &self,
        tokens: &[u32],
        reference: &SpeakerReference,
        noise: &UtteranceNoise,
    ) -> Result<Vec<f32>> {
        self.vocode(&self.mel_drawn(tokens, reference, noise)?, noise)
    }

    /// [`Self::mel`] with the CFM start drawn from `noise` for every flow frame (prompt
    /// frames included).
    pub fn mel_drawn(
        &self,
        tokens: &[u32],
        reference: &SpeakerReference,
        noise: &UtteranceNoise,
    ) -> Result<Tensor> {
        let frames = self.noise_frames(reference, tokens.len());
        let bins = self.flow.config().output_size;
        let cfm = noise.cfm(bins, 0..frames, reference.prompt_feat.device())?;
        self.mel(tokens, reference, &cfm)
    }

    /// [`Self::synthesize`] with the flow run through `batcher`, batched with the utterances
    /// other threads decode at the same time (equal up to f32 summation order).
    pub fn synthesize_batched(
        &self,
        tokens: &[u32],
        reference: &SpeakerReference,
        seed: u64,
        batcher: &FlowBatcher,
    ) -> Result<Vec<f32>> {
        let noise = UtteranceNoise::Seeded(seed);
        self.vocode(&batcher.mel(self, tokens, reference, &noise)?, &noise)
    }

    /// HiFT over a whole utterance's mel with `noise`'s source draws, faded in.
    fn vocode(&self, mel: &Tensor, noise: &UtteranceNoise) -> Result<Vec<f32>> {
        device_work(|| {
            let spf = self.hift.config().samples_per_frame();
            let audio = self
                .hift
                .inference(mel, None, &mut noise.source_from(0, spf))?
                .audio;
            Ok(self.fade_in(&audio)?.squeeze(0)?.to_vec1::<f32>()?)
        })
    }

    /// Several utterances at once: the CFM solve (the bulk of the flow) runs them as one
    /// right-padded batch under length masks; the encoder and HiFT run per item. Item `i`
    /// draws `UtteranceNoise::Seeded(seed + i)` and equals
    /// `synthesize(tokens_i, reference_i, seed + i)` up to f32 summation order.
    pub fn synthesize_batch(
        &self,
        items: &[(&[u32], &SpeakerReference)],
        seed: u64,
    ) -> Result<Vec<Vec<f32>>> {
        let noises: Vec<UtteranceNoise> = (0..items.len())
            .map(|i| UtteranceNoise::Seeded(seed.wrapping_add(i as u64)))
            .collect();
        let mels = self.mel_batch(items, &noises)?;
        mels.iter()
            .zip(&noises)
            .map(|(mel, noise)| self.vocode(mel, noise))
            .collect()
    }

    /// The flow for several utterances, the CFM solve as one padded batch (see
    /// [`Self::synthesize_batch`]): one mel `[1, 80, target frames]` per item.
    pub fn mel_batch(
        &self,
        items: &[(&[u32], &SpeakerReference)],
        noises: &[UtteranceNoise],
    ) -> Result<Vec<Tensor>> {
        self.flow.serial().run(|| self.mel_batch_now(items, noises))
    }

    fn mel_batch_now(
        &self,
        items: &[(&[u32], &SpeakerReference)],
        noises: &[UtteranceNoise],
    ) -> Result<Vec<Tensor>> {
        if items.is_empty() || items.len() != noises.len() {
            return Err(Error::Input(format!(
                "{} utterances with {} noises (at least one of each, as many)",
                items.len(),
                noises.len()
            )));
        }
        let flow = &self.flow;
        let bins = flow.config().output_size;
        // (all tokens, prompt frames, flow frames) per item.
        let mut shapes = Vec::with_capacity(items.len());
        for (i, (tokens, reference)) in items.iter().enumerate() {
            let prompt_frames = self
                .check_utterance(tokens, reference)
                .map_err(|e| Error::Input(format!("utterance {i}: {e}")))?;
            let all: Vec<u32> = reference
                .prompt_tokens
                .iter()
                .chain(tokens.iter())
                .copied()
                .collect();
            let frames = flow.mel_frames(reference.prompt_tokens.len(), tokens.len());
            shapes.push((all, prompt_frames, frames));
        }
        let max_frames = shapes.iter().map(|&(_, _, f)| f).max().unwrap_or(0);
        // The encoder runs per item: batched, its pre-lookahead conv would read the padded rows
        // after a short item's last tokens (upstream's quirk; it
        // moved those items' mels by up to 0.15), while upstream itself always runs B = 1.
        // It is a small part of the cost next to the 10 CFG-doubled estimator passes.
        let mut mus = Vec::with_capacity(items.len());
        for (all, _, frames) in &shapes {
            let ids = Tensor::from_vec(all.clone(), (1, all.len()), &Device::Cpu)?;
            let mu = flow.encode(&ids, &[all.len()])?.mu;
            mus.push(mu.pad_with_zeros(1, 0, max_frames - frames)?);
        }
        let (device, dtype) = (mus[0].device().clone(), mus[0].dtype());
        let mu = Tensor::cat(&mus, 0)?.transpose(1, 2)?.contiguous()?;
        let frame_counts: Vec<usize> = shapes.iter().map(|&(_, _, f)| f).collect();
        let mask = length_mask(&frame_counts, max_frames, &device)?
            .to_dtype(dtype)?
            .unsqueeze(1)?;
        let xvectors = items
            .iter()
            .map(|(_, r)| {
                r.xvector
                    .to_device(&device)?
                    .to_dtype(dtype)?
                    .reshape((1, ()))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let spks = flow.speaker_embedding(&Tensor::cat(&xvectors, 0)?)?;
        let mut conds = Vec::with_capacity(items.len());
        let mut starts = Vec::with_capacity(items.len());
        for ((_, reference), ((_, prompt_frames, frames), noise)) in
            items.iter().zip(shapes.iter().zip(noises))
        {
            let prompt = reference.prompt_feat.to_device(&device)?.to_dtype(dtype)?;
            let rest = Tensor::zeros((1, max_frames - prompt_frames, bins), dtype, &device)?;
            conds.push(Tensor::cat(&[prompt, rest], 1)?);
            // Padded frames start from zeros; the mask keeps them out of every valid frame.
            let start = noise.cfm(bins, 0..*frames, &device)?.to_dtype(dtype)?;
            starts.push(start.pad_with_zeros(2, 0, max_frames - frames)?);
        }
        let cond = Tensor::cat(&conds, 0)?.transpose(1, 2)?.contiguous()?;
        let start = Tensor::cat(&starts, 0)?;
        let mel = flow.decoder().forward(&start, &mu, &mask, &spks, &cond)?;
        shapes
            .iter()
            .enumerate()
            .map(|(i, &(_, prompt_frames, frames))| {
                Ok(mel
                    .narrow(0, i, 1)?
                    .narrow(2, prompt_frames, frames - prompt_frames)?)
            })
            .collect()
    }

    /// What [`Flow::inference`] refuses, checked before batching: no tokens, a token outside the
    /// vocabulary, a misshapen prompt mel or x-vector, a prompt mel longer than the tokens.
    /// Returns the prompt's mel frames.
    fn check_utterance(&self, tokens: &[u32], reference: &SpeakerReference) -> Result<usize> {
        let cfg = self.flow.config();
        let bins = cfg.output_size;
        if tokens.is_empty() {
            return Err(Error::Input("no speech tokens to synthesize".into()));
        }
        check_tokens(
            tokens.iter().chain(&reference.prompt_tokens),
            cfg.vocab_size,
        )?;
        let prompt_frames = match reference.prompt_feat.dims() {
            [1, n, w] if *w == bins => *n,
            dims => {
                return Err(Error::Input(format!(
                    "prompt mel of shape {dims:?}, expected [1, frames, {bins}]"
                )))
            }
        };
        let frames = self.noise_frames(reference, tokens.len());
        if prompt_frames >= frames {
            return Err(Error::Input(format!(
                "prompt mel has {prompt_frames} frames but the tokens give only {frames}"
            )));
        }
        if reference.xvector.elem_count() != cfg.spk_embed_dim {
            return Err(Error::Input(format!(
                "x-vector of shape {:?}, expected [1, {}]",
                reference.xvector.dims(),
                cfg.spk_embed_dim
            )));
        }
        Ok(prompt_frames)
    }

    /// Upstream's fade-in gain for the first samples (960 at 24 kHz).
    pub(crate) fn fade(&self) -> &[f32] {
        &self.fade
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

/// Refuses ids outside `0..vocab`, naming the first one (T3's SOS/EOS and padding must go first).
pub(crate) fn check_tokens<'a>(
    tokens: impl IntoIterator<Item = &'a u32>,
    vocab: usize,
) -> Result<()> {
    match tokens.into_iter().find(|&&id| id as usize >= vocab) {
        Some(bad) => Err(Error::Input(format!(
            "speech token {bad} is outside the vocabulary 0..{vocab} (T3's SOS/EOS and padding \
             must be removed first)"
        ))),
        None => Ok(()),
    }
}
