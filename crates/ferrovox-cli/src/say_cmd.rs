//! `ferrovox say`: text to speech, streamed sentence by sentence through the engine.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};

use crate::options::{flag_error, VoiceOptions};
use ferrovox_device::{DeviceRequest, Runtime, TuningConfig};
use ferrovox_engine::{open_voice, ChatterboxVoice, EngineError, Voice};

/// Output encodings (the rate, bitrate and container of each: `ferrovox_audio::codec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// RIFF WAV, 16-bit mono, exact sizes in the header.
    Wav,
    /// Raw little-endian 16-bit mono samples at the voice's rate.
    Pcm,
    /// FLAC, 16-bit mono.
    Flac,
    /// MP3, mono 64 kbit/s at the voice's rate.
    Mp3,
    /// Ogg Opus, mono 32 kbit/s at 48 kHz.
    Opus,
}

impl Format {
    /// The format a file name's extension names.
    fn of_path(path: &std::path::Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "wav" | "wave" => Self::Wav,
            "pcm" | "raw" => Self::Pcm,
            "flac" => Self::Flac,
            "mp3" => Self::Mp3,
            "opus" | "ogg" | "oga" => Self::Opus,
            _ => return None,
        })
    }

    fn audio_format(self) -> ferrovox_audio::AudioFormat {
        use ferrovox_audio::AudioFormat as A;
        match self {
            Self::Wav => A::Wav,
            Self::Pcm => A::Pcm,
            Self::Flac => A::Flac,
            Self::Mp3 => A::Mp3,
            Self::Opus => A::Opus,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct SayArgs {
    /// Text to speak; read from stdin when absent.
    text: Option<String>,
    /// Output file; `-` writes to stdout.
    #[arg(short, long, env = "FERROVOX_OUTPUT", default_value = "output.wav")]
    output: PathBuf,
    /// Write raw s16le samples to stdout as each sentence is ready (same as `-o - --format pcm`).
    #[arg(long, env = "FERROVOX_OUTPUT_RAW")]
    output_raw: bool,
    /// Output format; by default the output file's extension's (`.mp3`, `.opus`/`.ogg`,
    /// `.flac`, `.pcm`/`.raw`, `.wav`), else WAV.
    #[arg(long, value_enum, env = "FERROVOX_FORMAT")]
    format: Option<Format>,
    /// Voice id: a catalog id, `chatterbox` (or a hub repository), a directory of a voice's
    /// files, or a cloned voice's name or id.
    #[arg(long, env = "FERROVOX_VOICE", default_value = ferrovox_voices::DEFAULT_VOICE)]
    voice: String,
    /// Speak in a voice cloned from this clip (not stored; `ferrovox voices add` stores one).
    #[arg(long, env = "FERROVOX_REFERENCE")]
    reference: Option<PathBuf>,
    /// Voice store where `--voice NAME` finds cloned voices: a directory or
    /// `s3://bucket/prefix` (default `~/.cache/ferrovox/voices/cloned`).
    #[arg(long, env = "FERROVOX_VOICE_STORE")]
    voice_store: Option<String>,
    /// Speaker id of a multi-speaker voice.
    #[arg(long, env = "FERROVOX_SPEAKER")]
    speaker: Option<u32>,
    /// Also write the speech tokens T3 generated for each piece of text (a JSON list of
    /// lists), to compare a run with upstream's token for token (Chatterbox voices).
    #[arg(long, env = "FERROVOX_DUMP_TOKENS")]
    dump_tokens: Option<PathBuf>,
    #[command(flatten)]
    voice_options: VoiceOptions,
}

pub fn say(args: SayArgs, device: &DeviceRequest, tuning: &TuningConfig) -> anyhow::Result<()> {
    let mut options = args.voice_options.options()?;
    options.vits.speaker = args.speaker;
    let text = match &args.text {
        Some(t) => t.clone(),
        None => {
            let mut t = String::new();
            std::io::stdin()
                .read_to_string(&mut t)
                .context("reading text from stdin")?;
            t
        }
    };
    if text.trim().is_empty() {
        bail!("no text to speak: give it as an argument or on stdin");
    }
    let runtime = Runtime::init(device, tuning)?;
    let load = Instant::now();
    let model_id = match &args.reference {
        Some(clip) => {
            options.cloned = Some(crate::cloned::one_off(&args.voice, clip, runtime.device())?);
            args.voice.clone()
        }
        None => match stored_voice(&args, runtime.device())? {
            Some((cloned, model)) => {
                options.cloned = Some(cloned);
                model
            }
            None => args.voice.clone(),
        },
    };
    let model = open_voice(&model_id, runtime.device())?;
    // One engine voice, unbatched: the same path the server's requests take.
    let voice = Voice::new(model, None);
    voice.model().validate(&options).map_err(flag_error)?;
    eprintln!(
        "loaded {} in {:.2} s on {}",
        args.voice,
        load.elapsed().as_secs_f64(),
        runtime.selection.kind
    );
    let rate = voice.model().sample_rate();
    if let Some(path) = &args.dump_tokens {
        let chatterbox = voice
            .model()
            .as_any()
            .downcast_ref::<ChatterboxVoice>()
            .context("--dump-tokens needs a Chatterbox voice")?;
        let units = voice.prepare(&text, &options)?;
        let tokens = chatterbox.speech_tokens(&units, &options)?;
        std::fs::write(path, serde_json::to_vec(&tokens)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "wrote {} speech tokens of {} piece(s) to {}",
            tokens.iter().map(Vec::len).sum::<usize>(),
            tokens.len(),
            path.display()
        );
    }
    let format = args
        .format
        .or_else(|| Format::of_path(&args.output))
        .unwrap_or(Format::Wav);
    let raw = args.output_raw || format == Format::Pcm;
    let to_stdout = args.output_raw || args.output.as_os_str() == "-";
    let mut stdout = std::io::stdout().lock();
    let mut all = Vec::new();
    let start = Instant::now();
    let mut first_audio = None;
    let mut chunks = 0usize;
    voice.stream(&text, &options, &mut |audio| {
        chunks += 1;
        first_audio.get_or_insert_with(|| start.elapsed());
        if raw && to_stdout {
            ferrovox_audio::write_pcm_s16le(&mut stdout, audio)
                .and_then(|()| stdout.flush())
                .map_err(|e| {
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        EngineError::Cancelled
                    } else {
                        EngineError::Unsupported(format!("writing stdout: {e}"))
                    }
                })
        } else {
            all.extend_from_slice(audio);
            Ok(())
        }
    })?;
    let wall = start.elapsed().as_secs_f64();
    let samples = if raw && to_stdout { 0 } else { all.len() };
    if !(raw && to_stdout) {
        let mut bytes = Vec::with_capacity(44 + 2 * all.len());
        if raw {
            ferrovox_audio::write_pcm_s16le(&mut bytes, &all)?;
        } else {
            bytes = ferrovox_audio::Encoder::encode(format.audio_format(), &all, rate)?;
        }
        if to_stdout {
            stdout.write_all(&bytes)?;
        } else {
            std::fs::write(&args.output, &bytes)
                .with_context(|| format!("writing {}", args.output.display()))?;
        }
    }
    if samples > 0 {
        let seconds = samples as f64 / rate as f64;
        eprintln!(
            "{seconds:.2} s of audio at {rate} Hz in {wall:.2} s (real-time factor {:.1}x, first audio after {:.0} ms, streamed in {chunks} chunk(s)){}",
            seconds / wall,
            first_audio.unwrap_or_default().as_secs_f64() * 1e3,
            if to_stdout { String::new() } else { format!(" -> {}", args.output.display()) }
        );
    }
    Ok(())
}

/// The cloned voice `--voice` names in the store, with the model it was made for; `None` when
/// the store has no such voice (the id is then a built-in voice's).
fn stored_voice(
    args: &SayArgs,
    device: &candle_core::Device,
) -> anyhow::Result<Option<(ferrovox_engine::ClonedVoice, String)>> {
    use ferrovox_voice_store::Error as StoreError;
    if std::path::Path::new(&args.voice).exists() {
        return Ok(None);
    }
    // No store named and none made yet: no cloned voice to find (and none is created).
    let named = args.voice_store.is_some()
        || std::env::var_os(ferrovox_voice_store::LOCATION_ENV).is_some();
    if !named && !ferrovox_voice_store::default_dir().is_ok_and(|d| d.is_dir()) {
        return Ok(None);
    }
    let store = crate::cloned::open_store(args.voice_store.as_deref())?;
    match store.resolve(&args.voice) {
        Ok(meta) => Ok(Some(crate::cloned::stored(&store, meta, device)?)),
        Err(StoreError::NotFound(_) | StoreError::NameNotFound(_) | StoreError::InvalidId(_)) => {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}
