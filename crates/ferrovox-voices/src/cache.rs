//! The cache directory and its completeness marker.

use std::path::{Path, PathBuf};

/// `$FERROVOX_CACHE`, else `$XDG_CACHE_HOME/ferrovox`, else `~/.cache/ferrovox`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FERROVOX_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("ferrovox");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/ferrovox"))
        .unwrap_or_else(|| std::env::temp_dir().join("ferrovox-cache"))
}

pub(crate) const COMPLETE: &str = ".complete";

/// A voice directory is complete once its marker exists (written last).
pub(crate) fn is_complete(dir: &Path) -> bool {
    dir.join(COMPLETE).is_file()
}
