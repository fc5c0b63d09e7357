//! The store of cloned voices.
//!
//! A user uploads a clip; a model family's encoder turns it into that family's *conditionals*
//! (a safetensors file, opaque here); this crate keeps them, with their metadata, so that every
//! later request can use the voice by id. The server and the CLI use it; the model and engine
//! crates must not, as it brings an HTTP client and TLS through `object_store`.
//!
//! # Keys and ids
//!
//! A voice's id is the first 32 hex characters of a sha256 over the clip's decoded-samples hash
//! (given by the caller), the family, the model version and the canonical JSON of the encoder
//! parameters ([`voice_id`], [`canonical_json`]). Adding the same clip again for the same model
//! and parameters therefore finds the stored entry ([`Added::Existing`]) and keeps its first
//! name; [`VoiceStore::rename`] changes a name on request. Ids are lowercase hex, safe in paths
//! and URLs; every id a caller passes is checked ([`Error::InvalidId`]) before any object path
//! is built from it. Names are labels, not keys: [`VoiceStore::find_by_name`] resolves a name
//! only when exactly one voice carries it.
//!
//! # Object layout
//!
//! ```text
//! <prefix>/<id>/voice.json                           metadata (JSON), the commit point
//! <prefix>/<id>/conditionals-<sha256>.safetensors    the conditionals, named by their sha256
//! ```
//!
//! `<prefix>` is the directory's root, or the key prefix of an `s3://bucket/prefix` location.
//! `voice.json` holds [`VoiceMeta`]: id, name, family, model id and version, encoder
//! parameters, source clip hash, duration, loudness, creation time (RFC 3339, UTC), the
//! payload's sha256 and length, and the format version ([`FORMAT_VERSION`]). Objects under the
//! prefix that do not fit this layout are ignored, never touched.
//!
//! # Writes and atomicity
//!
//! [`VoiceStore::add`] writes the payload first and the metadata last; each object write is
//! atomic (a rename of a staged file for a directory, with fsync; a single PUT for S3). The
//! metadata is written create-if-absent (`PutMode::Create`: a hard link for a directory,
//! `If-None-Match: *` for S3): when two writers, in one process or several, add the same voice
//! at once, one commits and the other gets the committed entry back as [`Added::Existing`]. The
//! payload is named by its hash, so a losing writer whose encoder produced different bytes
//! never overwrites the winner's payload; it removes its own. On an S3-compatible server without
//! conditional writes (or with `AWS_CONDITIONAL_PUT=disabled`) the commit falls back to
//! check-then-write, where two simultaneous writers can both report [`Added::New`] and the later
//! metadata wins; either way every committed metadata names a payload that exists.
//!
//! An entry without metadata does not exist for [`VoiceStore::list`] and [`VoiceStore::get`]:
//! a writer killed after the payload leaves an *orphan*, which
//! [`VoiceStore::sweep_orphans`] removes once it is older than a given age.
//! [`VoiceStore::stage`] and [`VoiceStore::commit`] are the two halves of `add`, for callers
//! that want to upload before deciding to publish.
//!
//! # Corruption
//!
//! Nothing broken is served. A metadata object that does not parse or does not describe its id,
//! a payload that is missing, or one whose length or sha256 differs from the metadata is an
//! [`Error::Corrupt`] naming the id and what is wrong. [`VoiceStore::get`] verifies length and
//! checksum on every read from the backend; [`VoiceStore::meta`] and [`VoiceStore::list`] check
//! that the payload exists with the recorded length; [`VoiceStore::scan`] reports the broken
//! entries that `list` leaves out. A corrupt entry stays until [`VoiceStore::delete`] removes it
//! (adding the same voice again reports the corruption rather than hiding it).
//!
//! # Cache
//!
//! Loaded payloads are kept in memory, least recently used first out, bounded by their total
//! length ([`StoreOptions::cache_bytes`], default 256 MiB). A cached voice is still revalidated
//! on each `get` (its metadata read, its payload object's version compared), so a delete,
//! rename or overwrite made by another process, or a payload changed in place, is never served
//! from memory. [`VoiceStore`] is `Clone + Send + Sync`; clones share the cache.
//!
//! # Locations and environment
//!
//! [`VoiceStore::open`] takes `None` for the default directory, or a location string:
//!
//! - a directory path (`~/` expands to `$HOME`), or `file:///abs/dir`;
//! - `s3://bucket/prefix`.
//!
//! The default directory is `$XDG_CACHE_HOME/ferrovox/voices/cloned`, or
//! `$HOME/.cache/ferrovox/voices/cloned` ([`default_dir`]). The crate reads no location from the
//! environment itself: callers read `FERROVOX_VOICE_STORE` ([`LOCATION_ENV`]) and pass it on.
//!
//! S3 is configured from the usual variables ([`S3Settings::from_env`]): `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` (else `AWS_DEFAULT_REGION`, else
//! `us-east-1`), and for an S3-compatible server `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT`,
//! `AWS_ENDPOINT_URL_S3`) with path-style requests, plain HTTP allowed when the endpoint is
//! `http://` (or `AWS_ALLOW_HTTP=true`). object_store's other `AWS_*` variables apply as well.
//! Without static keys, a web-identity or container credential source (or
//! `AWS_SKIP_SIGNATURE=true`) must be named in the environment; otherwise opening fails with
//! [`Error::Config`] rather than waiting on the EC2 metadata service.
//!
//! For callers without a runtime, [`BlockingVoiceStore`] wraps the store with its own
//! current-thread tokio runtime.

mod blocking;
mod cache;
mod error;
mod location;
mod meta;
mod store;

pub use blocking::BlockingVoiceStore;
pub use cache::CacheStats;
pub use error::{Error, Result};
pub use location::{default_dir, S3Settings, LOCATION_ENV};
pub use meta::{
    canonical_json, is_valid_id, validate_id, voice_id, Added, NewVoice, StoredVoice, VoiceMeta,
    FORMAT_VERSION, ID_LEN, META_FILE,
};
pub use store::{
    CorruptEntry, Scan, StagedVoice, StoreOptions, SweepReport, VoiceStore, DEFAULT_CACHE_BYTES,
};

/// The object store types this crate's API mentions, so callers need not depend on the same
/// `object_store` version themselves.
pub use object_store;
