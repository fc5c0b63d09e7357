//! Device selection: an explicit request is met or refused with the reason; `auto` walks CUDA,
//! Metal, CPU and keeps why each earlier backend was passed over.

use candle_core::Device;
use serde::Serialize;

use crate::{BackendKind, DeviceRequest, Error, Result};

/// A backend that `auto` passed over, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// The backend that was not used.
    pub backend: BackendKind,
    /// Why: not compiled in, no driver, ordinal out of range, ...
    pub reason: String,
}

/// The device a model runs on.
#[derive(Debug, Clone)]
pub struct Selection {
    /// The Candle device.
    pub device: Device,
    /// Its backend.
    pub kind: BackendKind,
    /// Device ordinal (0 for CPU).
    pub ordinal: usize,
    /// Human-readable name (GPU model, or the CPU model string).
    pub name: String,
    /// CUDA compute capability `(major, minor)`.
    pub compute_capability: Option<(i32, i32)>,
    /// Backends tried before this one, with reasons.
    pub skipped: Vec<Skipped>,
}

/// Selects a device for `request`.
pub fn select(request: &DeviceRequest) -> Result<Selection> {
    match request {
        DeviceRequest::Cpu => Ok(cpu(Vec::new())),
        DeviceRequest::Cuda(ordinal) => {
            open_cuda(ordinal.unwrap_or(0)).map_err(|reason| Error::Unavailable {
                requested: request.to_string(),
                reason,
            })
        }
        DeviceRequest::Metal => open_metal().map_err(|reason| Error::Unavailable {
            requested: request.to_string(),
            reason,
        }),
        DeviceRequest::Auto => {
            let mut skipped = Vec::new();
            match open_cuda(0) {
                Ok(sel) => return Ok(sel),
                Err(reason) => skipped.push(Skipped {
                    backend: BackendKind::Cuda,
                    reason,
                }),
            }
            match open_metal() {
                Ok(mut sel) => {
                    sel.skipped = skipped;
                    return Ok(sel);
                }
                Err(reason) => skipped.push(Skipped {
                    backend: BackendKind::Metal,
                    reason,
                }),
            }
            Ok(cpu(skipped))
        }
    }
}

fn cpu(skipped: Vec<Skipped>) -> Selection {
    Selection {
        device: Device::Cpu,
        kind: BackendKind::Cpu,
        ordinal: 0,
        name: crate::threads::cpu_model_name().unwrap_or_else(|| "cpu".to_string()),
        compute_capability: None,
        skipped,
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> std::result::Result<Selection, String> {
    use candle_core::cuda_backend::cudarc::driver::{result, sys, CudaContext};
    let count = CudaContext::device_count().map_err(|e| format!("no usable CUDA driver: {e}"))?;
    if count <= 0 {
        return Err("the CUDA driver reports no devices".to_string());
    }
    if ordinal >= count as usize {
        return Err(format!(
            "ordinal {ordinal} out of range: {count} CUDA device(s)"
        ));
    }
    let device =
        Device::new_cuda(ordinal).map_err(|e| format!("cannot open cuda:{ordinal}: {e}"))?;
    let ctx = CudaContext::new(ordinal).map_err(|e| e.to_string())?;
    let major = ctx
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
        .map_err(|e| e.to_string())?;
    let minor = ctx
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
        .map_err(|e| e.to_string())?;
    let name = result::device::get(ordinal as i32)
        .and_then(result::device::get_name)
        .unwrap_or_else(|_| format!("cuda:{ordinal}"));
    Ok(Selection {
        device,
        kind: BackendKind::Cuda,
        ordinal,
        name,
        compute_capability: Some((major, minor)),
        skipped: Vec::new(),
    })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_ordinal: usize) -> std::result::Result<Selection, String> {
    Err("not compiled in (build with --features cuda)".to_string())
}

#[cfg(feature = "metal")]
fn open_metal() -> std::result::Result<Selection, String> {
    let device = Device::new_metal(0).map_err(|e| format!("no Metal device: {e}"))?;
    Ok(Selection {
        device,
        kind: BackendKind::Metal,
        ordinal: 0,
        name: "metal:0".to_string(),
        compute_capability: None,
        skipped: Vec::new(),
    })
}

#[cfg(not(feature = "metal"))]
fn open_metal() -> std::result::Result<Selection, String> {
    Err("not compiled in (build with --features metal)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_records_why_each_backend_was_skipped() {
        let sel = select(&DeviceRequest::Auto).unwrap();
        if !cfg!(feature = "cuda") && !cfg!(feature = "metal") {
            assert_eq!(sel.kind, BackendKind::Cpu);
            let backends: Vec<_> = sel.skipped.iter().map(|s| s.backend).collect();
            assert_eq!(backends, [BackendKind::Cuda, BackendKind::Metal]);
            assert!(sel.skipped[0].reason.contains("not compiled in"));
        }
    }

    #[test]
    fn explicit_request_never_falls_back_to_cpu() {
        if cfg!(feature = "cuda") {
            return;
        }
        let err = select(&DeviceRequest::Cuda(Some(0)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cuda:0") && err.contains("not compiled in"),
            "{err}"
        );
    }
}
