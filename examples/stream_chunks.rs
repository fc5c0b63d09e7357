//! Streaming: each sentence's audio goes to the sink as soon as it is ready, here raw s16le
//! PCM on stdout (`... | aplay -r 22050 -f S16_LE`), with the time of each chunk on stderr.
use std::io::Write;
use std::time::Instant;

use ferrovox_device::{DeviceRequest, Runtime, TuningConfig};
use ferrovox_engine::{open_voice, EngineError, SynthesisOptions, Voice};

fn main() -> anyhow::Result<()> {
    let text = std::env::args().nth(1).unwrap_or_else(|| {
        "Streaming starts with the first sentence. The second follows while you listen. \
         And the third arrives before the second has finished playing."
            .into()
    });
    let runtime = Runtime::init(&DeviceRequest::from_env()?, &TuningConfig::from_env()?)?;
    let voice = Voice::new(open_voice("en_US-joe-medium", runtime.device())?, None);
    let rate = voice.model().sample_rate() as f64;
    let start = Instant::now();
    let mut stdout = std::io::stdout().lock();
    let options = SynthesisOptions {
        unit_silence: 0.2,
        ..Default::default()
    };
    voice.stream(&text, &options, &mut |chunk| {
        eprintln!(
            "{:>6.0} ms: {:.2} s of audio",
            start.elapsed().as_secs_f64() * 1e3,
            chunk.len() as f64 / rate
        );
        ferrovox_audio::write_pcm_s16le(&mut stdout, chunk)
            .and_then(|()| stdout.flush())
            .map_err(|e| EngineError::Unsupported(format!("stdout: {e}")))
    })?;
    Ok(())
}
