//! Loading ferrovox's CUDA kernels: each `cuda/*.cu` file is one fatbin (built by `build.rs`
//! with SASS for the build's GPU, so loading needs no JIT), loaded once per device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaModule, CudaView};
use candle_core::cuda_backend::cudarc::nvrtc::Ptx;
use candle_core::cuda_backend::DeviceId;
use candle_core::{CudaDevice, CudaStorage, Layout, Result};

/// One compiled kernel file.
pub(super) struct Fatbin {
    name: &'static str,
    bytes: &'static [u8],
}

pub(super) static CONV1D: Fatbin = Fatbin {
    name: "conv1d",
    bytes: include_bytes!(concat!(env!("OUT_DIR"), "/conv1d.fatbin")),
};

pub(super) static SPLINE: Fatbin = Fatbin {
    name: "spline",
    bytes: include_bytes!(concat!(env!("OUT_DIR"), "/spline.fatbin")),
};

pub(super) static DECODE: Fatbin = Fatbin {
    name: "decode",
    bytes: include_bytes!(concat!(env!("OUT_DIR"), "/decode.fatbin")),
};

/// Every kernel file, for preloading and lookup by name.
pub(super) static FATBINS: [&Fatbin; 3] = [&CONV1D, &SPLINE, &DECODE];

#[derive(Default)]
struct Loaded {
    modules: HashMap<(DeviceId, &'static str), Arc<CudaModule>>,
    functions: HashMap<(DeviceId, String), CudaFunction>,
}

fn loaded() -> &'static Mutex<Loaded> {
    static LOADED: OnceLock<Mutex<Loaded>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

/// `fatbin`'s module on `dev`, loaded on first use.
pub(super) fn module(dev: &CudaDevice, fatbin: &'static Fatbin) -> Result<Arc<CudaModule>> {
    let mut l = loaded().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = l.modules.get(&(dev.id(), fatbin.name)) {
        return Ok(m.clone());
    }
    let m = dev
        .cuda_stream()
        .context()
        .load_module(Ptx::from_binary(fatbin.bytes.to_vec()))
        .map_err(candle_core::Error::wrap)?;
    l.modules.insert((dev.id(), fatbin.name), m.clone());
    Ok(m)
}

/// The module of the kernel file called `name` on `dev`.
pub(super) fn module_named(dev: &CudaDevice, name: &str) -> Result<Arc<CudaModule>> {
    match FATBINS.iter().find(|f| f.name == name) {
        Some(fatbin) => module(dev, fatbin),
        None => candle_core::bail!("no CUDA kernel file `{name}` in this build"),
    }
}

/// The kernel `name` of `fatbin` on `dev`.
pub(super) fn function(
    dev: &CudaDevice,
    fatbin: &'static Fatbin,
    name: &str,
) -> Result<CudaFunction> {
    let module = module(dev, fatbin)?;
    let mut l = loaded().lock().unwrap_or_else(|e| e.into_inner());
    let key = (dev.id(), format!("{}/{name}", fatbin.name));
    if let Some(f) = l.functions.get(&key) {
        return Ok(f.clone());
    }
    let f = module
        .load_function(name)
        .map_err(candle_core::Error::wrap)?;
    l.functions.insert(key, f.clone());
    Ok(f)
}

/// A contiguous f32 view of `storage` under `layout`; `what` names it in the error.
pub(super) fn view<'a>(
    what: &str,
    storage: &'a CudaStorage,
    layout: &Layout,
) -> Result<CudaView<'a, f32>> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("ferrovox's CUDA kernels: {what} is not contiguous");
    };
    Ok(storage.as_cuda_slice::<f32>()?.slice(start..end))
}
