//! Mirrors `HiFTGenerator` (`s3gen/hifigan.py`, S3Gen's `mel2wav`): mel `[b, 80, t]` to 24 kHz
//! audio `[b, 480 t]`. F0 predictor -> harmonic source -> HiFi-GAN-style upsampling fused with
//! the source's STFT at every stage -> magnitude and phase of a 16-point iSTFT.

use std::sync::Arc;

use candle_core::{DType, Module, Tensor, D};
use candle_nn::VarBuilder;
use ferrovox_audio::{hann_window_scipy, Spectrogram, Stft, StftError};
use ferrovox_device::stages::stage;
use ferrovox_device::{GraphCache, Serial};

use super::config::HiftConfig;
use super::conv::{self, Conv1d, ConvTranspose1d};
use super::conv_stft::ConvStft;
use super::f0_predictor::ConvRnnF0Predictor;
use super::resblock::ResBlock;
use super::source::{SinePhase, SourceModuleHnNsf, SourceNoise};
use crate::{Error, Result};

/// What [`HiftGenerator::inference`] returns (upstream's `(generated_speech, s)`).
#[derive(Debug, Clone)]
pub struct HiftOutput {
    /// `[b, samples]`, clamped to `±audio_limit`.
    pub audio: Tensor,
    /// The excitation after any `cache_source` override, `[b, 1, samples]`; a later call can
    /// pass its tail back as `cache_source`.
    pub source: Tensor,
}

/// The HiFT vocoder.
#[derive(Debug, Clone)]
pub struct HiftGenerator {
    cfg: HiftConfig,
    f0_predictor: ConvRnnF0Predictor,
    m_source: SourceModuleHnNsf,
    conv_pre: Conv1d,
    ups: Vec<ConvTranspose1d>,
    source_downs: Vec<Conv1d>,
    source_resblocks: Vec<ResBlock>,
    /// `ups.len() * resblock_kernel_sizes.len()`, stage-major.
    resblocks: Vec<ResBlock>,
    conv_post: Conv1d,
    stft: Stft,
    /// The STFT pair as convolutions, on devices other than the CPU (see [`ConvStft`]).
    conv_stft: Option<ConvStft>,
    /// [`Self::decode`]'s graphs on CUDA, per (mel, excitation) shape: a voice's stream windows
    /// repeat their shapes from one request to the next. Shared by clones.
    graphs: Arc<GraphCache>,
    /// One thread at a time through [`Self::inference`] and a stream's calls (shared by
    /// clones).
    serial: Arc<Serial>,
}

/// A hook handed each named stage's output.
type Record<'a> = &'a mut dyn FnMut(&str, &Tensor);

/// Decode shapes held as graphs: a stream's windows and a few one-shot lengths.
const DECODE_GRAPHS: usize = 8;

fn stft_error(e: StftError) -> Error {
    Error::Input(format!("HiFT STFT: {e}"))
}

impl HiftGenerator {
    /// `vb` at `mel2wav`.
    pub fn new(cfg: &HiftConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let base = cfg.base_channels;
        let n_fft = cfg.istft_params.n_fft;
        let f0_predictor = ConvRnnF0Predictor::new(&cfg.f0_predictor, vb.pp("f0_predictor"))?;
        let m_source = SourceModuleHnNsf::new(cfg, vb.pp("m_source"))?;
        let conv_pre = conv::conv1d(
            vb.pp("conv_pre"),
            cfg.in_channels,
            base,
            7,
            conv::same(7, 1),
        )?;
        let mut ups = Vec::new();
        let mut source_downs = Vec::new();
        let mut source_resblocks = Vec::new();
        let mut resblocks = Vec::new();
        let down_rates = cfg.source_down_rates();
        for (i, (&rate, &kernel)) in cfg
            .upsample_rates
            .iter()
            .zip(&cfg.upsample_kernel_sizes)
            .enumerate()
        {
            let channels = base >> (i + 1);
            ups.push(conv::conv_transpose1d(
                vb.pp(format!("ups.{i}")),
                (base >> i, channels),
                kernel,
                rate,
                conv::after_leaky_relu(cfg.lrelu_slope, conv::spec(0, 1, 1)),
            )?);
            // The source STFT ([re; im], n_fft + 2 channels at the hop rate) strided down to
            // this stage's rate: kernel 2u, stride u, padding u/2; a pointwise conv at u = 1.
            let u = down_rates[i];
            let (kernel, spec) = if u == 1 {
                (1, conv::same(1, 1))
            } else {
                (2 * u, conv::spec(u / 2, u, 1))
            };
            source_downs.push(conv::conv1d(
                vb.pp(format!("source_downs.{i}")),
                n_fft + 2,
                channels,
                kernel,
                spec,
            )?);
            source_resblocks.push(ResBlock::new(
                vb.pp(format!("source_resblocks.{i}")),
                channels,
                cfg.source_resblock_kernel_sizes[i],
                &cfg.source_resblock_dilation_sizes[i],
            )?);
            for (j, (&k, dilations)) in cfg
                .resblock_kernel_sizes
                .iter()
                .zip(&cfg.resblock_dilation_sizes)
                .enumerate()
            {
                let index = i * cfg.resblock_kernel_sizes.len() + j;
                resblocks.push(ResBlock::new(
                    vb.pp(format!("resblocks.{index}")),
                    channels,
                    k,
                    dilations,
                )?);
            }
        }
        let last = base >> cfg.upsample_rates.len();
        // torch's default slope before conv_post, not `lrelu_slope`.
        let conv_post = conv::conv1d(
            vb.pp("conv_post"),
            last,
            n_fft + 2,
            7,
            conv::after_leaky_relu(0.01, conv::same(7, 1)),
        )?;
        let stft = Stft::new(n_fft, cfg.istft_params.hop_len, hann_window_scipy(n_fft))
            .map_err(|e| Error::Config(e.to_string()))?;
        let conv_stft = match vb.device() {
            candle_core::Device::Cpu => None,
            device => Some(ConvStft::new(
                n_fft,
                cfg.istft_params.hop_len,
                stft.window(),
                device,
            )?),
        };
        Ok(Self {
            cfg: cfg.clone(),
            f0_predictor,
            m_source,
            conv_pre,
            ups,
            source_downs,
            source_resblocks,
            resblocks,
            conv_post,
            stft,
            conv_stft,
            graphs: Arc::new(GraphCache::with_limit(
                "chatterbox.hift.decode",
                DECODE_GRAPHS,
            )),
            serial: Arc::new(Serial::default()),
        })
    }

    /// The lock [`Self::inference`] and streamed vocoding run under ([`Self::decode`] and the
    /// other stages do not take it: callers composing them hold it).
    pub fn serial(&self) -> &Serial {
        &self.serial
    }

    /// [`Self::decode`]'s graphs, for benches and logs.
    pub fn graphs(&self) -> &GraphCache {
        &self.graphs
    }

    pub fn config(&self) -> &HiftConfig {
        &self.cfg
    }

    pub fn f0_predictor(&self) -> &ConvRnnF0Predictor {
        &self.f0_predictor
    }

    pub fn m_source(&self) -> &SourceModuleHnNsf {
        &self.m_source
    }

    /// Checks a mel `[b, in_channels, t >= 1]`.
    fn check_mel(&self, mel: &Tensor) -> Result<(usize, usize)> {
        let (b, c, t) = mel.dims3().map_err(|_| {
            Error::Input(format!(
                "mel must be [batch, {}, frames], got {:?}",
                self.cfg.in_channels,
                mel.dims()
            ))
        })?;
        if c != self.cfg.in_channels || b == 0 || t == 0 {
            return Err(Error::Input(format!(
                "mel must be [batch, {}, frames] with at least one frame, got {:?}",
                self.cfg.in_channels,
                mel.dims()
            )));
        }
        Ok((b, t))
    }

    /// F0 `[b, t]` Hz of a mel `[b, in_channels, t]`.
    pub fn predict_f0(&self, mel: &Tensor) -> Result<Tensor> {
        self.check_mel(mel)?;
        stage("s3gen.hift.f0", mel.device(), || {
            Ok(self.f0_predictor.forward(mel)?)
        })
    }

    /// The excitation `[b, 1, 480 t]` from frame-rate F0 `[b, t]` (nearest upsampling by
    /// [`HiftConfig::samples_per_frame`], then [`SourceModuleHnNsf`]).
    pub fn source(&self, f0: &Tensor, noise: &mut dyn SourceNoise) -> Result<Tensor> {
        self.m_source.forward(&self.f0_at_audio_rate(f0)?, noise)
    }

    /// The sine source's state before an utterance's first sample (draws the initial phases).
    pub fn start_source(&self, batch: usize, noise: &mut dyn SourceNoise) -> Result<SinePhase> {
        self.m_source
            .sine_gen()
            .start(batch, noise, &candle_core::Device::Cpu)
    }

    /// [`Self::source`] for the frames after those `phase` has seen, with the sine noise given
    /// (`normal` `[b, H, 480 t]`): the excitation continues the previous call's phase, so a
    /// source built in pieces equals the one-shot source.
    pub fn source_continued(
        &self,
        f0: &Tensor,
        normal: &Tensor,
        phase: &mut SinePhase,
    ) -> Result<Tensor> {
        stage("s3gen.hift.source", f0.device(), || {
            self.m_source
                .forward_continued(&self.f0_at_audio_rate(f0)?, normal, phase)
        })
    }

    /// Frame-rate F0 `[b, t]` to the audio rate `[b, 480 t]` (nearest, upstream's `f0_upsamp`).
    fn f0_at_audio_rate(&self, f0: &Tensor) -> Result<Tensor> {
        let (b, t) = f0.dims2()?;
        let scale = self.cfg.samples_per_frame();
        Ok(f0
            .unsqueeze(2)?
            .broadcast_as((b, t, scale))?
            .reshape((b, t * scale))?)
    }

    /// The source's STFT as `[b, n_fft + 2, frames]`: real parts, then imaginary parts.
    fn source_stft(&self, source: &Tensor) -> Result<Tensor> {
        if let Some(conv) = &self.conv_stft {
            return Ok(conv.forward(source)?.to_dtype(source.dtype())?);
        }
        let (b, _, _) = source.dims3()?;
        let device = source.device();
        let samples = source.squeeze(1)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let items = samples
            .iter()
            .map(|signal| {
                let spec = self.stft.forward(signal, true).map_err(stft_error)?;
                let shape = (spec.frames, spec.bins);
                let re = Tensor::from_vec(spec.re, shape, device)?;
                let im = Tensor::from_vec(spec.im, shape, device)?;
                Ok(Tensor::cat(&[re.t()?, im.t()?], 0)?)
            })
            .collect::<Result<Vec<_>>>()?;
        debug_assert_eq!(items.len(), b);
        Ok(Tensor::stack(&items, 0)?.to_dtype(source.dtype())?)
    }

    /// `_istft`: magnitudes clipped at 100, polar to rectangular, inverse STFT; `[b, samples]`.
    fn istft(&self, magnitude: &Tensor, phase: &Tensor) -> Result<Tensor> {
        let magnitude = magnitude.to_dtype(DType::F32)?.clamp(f32::MIN, 100f32)?;
        let phase = phase.to_dtype(DType::F32)?;
        if let Some(conv) = &self.conv_stft {
            return conv.inverse(&magnitude, &phase);
        }
        // Frame-major [b, frames, bins] for ferrovox-audio.
        let re = (&magnitude * phase.cos()?)?.transpose(1, 2)?.contiguous()?;
        let im = (&magnitude * phase.sin()?)?.transpose(1, 2)?.contiguous()?;
        let (b, frames, bins) = re.dims3()?;
        let device = magnitude.device();
        let items = (0..b)
            .map(|i| {
                let spec = Spectrogram::new(
                    frames,
                    bins,
                    re.get(i)?.flatten_all()?.to_vec1::<f32>()?,
                    im.get(i)?.flatten_all()?.to_vec1::<f32>()?,
                )
                .map_err(stft_error)?;
                let audio = self.stft.inverse(&spec).map_err(stft_error)?;
                let len = audio.len();
                Ok(Tensor::from_vec(audio, len, device)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&items, 0)?)
    }

    /// `decode(x=mel, s=source)`: mel `[b, in_channels, t]` and excitation `[b, 1, 480 t]` to
    /// audio `[b, 480 t]`.
    pub fn decode(&self, mel: &Tensor, source: &Tensor) -> Result<Tensor> {
        // Checked here too, so a bad input is the caller's error, not a failed graph run.
        self.check_decode(mel, source)?;
        stage("s3gen.hift.decode", mel.device(), || {
            let (audio, _) = self.graphs.run(&[mel, source], |i| {
                self.decode_recorded(&i[0], &i[1], &mut |_, _| {})
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))
            })?;
            Ok(audio)
        })
    }

    /// An excitation `[b, 1, 480 t]` for a mel `[b, in_channels, t]`, or an [`Error::Input`].
    fn check_decode(&self, mel: &Tensor, source: &Tensor) -> Result<()> {
        let (b, t) = self.check_mel(mel)?;
        let samples = t * self.cfg.samples_per_frame();
        if source.dims() != [b, 1, samples] {
            return Err(Error::Input(format!(
                "source must be [{b}, 1, {samples}] for {t} mel frames, got {:?}",
                source.dims()
            )));
        }
        Ok(())
    }

    /// [`Self::decode`], handing stages to `record` under the fixture names (`source_stft`,
    /// `conv_pre`, `ups.{i}`, `source_downs.{i}`, `source_resblocks.{i}`, `stage.{i}`,
    /// `magnitude` (before the clip), `phase`).
    pub fn decode_recorded(
        &self,
        mel: &Tensor,
        source: &Tensor,
        record: &mut dyn FnMut(&str, &Tensor),
    ) -> Result<Tensor> {
        self.check_decode(mel, source)?;
        let s_stft = self.source_stft(source)?;
        record("source_stft", &s_stft);
        let mut x = self.conv_pre.forward(mel)?;
        record("conv_pre", &x);
        let kernels = self.cfg.resblock_kernel_sizes.len();
        let stages = self.ups.len();
        for (i, up) in self.ups.iter().enumerate() {
            x = up.forward(&x)?;
            if i + 1 == stages {
                // ReflectionPad1d((1, 0)): prepend x[..., 1], reaching the STFT's frame count.
                x = Tensor::cat(&[&x.narrow(D::Minus1, 1, 1)?, &x], D::Minus1)?;
            }
            record(&format!("ups.{i}"), &x);
            let si = self.source_downs[i].forward(&s_stft)?;
            record(&format!("source_downs.{i}"), &si);
            let si = self.source_resblocks[i].forward(&si)?;
            record(&format!("source_resblocks.{i}"), &si);
            x = (x + si)?;
            let blocks = &self.resblocks[i * kernels..(i + 1) * kernels];
            let mut sum = blocks[0].forward(&x)?;
            for block in &blocks[1..] {
                sum = (sum + block.forward(&x)?)?;
            }
            x = (sum / kernels as f64)?;
            record(&format!("stage.{i}"), &x);
        }
        let x = self.conv_post.forward(&x)?;
        let bins = self.cfg.istft_params.n_fft / 2 + 1;
        let magnitude = x.narrow(1, 0, bins)?.exp()?;
        // Upstream's comment: "actually, sin is redundancy".
        let phase = x.narrow(1, bins, bins)?.sin()?;
        record("magnitude", &magnitude);
        record("phase", &phase);
        let audio = self.istft(&magnitude, &phase)?;
        let limit = self.cfg.audio_limit as f32;
        Ok(audio.clamp(-limit, limit)?.to_dtype(mel.dtype())?)
    }

    /// `inference(speech_feat, cache_source)`: mel `[b, in_channels, t]` to audio. A non-empty
    /// `cache_source` `[b, 1, n]` (n <= 480 t) replaces the first `n` samples of the excitation,
    /// so consecutive chunks can share a continuous source.
    pub fn inference(
        &self,
        mel: &Tensor,
        cache_source: Option<&Tensor>,
        noise: &mut dyn SourceNoise,
    ) -> Result<HiftOutput> {
        self.serial.run(|| {
            stage("s3gen.hift", mel.device(), || {
                self.run_inference(mel, cache_source, noise, None)
            })
        })
    }

    /// [`Self::inference`], handing stages to `record`: `f0_condnet`, `f0`, `source` and the
    /// stages of [`Self::decode_recorded`].
    pub fn inference_recorded(
        &self,
        mel: &Tensor,
        cache_source: Option<&Tensor>,
        noise: &mut dyn SourceNoise,
        record: &mut dyn FnMut(&str, &Tensor),
    ) -> Result<HiftOutput> {
        self.serial
            .run(|| self.run_inference(mel, cache_source, noise, Some(record)))
    }

    /// The inference, its decode through [`Self::decode`] (a graph on CUDA) unless its stages
    /// are recorded.
    fn run_inference(
        &self,
        mel: &Tensor,
        cache_source: Option<&Tensor>,
        noise: &mut dyn SourceNoise,
        mut record: Option<Record<'_>>,
    ) -> Result<HiftOutput> {
        let recording = record.is_some();
        let mut record = |name: &str, t: &Tensor| {
            if let Some(r) = record.as_mut() {
                r(name, t)
            }
        };
        let (b, t) = self.check_mel(mel)?;
        let samples = t * self.cfg.samples_per_frame();
        if let Some(cache) = cache_source {
            let dims = cache.dims();
            if dims.len() != 3 || dims[0] != b || dims[1] != 1 || dims[2] > samples {
                return Err(Error::Input(format!(
                    "cache_source must be [{b}, 1, n <= {samples}], got {dims:?}"
                )));
            }
        }
        let hidden = self.f0_predictor.condnet(mel)?;
        record("f0_condnet", &hidden);
        let f0 = self.f0_predictor.classify(&hidden)?;
        record("f0", &f0);
        let mut source = self.source(&f0, noise)?;
        if let Some(cache) = cache_source.filter(|c| c.dim(2).is_ok_and(|n| n > 0)) {
            let n = cache.dim(2)?;
            let cache = cache.to_dtype(source.dtype())?.to_device(source.device())?;
            source = Tensor::cat(&[&cache, &source.narrow(2, n, samples - n)?], 2)?;
        }
        record("source", &source);
        let audio = if recording {
            self.decode_recorded(mel, &source, &mut record)?
        } else {
            self.decode(mel, &source)?
        };
        Ok(HiftOutput { audio, source })
    }
}
