//! The engine a service holds: voices loaded once (warmed up at load), shared across threads,
//! each behind an optional dynamic batcher.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use candle_core::Device;

use crate::stream::{prepare_text, stream_units, Piecewise};
use crate::{
    Audio, Batcher, BatcherConfig, BatcherStats, EngineError, SynthesisOptions, TtsModel, Unit,
};

/// How the engine runs its voices.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Device the voices load onto.
    pub device: Device,
    /// Dynamic batching of concurrent requests; `None` runs each request on its own thread.
    pub batching: Option<BatcherConfig>,
    /// Synthesize a short sentence at load so the first request pays no cold-start cost.
    pub warm_up: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            batching: Some(BatcherConfig::default()),
            warm_up: true,
        }
    }
}

/// Text each voice speaks at load when warm-up is on.
pub const WARM_UP_TEXT: &str = "Hello.";

/// A loaded voice: the model, its batcher, and what loading it cost.
pub struct Voice {
    model: Arc<dyn TtsModel>,
    batcher: Option<Batcher>,
    load_time: Duration,
    warm_up_time: Option<Duration>,
}

impl std::fmt::Debug for Voice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Voice")
            .field("id", &self.model.id())
            .field("batched", &self.batcher.is_some())
            .field("load_time", &self.load_time)
            .field("warm_up_time", &self.warm_up_time)
            .finish()
    }
}

impl Voice {
    /// Wraps `model`, starting its batcher when `batching` is given and the model does not
    /// batch requests itself.
    pub fn new(model: Arc<dyn TtsModel>, batching: Option<BatcherConfig>) -> Self {
        Self {
            batcher: batching
                .filter(|_| !model.batches_requests())
                .map(|config| Batcher::new(model.clone(), config)),
            model,
            load_time: Duration::ZERO,
            warm_up_time: None,
        }
    }

    /// The model.
    pub fn model(&self) -> &Arc<dyn TtsModel> {
        &self.model
    }

    /// Time spent loading the weights.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// Time the warm-up synthesis took, when one ran.
    pub fn warm_up_time(&self) -> Option<Duration> {
        self.warm_up_time
    }

    /// What the batcher has run; `None` without batching.
    pub fn batcher_stats(&self) -> Option<BatcherStats> {
        self.batcher.as_ref().map(Batcher::stats)
    }

    /// Synthesizes units, through the batcher when there is one. A full batch queue is
    /// refused with [`EngineError::Overloaded`].
    pub fn synthesize_units(
        &self,
        units: Vec<Unit>,
        options: &SynthesisOptions,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        options.validate_common()?;
        self.model.validate(options)?;
        match &self.batcher {
            Some(b) => b.synthesize_units(units, options.clone()),
            None => self.model.synthesize_units(&units, options),
        }
    }

    /// Validates `options` and splits `text` into units (normalizing first when
    /// `options.normalize` is set), each with its own seed.
    pub fn prepare(
        &self,
        text: &str,
        options: &SynthesisOptions,
    ) -> Result<Vec<Unit>, EngineError> {
        prepare_text(self.model.as_ref(), text, options)
    }

    /// Text to audio, handed to `sink` as soon as each piece is final: whole units as they
    /// finish (units of concurrent requests share batches), and an autoregressive model's
    /// audio while it is still generating.
    pub fn stream(
        &self,
        text: &str,
        options: &SynthesisOptions,
        sink: &mut dyn FnMut(&[f32]) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        // A batched voice sends its first unit through the batch like the rest.
        let piecewise = if self.batcher.is_some() {
            Piecewise::Required
        } else {
            Piecewise::AsModel
        };
        self.stream_with(text, options, piecewise, true, sink)
    }

    /// `queued`: whole units go through the batcher (when there is one). A panic on the way
    /// (in the model, or in `sink`) is this request's [`EngineError::Panicked`].
    fn stream_with(
        &self,
        text: &str,
        options: &SynthesisOptions,
        piecewise: Piecewise,
        queued: bool,
        sink: &mut dyn FnMut(&[f32]) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        crate::panic::guarded(self.model.id(), || {
            let _span =
                tracing::info_span!("synthesize", voice = self.model.id(), chars = text.len())
                    .entered();
            let units = {
                let _prepare = tracing::info_span!("prepare").entered();
                self.prepare(text, options)?
            };
            stream_units(
                self.model.as_ref(),
                &units,
                options,
                piecewise,
                &mut |unit| {
                    let mut out = match &self.batcher {
                        Some(b) if queued => {
                            b.synthesize_units(vec![unit.clone()], options.clone())?
                        }
                        _ => self
                            .model
                            .synthesize_units(std::slice::from_ref(unit), options)?,
                    };
                    Ok(out.pop().unwrap_or_default())
                },
                sink,
            )
        })
    }

    /// Text to audio in one piece.
    pub fn synthesize(&self, text: &str, options: &SynthesisOptions) -> Result<Audio, EngineError> {
        crate::stream::collect(self.model.sample_rate(), |sink| {
            self.stream_with(text, options, Piecewise::Required, true, sink)
        })
    }

    /// The model's own warm-up request ([`TtsModel::warm_up_request`]) through the same path
    /// as every request, but past the batch queue (a health check must not wait behind
    /// requests): what warm-up and health checks run.
    pub fn check(&self) -> Result<Audio, EngineError> {
        let (text, options) = self.model.warm_up_request();
        crate::stream::collect(self.model.sample_rate(), |sink| {
            self.stream_with(&text, &options, Piecewise::Required, false, sink)
        })
    }

    /// Runs [`Voice::check`] once and records how long it took.
    pub fn warm_up(&mut self) -> Result<Duration, EngineError> {
        let start = Instant::now();
        self.check()?;
        let took = start.elapsed();
        self.warm_up_time = Some(took);
        Ok(took)
    }
}

/// Voices by id, loaded on first use and shared by every caller.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    voices: RwLock<BTreeMap<String, Arc<Voice>>>,
    // Serializes loads so two requests for a cold voice load it once.
    loading: std::sync::Mutex<()>,
}

impl Engine {
    /// An engine with no voices loaded yet.
    pub fn new(config: EngineConfig) -> Self {
        Self {
            config,
            voices: RwLock::new(BTreeMap::new()),
            loading: std::sync::Mutex::new(()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The voice `id` if it is loaded.
    pub fn get(&self, id: &str) -> Option<Arc<Voice>> {
        self.voices
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// The voice `id`, loading (and warming up) it first if needed.
    pub fn voice(&self, id: &str) -> Result<Arc<Voice>, EngineError> {
        if let Some(v) = self.get(id) {
            return Ok(v);
        }
        let _guard = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = self.get(id) {
            return Ok(v);
        }
        let start = Instant::now();
        let model = crate::open_voice(id, &self.config.device)?;
        let load_time = start.elapsed();
        tracing::info!(
            voice = id,
            seconds = load_time.as_secs_f64(),
            "voice loaded"
        );
        self.insert_timed(model, load_time)
    }

    /// Adds a model built elsewhere (a custom [`TtsModel`]) under its own id.
    pub fn insert(&self, model: Arc<dyn TtsModel>) -> Result<Arc<Voice>, EngineError> {
        self.insert_timed(model, Duration::ZERO)
    }

    fn insert_timed(
        &self,
        model: Arc<dyn TtsModel>,
        load_time: Duration,
    ) -> Result<Arc<Voice>, EngineError> {
        let id = model.id().to_string();
        let mut voice = Voice::new(model, self.config.batching);
        voice.load_time = load_time;
        if self.config.warm_up {
            let took = voice.warm_up()?;
            tracing::info!(voice = %id, ms = took.as_secs_f64() * 1e3, "voice warmed up");
        }
        let voice = Arc::new(voice);
        self.voices
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, voice.clone());
        Ok(voice)
    }

    /// Ids of the loaded voices, sorted.
    pub fn loaded(&self) -> Vec<String> {
        self.voices
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }
}
