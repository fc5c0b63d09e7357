//! No upstream counterpart (0.1.7's streaming path raises; this follows CosyVoice2's). Chunked
//! synthesis: speech tokens arrive in pieces (as T3 samples them) and audio comes out as soon
//! as it is final.
//!
//! Upstream 0.1.7 has no working streaming (`flow.inference(finalize=False)` raises before it returns), so
//! this follows CosyVoice2's streaming, which S3Gen derives from:
//! * the flow re-runs over prompt + every token so far on each push; the last
//!   `pre_lookahead_len · token_mel_ratio` mel frames lack their look-ahead tokens and stay
//!   provisional until more tokens come or the stream finishes;
//! * every flow frame starts its CFM solve from the noise of its position
//!   ([`UtteranceNoise`]), so a frame meets the same noise as in the one-shot run;
//! * the vocoder ([`VocoderStream`]) re-vocodes frames of left context, holds back the audio
//!   of the last frames until their right context exists (optionally crossfading it with the
//!   next estimate, as CosyVoice does), and carries the sine source's phase and committed
//!   samples so the excitation is the one-shot excitation, not a restarted one.
//!
//! The encoder and the U-Net attend over the whole sequence, so frames computed before the
//! later tokens exist differ from the one-shot frames; `tests/streaming.rs` measures by how much.

use candle_core::Tensor;

use crate::s3gen::flow_batch::{FlowBatcher, StreamTicket};
use crate::s3gen::hift::{HiftGenerator, SinePhase};
use crate::s3gen::token2wav::check_tokens;
use crate::s3gen::{S3Gen, SpeakerReference, UtteranceNoise};
use crate::{Error, Result};

/// How the vocoder overlaps consecutive calls, in mel frames (20 ms each).
///
/// HiFT is convolutional. Counting kernels, an audio sample depends on mel frames up to ~14.1
/// away through the filter path (conv_pre 3, the stage-0 resblocks 7.5, the rest ~3.6) and on
/// source samples up to ~14.4 frames away (the source branch's resblocks add 4.5); the source
/// itself is exact once committed (see [`VocoderStream`]), but the last F0-context frames of a
/// window are provisional. Less context trades accuracy at the joins for latency; the presets'
/// errors below are measured on the random-weight fixture (`tests/streaming.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VocoderContext {
    /// Frames before the first new one that are vocoded again as left context (costs compute,
    /// not latency).
    pub left_frames: usize,
    /// Final mel frames whose audio is held back until more mel arrives (right context; adds
    /// 20 ms of latency each).
    pub holdback_frames: usize,
    /// Frames of held-back audio crossfaded (raised cosine) into the next call's estimate of
    /// them; at most `holdback_frames`. Off by default: the held-back estimate always had less
    /// right context than the next one, so blending it in moved the joins further from the
    /// one-shot audio (and did not smooth them: the slope error grew too).
    pub crossfade_frames: usize,
}

impl VocoderContext {
    /// The whole receptive field on both sides (15 left, 14.4 + 5 F0 frames right): the
    /// joined audio equals one HiFT call over the same mel up to f32 rounding (measured
    /// 2.5e-6). Adds 400 ms of latency.
    pub const EXACT: Self = Self {
        left_frames: 15,
        holdback_frames: 20,
        crossfade_frames: 0,
    };

    /// The default: the full left context, 12 frames (240 ms) held back, hard joins. Measured
    /// 6e-3 max, 56 dB SNR against one HiFT call (8 frames: 0.14, 28 dB; 16: 1.3e-5).
    pub const BALANCED: Self = Self {
        left_frames: 15,
        holdback_frames: 12,
        crossfade_frames: 0,
    };

    /// CosyVoice2's overlap (`mel_cache_len = 8`): 8 frames of left context, the last 8
    /// frames' audio held back and crossfaded over a Hamming-like window. Measured 0.58 max,
    /// 11 dB SNR against one HiFT call; for comparison.
    pub const COSYVOICE: Self = Self {
        left_frames: 8,
        holdback_frames: 8,
        crossfade_frames: 8,
    };
}

impl Default for VocoderContext {
    fn default() -> Self {
        Self::BALANCED
    }
}

/// HiFT over mel frames that arrive in pieces. Frames are indexed from the utterance's first
/// target frame; the state says which frames' mel, source and audio exist.
#[derive(Debug)]
pub struct VocoderStream<'a> {
    hift: &'a HiftGenerator,
    noise: UtteranceNoise,
    context: VocoderContext,
    /// Upstream's fade-in gains for the first samples of the utterance.
    fade: Vec<f32>,
    /// Final mel `[1, bins, mel_end − mel_start]` (older frames are dropped once no call can
    /// need them as context).
    mel: Option<Tensor>,
    mel_start: usize,
    mel_end: usize,
    /// The committed excitation `[1, 1, 480 · (source_end − source_start)]`: samples whose F0
    /// had full context, reused verbatim by later calls (CosyVoice's `cache_source`).
    source: Option<Tensor>,
    source_start: usize,
    source_end: usize,
    /// The sine source's phase after frame `source_end − 1`.
    phase: SinePhase,
    /// Frames whose audio has been returned.
    emitted: usize,
    /// Audio the last call computed for the frames from `emitted` on, held back; the next call
    /// crossfades from it to its own estimate.
    tail: Vec<f32>,
}

impl<'a> VocoderStream<'a> {
    /// A stream over `hift` drawing from `noise` (target frame 0 is the utterance's first);
    /// `fade` is multiplied into the first samples of the utterance.
    pub fn new(
        hift: &'a HiftGenerator,
        noise: UtteranceNoise,
        context: VocoderContext,
        fade: Vec<f32>,
    ) -> Result<Self> {
        if context.crossfade_frames > context.holdback_frames {
            return Err(Error::Input(format!(
                "crossfade over {} frames needs as many held back, got {}",
                context.crossfade_frames, context.holdback_frames
            )));
        }
        let spf = hift.config().samples_per_frame();
        let phase = hift.start_source(1, &mut noise.source_from(0, spf))?;
        Ok(Self {
            hift,
            noise,
            context,
            fade,
            mel: None,
            mel_start: 0,
            mel_end: 0,
            source: None,
            source_start: 0,
            source_end: 0,
            phase,
            emitted: 0,
            tail: Vec::new(),
        })
    }

    /// Mel frames received so far.
    pub fn frames_received(&self) -> usize {
        self.mel_end
    }

    /// Frames whose audio has been returned (480 samples each).
    pub fn frames_emitted(&self) -> usize {
        self.emitted
    }

    /// Appends final mel frames `[1, bins, n]` and returns the audio that is final now.
    pub fn push(&mut self, mel: &Tensor) -> Result<Vec<f32>> {
        self.append(mel)?;
        let hift = self.hift;
        hift.serial().run(|| self.vocode(false))
    }

    /// The rest of the audio, every received frame vocoded.
    pub fn finish(mut self) -> Result<Vec<f32>> {
        let hift = self.hift;
        hift.serial().run(|| self.vocode(true))
    }

    fn append(&mut self, mel: &Tensor) -> Result<()> {
        let bins = self.hift.config().in_channels;
        let n = match mel.dims() {
            [1, b, n] if *b == bins => *n,
            dims => {
                return Err(Error::Input(format!(
                    "mel of shape {dims:?}, expected [1, {bins}, frames]"
                )))
            }
        };
        if n == 0 {
            return Ok(());
        }
        self.mel = Some(match self.mel.take() {
            Some(old) => Tensor::cat(&[&old, mel], 2)?,
            None => mel.clone(),
        });
        self.mel_end += n;
        Ok(())
    }

    /// The earliest frame a call can start its window at: left context before the first frame
    /// to emit, and the F0 predictor's context before the first frame without a source.
    fn window_start(&self) -> usize {
        let f0_context = self.hift.f0_predictor().context_frames();
        self.emitted
            .saturating_sub(self.context.left_frames)
            .min(self.source_end.saturating_sub(f0_context))
    }

    /// Vocodes the window `[window_start, mel_end)` and returns the audio of the frames that
    /// are final: all of them when `last`, else all but the held-back ones.
    fn vocode(&mut self, last: bool) -> Result<Vec<f32>> {
        let end = if last {
            self.mel_end
        } else {
            self.mel_end.saturating_sub(self.context.holdback_frames)
        };
        let Some(all_mel) = self.mel.as_ref().filter(|_| end > self.emitted) else {
            return Ok(Vec::new());
        };
        let hift = self.hift;
        let spf = hift.config().samples_per_frame();
        let harmonics = hift.config().nb_harmonics + 1;
        let f0_context = hift.f0_predictor().context_frames();
        let (start, stop) = (self.window_start(), self.mel_end);
        let mel = all_mel.narrow(2, start - self.mel_start, stop - start)?;
        let device = mel.device().clone();
        let f0 = hift.predict_f0(&mel)?;

        // The source for frames not yet committed. F0 of a frame is exact once it has its
        // predictor's context on both sides (the window start gives the left); those samples
        // are committed with the phase carried on, the rest is provisional for this call only.
        let from = self.source_end;
        let commit_to = if last {
            stop
        } else {
            stop.saturating_sub(f0_context).max(from)
        };
        let mut pieces = Vec::with_capacity(3);
        if let Some(cached) = self.source.as_ref().filter(|_| from > start) {
            pieces.push(cached.narrow(
                2,
                (start - self.source_start) * spf,
                (from - start) * spf,
            )?);
        }
        let mut committed = None;
        if commit_to > from {
            let normal = self.noise.sine(harmonics, spf, from..commit_to, &device)?;
            let f0_new = f0.narrow(1, from - start, commit_to - from)?;
            let fresh = hift.source_continued(&f0_new, &normal, &mut self.phase)?;
            pieces.push(fresh.clone());
            committed = Some(fresh);
        }
        if stop > commit_to {
            let normal = self.noise.sine(harmonics, spf, commit_to..stop, &device)?;
            let f0_new = f0.narrow(1, commit_to - start, stop - commit_to)?;
            let mut phase = self.phase.clone();
            pieces.push(hift.source_continued(&f0_new, &normal, &mut phase)?);
        }
        let source = Tensor::cat(&pieces, 2)?;
        let audio = hift.decode(&mel, &source)?.squeeze(0)?.to_vec1::<f32>()?;

        if let Some(fresh) = committed {
            self.source = Some(match self.source.take() {
                Some(old) => Tensor::cat(&[&old, &fresh], 2)?,
                None => fresh,
            });
            self.source_end = commit_to;
        }

        // Emit [emitted, end), crossfading from the held-back estimate.
        let at = |frame: usize| (frame - start) * spf;
        let mut out = audio[at(self.emitted)..at(end)].to_vec();
        let ramp = crossfade_ramp(self.tail.len());
        let blended = out.len().min(self.tail.len());
        for (i, sample) in out[..blended].iter_mut().enumerate() {
            *sample = self.tail[i] * (1.0 - ramp[i]) + *sample * ramp[i];
        }
        // The next tail: this call's audio for the frames after `end`, continuing any part of
        // the old crossfade that lies there so the two never jump apart.
        let keep = if last {
            0
        } else {
            (stop - end).min(self.context.crossfade_frames) * spf
        };
        let mut tail = audio[at(end)..at(end) + keep].to_vec();
        for (k, sample) in tail.iter_mut().enumerate() {
            let i = blended + k;
            if i < self.tail.len() {
                *sample = self.tail[i] * (1.0 - ramp[i]) + *sample * ramp[i];
            }
        }
        self.tail = tail;

        let first_sample = self.emitted * spf;
        for (sample, gain) in out.iter_mut().zip(self.fade.iter().skip(first_sample)) {
            *sample *= gain;
        }
        self.emitted = end;
        self.drop_unneeded()?;
        Ok(out)
    }

    /// Drops mel and source frames before any future window.
    fn drop_unneeded(&mut self) -> Result<()> {
        let spf = self.hift.config().samples_per_frame();
        let keep_from = self.window_start();
        if let Some(mel) = self.mel.take() {
            let drop = keep_from - self.mel_start;
            self.mel = Some(mel.narrow(2, drop, self.mel_end - keep_from)?);
            self.mel_start = keep_from;
        }
        if let Some(source) = self.source.take() {
            let drop = keep_from - self.source_start;
            self.source =
                Some(source.narrow(2, drop * spf, (self.source_end - keep_from) * spf)?);
            self.source_start = keep_from;
        }
        Ok(())
    }
}

/// Weight of the newer estimate over `n` samples of a crossfade: a raised cosine from ~0 to ~1
/// (Hann half, sampled at the midpoints so neither end is a hard 0 or 1).
fn crossfade_ramp(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = std::f64::consts::PI * (i as f64 + 0.5) / n as f64;
            (0.5 - 0.5 * x.cos()) as f32
        })
        .collect()
}

/// One utterance synthesized from tokens that arrive in chunks: [`Self::push`] returns the
/// audio that is final so far, [`Self::finish`] the rest. Pushing after the end cannot happen:
/// `finish` consumes the stream.
///
/// Each push re-runs the flow over prompt + all tokens so far (quadratic in the utterance's
/// length, as CosyVoice2 without its flow cache): the encoder and U-Net attend over the whole
/// sequence, so there is no exact incremental state to carry, only the noise.
#[derive(Debug)]
pub struct S3GenStream<'a> {
    model: &'a S3Gen,
    reference: SpeakerReference,
    noise: UtteranceNoise,
    tokens: Vec<u32>,
    /// Target mel frames handed to the vocoder (final).
    mel_final: usize,
    /// The latest flow run: how many tokens it saw and its target mel, whose frames from
    /// `mel_final` on are provisional; `finish` reuses it when no token came since.
    last_run: Option<(usize, Tensor)>,
    vocoder: VocoderStream<'a>,
    /// Where the flow runs: batched with other streams' (registered while the stream lasts),
    /// or here (`None`).
    batcher: Option<(&'a FlowBatcher, StreamTicket<'a>)>,
}

impl<'a> S3GenStream<'a> {
    /// A stream for `reference`'s voice drawing from `noise`, with the default vocoder overlap.
    pub fn new(
        model: &'a S3Gen,
        reference: &SpeakerReference,
        noise: UtteranceNoise,
    ) -> Result<Self> {
        Self::with_context(model, reference, noise, VocoderContext::default())
    }

    /// [`Self::new`] with the vocoder overlap given.
    pub fn with_context(
        model: &'a S3Gen,
        reference: &SpeakerReference,
        noise: UtteranceNoise,
        context: VocoderContext,
    ) -> Result<Self> {
        let cfg = model.flow().config();
        check_tokens(&reference.prompt_tokens, cfg.vocab_size)?;
        match reference.prompt_feat.dims() {
            [1, _, bins] if *bins == cfg.output_size => {}
            dims => {
                return Err(Error::Input(format!(
                    "prompt mel of shape {dims:?}, expected [1, frames, {}]",
                    cfg.output_size
                )))
            }
        }
        let vocoder =
            VocoderStream::new(model.hift(), noise.clone(), context, model.fade().to_vec())?;
        Ok(Self {
            model,
            reference: reference.clone(),
            noise,
            tokens: Vec::new(),
            mel_final: 0,
            last_run: None,
            vocoder,
            batcher: None,
        })
    }

    /// Runs this stream's flow through `batcher`, together with other streams' runs that wait
    /// at the same time (see [`FlowBatcher`]).
    pub fn with_batcher(mut self, batcher: &'a FlowBatcher) -> Self {
        self.batcher = Some((batcher, batcher.stream_ticket()));
        self
    }

    /// Tokens received so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Samples returned so far.
    pub fn samples_emitted(&self) -> usize {
        self.vocoder.frames_emitted() * self.model.hift().config().samples_per_frame()
    }

    /// Mel frames at the end that wait for look-ahead tokens: `pre_lookahead_len` tokens of
    /// `token_mel_ratio` frames each.
    pub fn provisional_frames(&self) -> usize {
        let cfg = self.model.flow().config();
        cfg.encoder.pre_lookahead_len * cfg.token_mel_ratio
    }

    /// Adds tokens and returns the audio that became final (possibly none). A token outside
    /// the vocabulary is an [`Error::Input`] naming it, and leaves the stream as it was.
    pub fn push(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        check_tokens(tokens, self.model.flow().config().vocab_size)?;
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        self.tokens.extend_from_slice(tokens);
        let mel = match self.run_flow() {
            Ok(Some(mel)) => mel,
            Ok(None) => return Ok(Vec::new()),
            Err(e) => {
                // A failed run leaves the stream as it was, so the caller may retry.
                self.tokens.truncate(self.tokens.len() - tokens.len());
                return Err(e);
            }
        };
        let target = mel.dim(2)?;
        let final_end = target.saturating_sub(self.provisional_frames());
        if final_end <= self.mel_final {
            return Ok(Vec::new());
        }
        let fresh = mel.narrow(2, self.mel_final, final_end - self.mel_final)?;
        self.mel_final = final_end;
        self.vocoder.push(&fresh)
    }

    /// Ends the utterance: the provisional frames become final and the rest of the audio is
    /// returned. No tokens at all is an [`Error::Input`].
    pub fn finish(mut self) -> Result<Vec<f32>> {
        if self.tokens.is_empty() {
            return Err(Error::Input(
                "the stream ended without speech tokens".into(),
            ));
        }
        let mel = match self.last_run.take() {
            Some((n, mel)) if n == self.tokens.len() => mel,
            _ => self.flow_mel()?,
        };
        let target = mel.dim(2)?;
        if target > self.mel_final {
            self.vocoder
                .append(&mel.narrow(2, self.mel_final, target - self.mel_final)?)?;
        }
        self.vocoder.finish()
    }

    /// The flow over every token so far, once they cover more than the prompt mel (before
    /// that, `Flow::inference` has no target frame to produce and the stream waits).
    fn run_flow(&mut self) -> Result<Option<Tensor>> {
        let frames = self.model.noise_frames(&self.reference, self.tokens.len());
        if frames <= self.reference.prompt_feat.dim(1)? {
            return Ok(None);
        }
        let mel = self.flow_mel()?;
        self.last_run = Some((self.tokens.len(), mel.clone()));
        Ok(Some(mel))
    }

    fn flow_mel(&self) -> Result<Tensor> {
        if let Some((batcher, _)) = &self.batcher {
            return batcher.mel(self.model, &self.tokens, &self.reference, &self.noise);
        }
        self.model
            .mel_drawn(&self.tokens, &self.reference, &self.noise)
    }
}

impl S3Gen {
    /// A chunked synthesis of one utterance, every draw from `seed` (the same draws as
    /// [`S3Gen::synthesize`] with that seed).
    pub fn stream(&self, reference: &SpeakerReference, seed: u64) -> Result<S3GenStream<'_>> {
        S3GenStream::new(self, reference, UtteranceNoise::Seeded(seed))
    }
}
