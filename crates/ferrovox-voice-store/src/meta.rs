use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The metadata format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Length of a voice id in hex characters (128 bits of a sha256).
pub const ID_LEN: usize = 32;

/// File name of an entry's metadata object, the entry's commit point.
pub const META_FILE: &str = "voice.json";

const PAYLOAD_PREFIX: &str = "conditionals-";
const PAYLOAD_SUFFIX: &str = ".safetensors";

/// Domain separator of the id hash, so that a future key scheme cannot collide with this one.
const ID_DOMAIN: &[u8] = b"ferrovox-voice-id/1";

/// Whether `text` is a well-formed voice id: exactly 32 lowercase hex characters. Such a string
/// is safe as a path segment and in a URL without escaping.
pub fn is_valid_id(text: &str) -> bool {
    text.len() == ID_LEN && text.bytes().all(is_lower_hex)
}

/// `text` if it is a well-formed voice id, else [`Error::InvalidId`].
pub fn validate_id(text: &str) -> Result<&str> {
    if is_valid_id(text) {
        Ok(text)
    } else {
        Err(Error::invalid_id(text))
    }
}

/// The id a voice gets: the first 32 hex characters of a sha256 over the clip's decoded-samples
/// hash, the family, the model version and the canonical JSON of the encoder parameters, each
/// length-prefixed so no two different tuples hash the same bytes.
///
/// Callers can compute it before running the encoder and skip the encoder when
/// [`VoiceStore::meta`](crate::VoiceStore::meta) already finds the voice. `source_hash` is
/// lowercased first, so upper- and lowercase spellings of one hash give one id.
pub fn voice_id(
    source_hash: &str,
    family: &str,
    model_version: &str,
    encoder_params: &Value,
) -> Result<String> {
    let source_hash = normalize_source_hash(source_hash)?;
    let params = canonical_json(encoder_params);
    let mut hasher = Sha256::new();
    hasher.update(ID_DOMAIN);
    for field in [
        source_hash.as_bytes(),
        family.as_bytes(),
        model_version.as_bytes(),
        params.as_bytes(),
    ] {
        hasher.update((field.len() as u64).to_le_bytes());
        hasher.update(field);
    }
    let mut id = hex(&hasher.finalize());
    id.truncate(ID_LEN);
    Ok(id)
}

/// JSON with object keys sorted by their UTF-8 bytes, no whitespace, and floats that hold an
/// integer (below 2^53) written as that integer, so that `{"b":1,"a":2.0}` and `{"a":2,"b":1}`
/// give one key. Independent of serde_json's `preserve_order` feature, which another crate in
/// the build may switch on.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if n.is_f64() {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                    out.push_str(&(f as i64).to_string());
                    return;
                }
            }
            out.push_str(&n.to_string());
        }
        Value::String(s) => out.push_str(&json_string(s)),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&json_string(key));
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
    }
}

fn json_string(s: &str) -> String {
    // Serializing a `str` cannot fail; the fallback keeps this total without a panic path.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(is_lower_hex)
}

fn normalize_source_hash(source_hash: &str) -> Result<String> {
    let lower = source_hash.to_ascii_lowercase();
    if (16..=128).contains(&lower.len()) && lower.bytes().all(is_lower_hex) {
        Ok(lower)
    } else {
        Err(Error::InvalidVoice(format!(
            "source_hash must be 16 to 128 hex characters, got {:?}",
            source_hash.chars().take(140).collect::<String>()
        )))
    }
}

/// Name of the payload object of an entry whose conditionals hash to `sha256`. Naming payloads
/// by content means two writers racing on one id with different bytes never overwrite each
/// other's payload: the metadata that wins the commit names the payload it was written with.
pub(crate) fn payload_file(sha256: &str) -> String {
    format!("{PAYLOAD_PREFIX}{sha256}{PAYLOAD_SUFFIX}")
}

/// Whether an object name is a payload's (as opposed to the metadata or a stranger's file).
pub(crate) fn is_payload_file(name: &str) -> bool {
    name.strip_prefix(PAYLOAD_PREFIX)
        .and_then(|rest| rest.strip_suffix(PAYLOAD_SUFFIX))
        .is_some_and(is_sha256_hex)
}

/// What a caller hands to [`VoiceStore::add`](crate::VoiceStore::add): a clip encoded by a
/// model family's encoder.
#[derive(Clone)]
pub struct NewVoice {
    /// Display name; not a key (several voices may share one).
    pub name: String,
    /// Model family, e.g. `"chatterbox"`.
    pub family: String,
    pub model_id: String,
    pub model_version: String,
    /// The encoder's parameters; part of the key through their canonical JSON.
    pub encoder_params: Value,
    /// Hex hash of the clip's decoded samples, computed by the caller.
    pub source_hash: String,
    pub duration_s: f64,
    pub loudness_lufs: f64,
    /// The family's conditionals as a safetensors file; opaque to the store.
    pub conditionals: Vec<u8>,
    /// A reference to the speaker's consent to being cloned (OpenAI's consent recording id),
    /// kept with the voice; not part of its key.
    pub consent: Option<String>,
}

impl fmt::Debug for NewVoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewVoice")
            .field("name", &self.name)
            .field("family", &self.family)
            .field("model_id", &self.model_id)
            .field("model_version", &self.model_version)
            .field("encoder_params", &self.encoder_params)
            .field("source_hash", &self.source_hash)
            .field("duration_s", &self.duration_s)
            .field("loudness_lufs", &self.loudness_lufs)
            .field("conditionals_bytes", &self.conditionals.len())
            .field("consent", &self.consent)
            .finish()
    }
}

/// The metadata object of a stored voice (`<prefix>/<id>/voice.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoiceMeta {
    pub format_version: u32,
    pub id: String,
    pub name: String,
    pub family: String,
    pub model_id: String,
    pub model_version: String,
    pub encoder_params: Value,
    /// Lowercase hex hash of the clip's decoded samples.
    pub source_hash: String,
    pub duration_s: f64,
    pub loudness_lufs: f64,
    /// When the voice was first added; RFC 3339 in UTC with millisecond precision on disk.
    #[serde(with = "rfc3339")]
    pub created: DateTime<Utc>,
    /// sha256 of the payload (the conditionals), lowercase hex.
    pub payload_sha256: String,
    /// Length of the payload in bytes.
    pub payload_bytes: u64,
    /// The reference to the speaker's consent given when the voice was added, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<String>,
}

impl VoiceMeta {
    /// Builds the metadata for `voice`, validating what can be validated before anything is
    /// written.
    pub(crate) fn for_new(voice: &NewVoice, created: DateTime<Utc>) -> Result<Self> {
        check_name(&voice.name)?;
        for (field, value, max) in [
            ("family", &voice.family, 64),
            ("model_id", &voice.model_id, 256),
            ("model_version", &voice.model_version, 256),
        ] {
            if value.trim().is_empty() || value.len() > max || value.chars().any(char::is_control) {
                return Err(Error::InvalidVoice(format!(
                    "{field} must be 1 to {max} bytes without control characters, got {:?}",
                    value.chars().take(max + 8).collect::<String>()
                )));
            }
        }
        if !(voice.duration_s.is_finite() && voice.duration_s >= 0.0) {
            return Err(Error::InvalidVoice(format!(
                "duration_s must be finite and not negative, got {}",
                voice.duration_s
            )));
        }
        // JSON has no infinities: a silent clip's -inf LUFS has to be mapped by the caller.
        if !voice.loudness_lufs.is_finite() {
            return Err(Error::InvalidVoice(format!(
                "loudness_lufs must be finite, got {}",
                voice.loudness_lufs
            )));
        }
        if let Some(consent) = &voice.consent {
            if consent.trim().is_empty()
                || consent.len() > 256
                || consent.chars().any(char::is_control)
            {
                return Err(Error::InvalidVoice(format!(
                    "consent must be 1 to 256 bytes without control characters, got {:?}",
                    consent.chars().take(264).collect::<String>()
                )));
            }
        }
        if voice.conditionals.is_empty() {
            return Err(Error::InvalidVoice("conditionals are empty".into()));
        }
        let source_hash = normalize_source_hash(&voice.source_hash)?;
        let id = voice_id(
            &source_hash,
            &voice.family,
            &voice.model_version,
            &voice.encoder_params,
        )?;
        Ok(VoiceMeta {
            format_version: FORMAT_VERSION,
            id,
            name: voice.name.clone(),
            family: voice.family.clone(),
            model_id: voice.model_id.clone(),
            model_version: voice.model_version.clone(),
            encoder_params: voice.encoder_params.clone(),
            source_hash,
            duration_s: voice.duration_s,
            loudness_lufs: voice.loudness_lufs,
            // The stored form has milliseconds; the returned metadata must equal what is read back.
            created: created.trunc_subsecs(3),
            payload_sha256: sha256_hex(&voice.conditionals),
            payload_bytes: voice.conditionals.len() as u64,
            consent: voice.consent.clone(),
        })
    }

    /// Parses the metadata object found under `id`, checking everything that later becomes an
    /// object path or is compared against the payload.
    pub(crate) fn parse(id: &str, bytes: &[u8]) -> Result<Self> {
        let meta: VoiceMeta = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(id, format!("{META_FILE} does not parse: {e}")))?;
        if meta.format_version != FORMAT_VERSION {
            return Err(Error::corrupt(
                id,
                format!(
                    "{META_FILE} has format version {}, this build reads {FORMAT_VERSION}",
                    meta.format_version
                ),
            ));
        }
        if meta.id != id {
            return Err(Error::corrupt(
                id,
                format!(
                    "{META_FILE} names id {:?}, not the id it is stored under",
                    meta.id.chars().take(80).collect::<String>()
                ),
            ));
        }
        if !is_sha256_hex(&meta.payload_sha256) {
            return Err(Error::corrupt(
                id,
                format!("{META_FILE} has a malformed payload_sha256"),
            ));
        }
        Ok(meta)
    }

    /// The metadata object's bytes.
    pub(crate) fn to_json(&self) -> Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::InvalidVoice(format!("metadata does not serialize: {e}")))?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Name of this entry's payload object.
    pub fn payload_file(&self) -> String {
        payload_file(&self.payload_sha256)
    }
}

pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(Error::InvalidVoice(format!(
            "name must be 1 to 256 bytes, not blank, without control characters, got {:?}",
            name.chars().take(264).collect::<String>()
        )));
    }
    Ok(())
}

/// Whether [`VoiceStore::add`](crate::VoiceStore::add) stored a new entry or found the voice
/// already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// This call committed the entry.
    New,
    /// The same voice (same key) was already stored, or another writer committed it first; the
    /// returned metadata is the stored one, with its first name.
    Existing,
}

/// A voice loaded by [`VoiceStore::get`](crate::VoiceStore::get): its metadata and its
/// conditionals, whose length and sha256 have been checked against the metadata.
#[derive(Clone)]
pub struct StoredVoice {
    pub meta: VoiceMeta,
    pub conditionals: bytes::Bytes,
}

impl fmt::Debug for StoredVoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredVoice")
            .field("meta", &self.meta)
            .field("conditionals_bytes", &self.conditionals.len())
            .finish()
    }
}

mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_and_normalizes_integral_floats() {
        let a = json!({"b": 1, "a": [2.0, 0.5, "x\"y"], "c": {"z": null, "y": true}});
        let b = json!({"c": {"y": true, "z": null}, "a": [2, 0.5, "x\"y"], "b": 1.0});
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            canonical_json(&a),
            r#"{"a":[2,0.5,"x\"y"],"b":1,"c":{"y":true,"z":null}}"#
        );
    }

    #[test]
    fn id_depends_on_every_key_field_and_only_those() {
        let h = "ab".repeat(32);
        let p = json!({"exaggeration": 0.5});
        let base = voice_id(&h, "chatterbox", "1", &p).unwrap();
        assert!(is_valid_id(&base));
        assert_eq!(
            base,
            voice_id(&h.to_uppercase(), "chatterbox", "1", &p).unwrap()
        );
        assert_ne!(
            base,
            voice_id(&"cd".repeat(32), "chatterbox", "1", &p).unwrap()
        );
        assert_ne!(base, voice_id(&h, "kokoro", "1", &p).unwrap());
        assert_ne!(base, voice_id(&h, "chatterbox", "2", &p).unwrap());
        assert_ne!(
            base,
            voice_id(&h, "chatterbox", "1", &json!({"exaggeration": 0.6})).unwrap()
        );
        // Length prefixes: moving a byte from one field to the next changes the id.
        assert_ne!(
            voice_id(&h, "ab", "c", &p).unwrap(),
            voice_id(&h, "a", "bc", &p).unwrap()
        );
        assert!(voice_id("xyz", "chatterbox", "1", &p).is_err());
    }

    #[test]
    fn payload_names_round_trip() {
        let sha = sha256_hex(b"x");
        assert!(is_payload_file(&payload_file(&sha)));
        assert!(!is_payload_file("conditionals-.safetensors"));
        assert!(!is_payload_file(META_FILE));
        assert!(!is_payload_file(&format!(
            "conditionals-{}.safetensors",
            "A".repeat(64)
        )));
    }
}
