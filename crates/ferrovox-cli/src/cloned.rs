//! Cloned voices on the command line, through the cloning service: a reference clip encoded by
//! a model's own encoders (Chatterbox today), kept in the voice store (`--voice-store`,
//! `FERROVOX_VOICE_STORE`, else `~/.cache/ferrovox/voices/cloned`) or used once.

use std::path::Path;

use anyhow::{bail, Context};
use candle_core::Device;
use ferrovox_cloning::CloningService;
use ferrovox_engine::ClonedVoice;
use ferrovox_voice_store::{BlockingVoiceStore, VoiceMeta, LOCATION_ENV};
use ferrovox_voices::Family;

/// The voice store named by `location`, else `FERROVOX_VOICE_STORE`, else the default
/// directory.
pub fn open_store(location: Option<&str>) -> anyhow::Result<BlockingVoiceStore> {
    let env = std::env::var(LOCATION_ENV).ok();
    let location = location.or(env.as_deref());
    BlockingVoiceStore::open(location).with_context(|| {
        format!(
            "opening the voice store {}",
            location.unwrap_or("(default directory)")
        )
    })
}

/// Decodes and checks `clip` as `model`'s cloning needs it.
fn read_clip(
    service: &CloningService,
    model: &str,
    clip: &Path,
) -> anyhow::Result<ferrovox_audio::ReferenceClip> {
    let clip = service
        .read_clip_file(model, clip)
        .with_context(|| format!("reference clip {}", clip.display()))?;
    if clip.used.truncated {
        eprintln!("reference clip: {} is used", clip.used);
    }
    Ok(clip)
}

/// `ferrovox voices add`: clones `clip` with `model` and stores it under `name`.
pub fn add(
    store: &BlockingVoiceStore,
    clip_path: &Path,
    name: &str,
    model: &str,
    device: &Device,
) -> anyhow::Result<VoiceMeta> {
    let service = CloningService::new(device.clone());
    let clip = read_clip(&service, model, clip_path)?;
    let started = std::time::Instant::now();
    let voice = service.encode(model, &clip, name)?;
    eprintln!(
        "encoded {:.1} s of {} in {:.2} s",
        clip.duration_s,
        clip_path.display(),
        started.elapsed().as_secs_f64()
    );
    let (meta, added) = store.add(voice)?;
    if matches!(added, ferrovox_voice_store::Added::Existing) {
        eprintln!(
            "this clip was already stored as `{}` ({}): kept",
            meta.name, meta.id
        );
    }
    Ok(meta)
}

/// The stored voice `meta` describes, ready for a request, with the model it was cloned for.
pub fn stored(
    store: &BlockingVoiceStore,
    meta: VoiceMeta,
    device: &Device,
) -> anyhow::Result<(ClonedVoice, String)> {
    if meta.family != Family::Chatterbox.name() {
        bail!(
            "cloned voice `{}` is a {} voice, which this build cannot speak",
            meta.name,
            meta.family
        );
    }
    let voice = store.get(&meta.id)?;
    let prompt = CloningService::new(device.clone())
        .prompt(&meta, &voice.conditionals)
        .with_context(|| format!("cloned voice `{}` ({})", meta.name, meta.id))?;
    Ok((prompt, meta.model_id))
}

/// A one-off voice from `clip` for the model `model`, not stored.
pub fn one_off(model: &str, clip_path: &Path, device: &Device) -> anyhow::Result<ClonedVoice> {
    let service = CloningService::new(device.clone());
    let clip = read_clip(&service, model, clip_path)?;
    Ok(service.one_off(model, &clip)?)
}
