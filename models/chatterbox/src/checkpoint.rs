//! Reading what a checkpoint file holds before building a model from it, so a wrong or damaged
//! file is named as such rather than failing on its first missing tensor.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::{Error, Result};

/// An [`Error::Checkpoint`] about the file at `path`.
pub fn error(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |reason| Error::Checkpoint {
        path: path.display().to_string(),
        reason,
    }
}

/// Runs a read through Candle's pickle reader, which panics on some damaged archives (an
/// integer opcode claiming more than 8 bytes overflows its shift): the panic becomes an error.
pub fn guarded_pickle<T>(
    read: impl FnOnce() -> candle_core::Result<T>,
) -> std::result::Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)) {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("a damaged PyTorch archive (its pickle does not decode)".into()),
    }
}

/// The tensors of the PyTorch archive at `path` (under `key`, as Candle's reader takes it),
/// read only once the archive is known not to make Candle allocate more than it holds:
/// Candle allocates what a pickle opcode or a tensor's shape claims before reading it, so a
/// damaged file of a few kilobytes could ask for gigabytes. Each pickle's lengths are walked
/// first ([`crate::pickle_scan`]), then each tensor is checked against its archive entry.
pub fn pickle_tensor_infos(
    path: &Path,
    key: Option<&str>,
) -> std::result::Result<Vec<candle_core::pickle::TensorInfo>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    // Deflate expands at most about 1032:1; torch.save stores its entries uncompressed.
    let most = file_len.saturating_mul(1032);
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| e.to_string())?;
    for i in 0..zip.len() {
        let entry = zip.by_index(i).map_err(|e| e.to_string())?;
        let name = entry.name().map_err(|e| e.to_string())?.into_owned();
        if !name.ends_with("data.pkl") {
            continue;
        }
        let mut pickle = Vec::new();
        entry
            .take(most)
            .read_to_end(&mut pickle)
            .map_err(|e| format!("{name}: {e}"))?;
        crate::pickle_scan::check_lengths(&pickle).map_err(|e| format!("{name}: {e}"))?;
    }
    let infos = guarded_pickle(|| candle_core::pickle::read_pth_tensor_info(path, false, key))?;
    for info in &infos {
        let entry = zip.by_name(&info.path).map_err(|e| {
            format!(
                "tensor {}: its data ({}) is missing: {e}",
                info.name, info.path
            )
        })?;
        let available = entry.size().min(most);
        let bytes = info
            .layout
            .dims()
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .and_then(|n| n.checked_add(info.layout.start_offset() as u64))
            .and_then(|n| n.checked_mul(info.dtype.size_in_bytes() as u64));
        if bytes.is_none_or(|b| b > available) {
            return Err(format!(
                "tensor {}: shape {:?} needs more than the {} bytes its data holds",
                info.name,
                info.layout.dims(),
                entry.size()
            ));
        }
    }
    Ok(infos)
}

/// Whether `path` is a PyTorch checkpoint (`torch.save` of a state dict: `.pt`, `.pth`,
/// `.bin`) rather than safetensors.
pub fn is_torch_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("pt" | "pth" | "bin")
    )
}

/// `build` over the checkpoint at `path`: a safetensors file mapped read-only, or a PyTorch
/// state dict ([`is_torch_file`]) read through Candle's pickle reader; what goes wrong
/// reading it (a tensor missing or misshapen) is an [`Error::Checkpoint`] naming the file.
pub fn build_mapped<T>(
    path: &Path,
    dtype: DType,
    device: &Device,
    build: impl FnOnce(VarBuilder) -> Result<T>,
) -> Result<T> {
    let checkpoint = error(path);
    let vb = if is_torch_file(path) {
        pickle_tensor_infos(path, None).map_err(&checkpoint)?;
        guarded_pickle(|| VarBuilder::from_pth(path, dtype, device)).map_err(&checkpoint)?
    } else {
        // SAFETY: the file is mapped read-only and not modified while the model lives.
        unsafe { VarBuilder::from_mmaped_safetensors(&[path], dtype, device) }
            .map_err(|e| checkpoint(e.to_string()))?
    };
    build(vb).map_err(|e| match e {
        Error::Candle(c) => checkpoint(c.to_string()),
        Error::Checkpoint { reason, .. } => checkpoint(reason),
        other => other,
    })
}

/// [`build_mapped`] once the file's whole key set checks out against `expected` (see
/// [`check_key_set`]).
pub fn load_checked<T>(
    path: &Path,
    expected: &[String],
    ignored: impl Fn(&str) -> bool,
    model: &str,
    dtype: DType,
    device: &Device,
    build: impl FnOnce(VarBuilder) -> Result<T>,
) -> Result<T> {
    let names = names_in(path).map_err(error(path))?;
    check_key_set(&names, "", expected, ignored, model).map_err(error(path))?;
    build_mapped(path, dtype, device, build)
}

/// The tensor names of a safetensors file or a PyTorch state dict ([`is_torch_file`]); an
/// unreadable header is described.
pub fn tensor_names(path: &Path) -> std::result::Result<Vec<String>, String> {
    if is_torch_file(path) {
        let infos = pickle_tensor_infos(path, None)
            .map_err(|e| format!("not a readable PyTorch state dict ({e})"))?;
        return Ok(infos.into_iter().map(|i| i.name).collect());
    }
    // SAFETY: the file is mapped read-only for the length of this call.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }
        .map_err(|e| format!("not a readable safetensors file ({e})"))?;
    Ok(st.tensors().into_iter().map(|(name, _)| name).collect())
}

/// The tensor names of the checkpoint at `path` (see [`tensor_names`]); an absent or
/// unreadable file is described.
pub fn names_in(path: &Path) -> std::result::Result<Vec<String>, String> {
    if !path.is_file() {
        return Err("file not found".into());
    }
    tensor_names(path)
}

/// Checks a file's tensor `names` under `scope` (a prefix, `""` for the whole file) against
/// the `expected` ones a model reads: a tensor the model does not have (another model's
/// file, or other sizes) is named first, then a missing one. `ignored` tensors may be present
/// or not (computed buffers, step counters, training-only tensors).
pub fn check_key_set(
    names: &[String],
    scope: &str,
    expected: &[String],
    ignored: impl Fn(&str) -> bool,
    model: &str,
) -> std::result::Result<(), String> {
    let list = |keys: &[&String]| {
        let shown: Vec<&str> = keys.iter().take(3).map(|s| s.as_str()).collect();
        match keys.len() - shown.len() {
            0 => shown.join(", "),
            more => format!("{} and {more} more", shown.join(", ")),
        }
    };
    let wanted: std::collections::HashSet<&String> = expected.iter().collect();
    let present: std::collections::HashSet<&String> = names.iter().collect();
    let unexpected: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with(scope) && !wanted.contains(n) && !ignored(n))
        .collect();
    if !unexpected.is_empty() {
        return Err(format!(
            "{} tensors {model} does not have (another model's file, or other sizes?): {}",
            unexpected.len(),
            list(&unexpected)
        ));
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|k| !ignored(k) && !present.contains(k))
        .collect();
    match missing.first() {
        None => Ok(()),
        Some(first) if missing.len() == 1 => Err(format!("missing tensor `{first}`")),
        Some(first) => Err(format!(
            "missing tensor `{first}` and {} more",
            missing.len() - 1
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn key_sets_name_unexpected_then_missing_tensors_within_their_scope() {
        let names = strings(&["p.a", "p.b", "p.buf", "q.x"]);
        let ignored = |k: &str| k == "p.buf" || k == "p.c";
        let check =
            |expected: &[&str]| check_key_set(&names, "p.", &strings(expected), ignored, "P");
        assert_eq!(check(&["p.a", "p.b"]), Ok(()));
        // An ignored tensor may be absent; another scope's tensors are not looked at.
        assert_eq!(check(&["p.a", "p.b", "p.c"]), Ok(()));
        let err = check(&["p.a", "p.b", "p.d"]).unwrap_err();
        assert_eq!(err, "missing tensor `p.d`");
        let err = check(&["p.a"]).unwrap_err();
        assert!(
            err.contains("P does not have") && err.contains("p.b") && !err.contains("q.x"),
            "{err}"
        );
        let err = check_key_set(&names, "", &strings(&["p.a", "p.b"]), ignored, "P").unwrap_err();
        assert!(err.contains("q.x"), "{err}");
    }
}
