//! Reading what a checkpoint file holds before building a model from it, so a wrong or damaged
//! file is named as such rather than failing on its first missing tensor.

use std::path::Path;

/// The tensor names of a safetensors file; an unreadable header is described.
pub fn tensor_names(path: &Path) -> Result<Vec<String>, String> {
    // SAFETY: the file is mapped read-only for the length of this call.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }
        .map_err(|e| format!("not a readable safetensors file ({e})"))?;
    Ok(st.tensors().into_iter().map(|(name, _)| name).collect())
}
