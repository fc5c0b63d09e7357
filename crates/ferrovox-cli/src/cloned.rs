//! Cloned voices on the command line: a reference clip encoded by a model's own encoders
//! (Chatterbox today), kept in the voice store (`--voice-store`, `FERROVOX_VOICE_STORE`, else
//! `~/.cache/ferrovox/voices/cloned`) or used once.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use candle_core::Device;
use ferrovox_audio::{ReferenceClip, ReferenceLimits};
use ferrovox_chatterbox::{Conditionals, VoiceCloner};
use ferrovox_engine::ClonedVoice;
use ferrovox_voice_store::{BlockingVoiceStore, NewVoice, VoiceMeta, LOCATION_ENV};
use ferrovox_voices::{Family, VoiceFiles};
use sha2::{Digest, Sha256};

/// The rate Chatterbox's cloning reads the clip at (S3Gen's; the 16 kHz copies are made
/// from the source).
const CLONE_RATE: u32 = 24_000;

/// Exaggeration stored with a cloned voice (upstream's default); a request may override it.
const STORED_EXAGGERATION: f32 = 0.5;

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

/// A Chatterbox model directory for `model` (an id, a hub repository or a directory).
fn chatterbox_dir(model: &str) -> anyhow::Result<std::path::PathBuf> {
    match ferrovox_voices::resolve(model)? {
        VoiceFiles::Chatterbox { dir } => Ok(dir),
        _ => bail!(
            "`{model}` is not a Chatterbox model: only Chatterbox voices can be cloned so far"
        ),
    }
}

/// Identifies the encoders' weights, so a voice cloned by other weights gets another id: the
/// voice encoder's bytes and the tensor index of `s3gen.safetensors` (the tokenizer's and
/// CAMPPlus's names, shapes and offsets), without reading its gigabyte.
fn encoders_version(dir: &Path) -> anyhow::Result<String> {
    let mut h = Sha256::new();
    let ve = dir.join("ve.safetensors");
    h.update(std::fs::read(&ve).with_context(|| format!("reading {}", ve.display()))?);
    let s3gen = dir.join("s3gen.safetensors");
    let mut file =
        std::fs::File::open(&s3gen).with_context(|| format!("reading {}", s3gen.display()))?;
    let mut len = [0u8; 8];
    std::io::Read::read_exact(&mut file, &mut len)?;
    let n = u64::from_le_bytes(len).min(64 << 20) as usize;
    let mut header = vec![0u8; n];
    std::io::Read::read_exact(&mut file, &mut header)?;
    h.update(&header);
    Ok(format!("{:x}", h.finalize())[..16].to_string())
}

/// Decodes and checks `clip` as Chatterbox's cloning needs it.
pub fn read_clip(clip: &Path) -> anyhow::Result<ReferenceClip> {
    let clip = ReferenceClip::from_path(clip, CLONE_RATE, &ReferenceLimits::chatterbox())
        .with_context(|| format!("reference clip {}", clip.display()))?;
    if clip.used.truncated {
        eprintln!("reference clip: {} is used", clip.used);
    }
    Ok(clip)
}

/// `clip`'s conditionals for the Chatterbox model in `dir`.
fn clone_chatterbox(
    dir: &Path,
    clip: &ReferenceClip,
    device: &Device,
) -> anyhow::Result<Conditionals> {
    let cloner = VoiceCloner::from_dir(dir, device)?;
    Ok(cloner.from_clip(clip, STORED_EXAGGERATION)?)
}

/// `ferrovox voices add`: clones `clip` with `model` and stores it under `name`.
pub fn add(
    store: &BlockingVoiceStore,
    clip_path: &Path,
    name: &str,
    model: &str,
    device: &Device,
) -> anyhow::Result<VoiceMeta> {
    let clip = read_clip(clip_path)?;
    let dir = chatterbox_dir(model)?;
    let started = std::time::Instant::now();
    let conditionals = clone_chatterbox(&dir, &clip, device)?;
    eprintln!(
        "encoded {:.1} s of {} in {:.2} s",
        clip.duration_s,
        clip_path.display(),
        started.elapsed().as_secs_f64()
    );
    let (meta, added) = store.add(NewVoice {
        name: name.to_string(),
        family: Family::Chatterbox.name().to_string(),
        model_id: model.to_string(),
        model_version: encoders_version(&dir)?,
        encoder_params: serde_json::json!({
            "rate": CLONE_RATE,
            "exaggeration": STORED_EXAGGERATION,
            "t3_prompt_s": 6,
            "s3gen_prompt_s": 10,
        }),
        source_hash: clip.hash.to_hex(),
        duration_s: clip.duration_s,
        loudness_lufs: clip.loudness_lufs,
        conditionals: conditionals.to_safetensors()?,
    })?;
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
    let conditionals = Conditionals::from_safetensors(&voice.conditionals, device)
        .with_context(|| format!("cloned voice `{}` ({})", meta.name, meta.id))?;
    Ok((
        ClonedVoice {
            id: meta.id.clone(),
            family: Family::Chatterbox,
            prompt: Arc::new(conditionals),
        },
        meta.model_id,
    ))
}

/// A one-off voice from `clip` for the Chatterbox model `model`, not stored.
pub fn one_off(model: &str, clip_path: &Path, device: &Device) -> anyhow::Result<ClonedVoice> {
    let clip = read_clip(clip_path)?;
    let conditionals = clone_chatterbox(&chatterbox_dir(model)?, &clip, device)?;
    Ok(ClonedVoice {
        id: format!("clip-{}", &clip.hash.to_hex()[..16]),
        family: Family::Chatterbox,
        prompt: Arc::new(conditionals),
    })
}
