use serde::Serialize;

/// The compute backends ferrovox knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// NVIDIA GPUs through Candle's CUDA backend.
    Cuda,
    /// Apple GPUs through Candle's Metal backend.
    Metal,
    /// The host CPU.
    Cpu,
}

impl BackendKind {
    /// Whether this build was compiled with the backend.
    pub fn compiled_in(self) -> bool {
        match self {
            BackendKind::Cuda => cfg!(feature = "cuda"),
            BackendKind::Metal => cfg!(feature = "metal"),
            BackendKind::Cpu => true,
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Cuda => "cuda",
            BackendKind::Metal => "metal",
            BackendKind::Cpu => "cpu",
        })
    }
}
