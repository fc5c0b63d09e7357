//! Text in, WAV out: `cargo run -p ferrovox-examples --example speak_to_wav -- "Hello." out.wav`
use ferrovox_engine::{open_voice, SynthesisOptions, Voice};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let text = args.next().unwrap_or_else(|| "Hello from ferrovox.".into());
    let path = args.next().unwrap_or_else(|| "speak.wav".into());
    let voice = Voice::new(
        open_voice("en_US-joe-medium", &candle_core::Device::Cpu)?,
        None,
    );
    let audio = voice.synthesize(&text, &SynthesisOptions::default())?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    ferrovox_audio::write_wav(&mut file, &audio.samples, audio.sample_rate)?;
    println!("{path}: {:.2} s", audio.seconds());
    Ok(())
}
