//! The voice-cloning service: a reference clip, encoded by a model family's own encoders, becomes
//! a voice for the voice store ([`ferrovox_voice_store::NewVoice`]); a stored voice becomes the
//! [`ClonedVoice`] a request speaks in. The CLI (`ferrovox voices add`, `say --reference`) and
//! the server (`POST /v1/audio/voices`) both go through it, so a voice cloned by one is the
//! voice the other speaks.
//!
//! Chatterbox is the family with encoders today (voice encoder, S3 tokenizer, CAMPPlus). XTTS v2
//! (GPT conditioning latents and speaker embedding) and Higgs Audio v2 (reference audio codes)
//! plug in beside it: a clip's rate and limits, an encoder that returns the family's
//! conditioning as bytes for the store, and a loader that turns those bytes back into the
//! family's prompt type.
//!
//! Every call here blocks (decoding, encoders on the device): an async caller runs it on a
//! blocking thread.
//!
//! ```no_run
//! use ferrovox_cloning::CloningService;
//! use ferrovox_voice_store::BlockingVoiceStore;
//!
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let service = CloningService::new(candle_core::Device::Cpu);
//! let clip = service.read_clip_file("chatterbox", "speaker.wav".as_ref())?;
//! let voice = service.encode("chatterbox", &clip, "Ada")?;
//! let store = BlockingVoiceStore::open(None)?;
//! let (meta, _) = store.add(voice)?;
//! let stored = store.get(&meta.id)?;
//! let prompt = service.prompt(&meta, &stored.conditionals)?; // SynthesisOptions::cloned
//! # let _ = prompt; Ok(()) }
//! ```

mod chatterbox;
mod error;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::Device;
use ferrovox_audio::{ReferenceClip, ReferenceLimits};
use ferrovox_chatterbox::{ReferenceRule, VoiceCloner};
use ferrovox_engine::ClonedVoice;
use ferrovox_voice_store::{NewVoice, VoiceMeta};
use ferrovox_voices::{Family, VoiceFiles};

pub use error::CloneError;

/// A model that can clone voices, as registered with the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClonableModel {
    /// The id it was registered under (a catalog id, hub repository or directory).
    pub id: String,
    /// Its family.
    pub family: Family,
    /// The directory its files are in.
    pub dir: PathBuf,
    /// Identifies its encoders' weights: voices cloned by other weights get other ids and are
    /// not spoken by this model.
    pub version: String,
}

#[derive(Debug)]
struct Registered {
    model: ClonableModel,
    /// The rate its encoders read a clip at, and the limits the clip is held to.
    rate: u32,
    limits: ReferenceLimits,
    /// How the model conditions on a clip (Turbo's and Nano's differ from Chatterbox's).
    rule: ReferenceRule,
    /// The encoders, loaded on first use and kept (the released S3 tokenizer alone is about
    /// 0.5 GB, too much to read again for each clip).
    cloner: Mutex<Option<Arc<VoiceCloner>>>,
}

/// Clones voices with the models registered with it; see the crate's docs.
#[derive(Debug)]
pub struct CloningService {
    device: Device,
    models: Mutex<Vec<Arc<Registered>>>,
}

impl CloningService {
    /// A service whose encoders run on `device`, with no model registered yet.
    pub fn new(device: Device) -> Self {
        Self {
            device,
            models: Mutex::new(Vec::new()),
        }
    }

    /// The device the encoders run on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Registers `model` (resolving its files, which may fetch them) and returns it; a model
    /// already registered is returned as it is. Refuses a family without voice encoders.
    pub fn register(&self, model: &str) -> Result<ClonableModel, CloneError> {
        Ok(self.entry(model)?.model.clone())
    }

    /// The models registered so far.
    pub fn models(&self) -> Vec<ClonableModel> {
        self.lock().iter().map(|r| r.model.clone()).collect()
    }

    /// The registered model for `model`: its id, or its family's name for the first of that
    /// family. Unlike [`CloningService::register`], never resolves anything new.
    pub fn find(&self, model: &str) -> Result<ClonableModel, CloneError> {
        let models = self.lock();
        models
            .iter()
            .find(|r| r.model.id == model)
            .or_else(|| models.iter().find(|r| r.model.family.name() == model))
            .map(|r| r.model.clone())
            .ok_or_else(|| CloneError::UnknownModel {
                model: model.to_string(),
                available: names(&models),
            })
    }

    /// Decodes and checks an uploaded clip as `model`'s family needs it.
    pub fn read_clip(&self, model: &str, bytes: &[u8]) -> Result<ReferenceClip, CloneError> {
        let entry = self.entry(model)?;
        Ok(ReferenceClip::from_bytes(bytes, entry.rate, &entry.limits)?)
    }

    /// [`CloningService::read_clip`] from a file (its extension helps find the format).
    pub fn read_clip_file(&self, model: &str, path: &Path) -> Result<ReferenceClip, CloneError> {
        let entry = self.entry(model)?;
        Ok(ReferenceClip::from_path(path, entry.rate, &entry.limits)?)
    }

    /// Encodes `clip` with `model`'s encoders into a voice named `name`, ready for
    /// [`VoiceStore::add`](ferrovox_voice_store::VoiceStore::add).
    pub fn encode(
        &self,
        model: &str,
        clip: &ReferenceClip,
        name: &str,
    ) -> Result<NewVoice, CloneError> {
        let entry = self.entry(model)?;
        let cloner = self.cloner(&entry)?;
        let (conditionals, encoder_params) = chatterbox::encode(&cloner, clip)?;
        Ok(NewVoice {
            name: name.to_string(),
            family: entry.model.family.name().to_string(),
            model_id: entry.model.id.clone(),
            model_version: entry.model.version.clone(),
            encoder_params,
            source_hash: clip.hash.to_hex(),
            duration_s: clip.duration_s,
            loudness_lufs: clip.loudness_lufs,
            conditionals,
            consent: None,
        })
    }

    /// A voice from `clip` for `model`, used once and not stored (its id is the clip's hash).
    pub fn one_off(&self, model: &str, clip: &ReferenceClip) -> Result<ClonedVoice, CloneError> {
        let entry = self.entry(model)?;
        let cloner = self.cloner(&entry)?;
        Ok(ClonedVoice {
            id: format!("clip-{}", &clip.hash.to_hex()[..16]),
            family: entry.model.family,
            prompt: std::sync::Arc::new(chatterbox::conditionals(&cloner, clip)?),
        })
    }

    /// The registered model that speaks the stored voice `meta`: one of its family whose
    /// encoders made it, preferring the model it was cloned with.
    pub fn model_for(&self, meta: &VoiceMeta) -> Result<ClonableModel, CloneError> {
        let models = self.lock();
        let fits = |r: &&Arc<Registered>| {
            r.model.family.name() == meta.family && r.model.version == meta.model_version
        };
        models
            .iter()
            .filter(fits)
            .find(|r| r.model.id == meta.model_id)
            .or_else(|| models.iter().find(fits))
            .map(|r| r.model.clone())
            .ok_or_else(|| CloneError::NoModelFor {
                id: meta.id.clone(),
                family: meta.family.clone(),
                version: meta.model_version.clone(),
                loaded: names(&models),
            })
    }

    /// The stored voice `meta`, whose payload is `payload`, as a request's cloned voice on
    /// this service's device.
    pub fn prompt(&self, meta: &VoiceMeta, payload: &[u8]) -> Result<ClonedVoice, CloneError> {
        let family = match Family::from_name(&meta.family) {
            Some(f @ Family::Chatterbox) => f,
            _ => {
                return Err(CloneError::NoModelFor {
                    id: meta.id.clone(),
                    family: meta.family.clone(),
                    version: meta.model_version.clone(),
                    loaded: "(this build speaks cloned chatterbox voices only)".into(),
                })
            }
        };
        Ok(ClonedVoice {
            id: meta.id.clone(),
            family,
            prompt: chatterbox::prompt(payload, &self.device)?,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Registered>>> {
        self.models.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entry(&self, model: &str) -> Result<Arc<Registered>, CloneError> {
        if let Some(r) = self.lock().iter().find(|r| r.model.id == model) {
            return Ok(r.clone());
        }
        let files = ferrovox_voices::resolve(model).map_err(|source| CloneError::Model {
            model: model.to_string(),
            source,
        })?;
        let (dir, rule) = match files {
            VoiceFiles::Chatterbox { dir, model } => {
                use ferrovox_voices::ChatterboxModel as M;
                let turbo = matches!(model, M::Turbo | M::Nano);
                (
                    dir,
                    if turbo {
                        ReferenceRule::TURBO
                    } else {
                        ReferenceRule::CHATTERBOX
                    },
                )
            }
            other => {
                return Err(CloneError::NotClonable {
                    model: model.to_string(),
                    family: other.family(),
                })
            }
        };
        let version = chatterbox::encoders_version(model, &dir)?;
        let registered = Arc::new(Registered {
            model: ClonableModel {
                id: model.to_string(),
                family: Family::Chatterbox,
                dir,
                version,
            },
            rate: chatterbox::CLONE_RATE,
            limits: if rule == ReferenceRule::TURBO {
                ReferenceLimits::chatterbox_turbo()
            } else {
                ReferenceLimits::chatterbox()
            },
            rule,
            cloner: Mutex::new(None),
        });
        let mut models = self.lock();
        // Another thread may have registered it meanwhile: keep the first.
        if let Some(r) = models.iter().find(|r| r.model.id == model) {
            return Ok(r.clone());
        }
        models.push(registered.clone());
        Ok(registered)
    }

    fn cloner(&self, entry: &Registered) -> Result<Arc<VoiceCloner>, CloneError> {
        // Held while loading: a second clip for the same model waits for these encoders
        // instead of loading its own copy.
        let mut slot = entry.cloner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let started = std::time::Instant::now();
        let cloner = Arc::new(VoiceCloner::from_dir_as(
            &entry.model.dir,
            entry.rule,
            &self.device,
        )?);
        tracing::info!(
            model = %entry.model.id,
            seconds = started.elapsed().as_secs_f64(),
            "voice encoders loaded"
        );
        *slot = Some(cloner.clone());
        Ok(cloner)
    }
}

fn names(models: &[Arc<Registered>]) -> String {
    if models.is_empty() {
        return "(none)".into();
    }
    models
        .iter()
        .map(|r| format!("{} ({})", r.model.id, r.model.family.name()))
        .collect::<Vec<_>>()
        .join(", ")
}
