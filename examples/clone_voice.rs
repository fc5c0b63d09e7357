//! A reference clip in, speech in that voice out, the voice kept for later requests:
//! `cargo run -p ferrovox-examples --example clone_voice -- speaker.wav "Hello." out.wav [MODEL]`
//!
//! MODEL is a Chatterbox id, hub repository or directory (default `chatterbox`, fetched through
//! the hub cache). The voice goes to the default voice store (`~/.cache/ferrovox/voices/cloned`,
//! or `FERROVOX_VOICE_STORE`: a directory or `s3://bucket/prefix`), where `ferrovox say --voice`
//! and `ferrovox serve` find it too.
use ferrovox_cloning::CloningService;
use ferrovox_engine::{open_voice, SynthesisOptions, Voice};
use ferrovox_voice_store::{BlockingVoiceStore, LOCATION_ENV};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(clip), Some(text)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: clone_voice CLIP TEXT [OUT.wav] [MODEL]");
    };
    let path = args.next().unwrap_or_else(|| "cloned.wav".into());
    let model = args.next().unwrap_or_else(|| "chatterbox".into());
    let device = candle_core::Device::Cpu;

    // Encode the clip with the model's own encoders, and keep the result.
    let service = CloningService::new(device.clone());
    let reference = service.read_clip_file(&model, clip.as_ref())?;
    let voice = service.encode(&model, &reference, "example")?;
    let store = BlockingVoiceStore::open(std::env::var(LOCATION_ENV).ok().as_deref())?;
    let (meta, _) = store.add(voice)?;

    // Any later request: the stored voice by id, spoken by the model it was cloned for.
    let stored = store.get(&meta.id)?;
    let options = SynthesisOptions {
        cloned: Some(service.prompt(&meta, &stored.conditionals)?),
        ..Default::default()
    };
    let speaker = Voice::new(open_voice(&meta.model_id, &device)?, None);
    let audio = speaker.synthesize(&text, &options)?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    ferrovox_audio::write_wav(&mut file, &audio.samples, audio.sample_rate)?;
    println!(
        "voice {} ({:.1} s of reference); {path}: {:.2} s",
        meta.id,
        meta.duration_s,
        audio.seconds()
    );
    Ok(())
}
