//! The voice encoder (upstream `chatterbox.models.voice_encoder`): a 16 kHz reference clip to
//! the L2-normalised speaker embedding T3's conditioning starts with, loading the released
//! `ve.safetensors` under its own keys.
//!
//! | module | upstream |
//! |---|---|
//! | [`model`] | `voice_encoder/voice_encoder.py` (`VoiceEncoder`, partials, `embeds_from_wavs`) |
//! | [`config`] | `voice_encoder/config.py` (`VoiceEncConfig`) |
//! | [`melspec`] | `voice_encoder/melspec.py` (`melspectrogram`) |
//! | [`trim`] | `librosa.effects.trim`, as `embeds_from_wavs` calls it |

pub mod config;
pub mod melspec;
pub mod model;
pub mod trim;

pub use config::{MelType, VoiceEncConfig};
pub use melspec::MelSpec;
pub use model::{frame_step, num_wins, EmbedOptions, VoiceEncoder, DEFAULT_RATE, LSTM_LAYERS};
pub use trim::{frame_levels_db, trim_indices};
