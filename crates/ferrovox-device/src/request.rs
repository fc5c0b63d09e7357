use std::str::FromStr;

use crate::{Error, Result};

/// Which device the caller asked for: `auto | cpu | cuda | cuda:N | metal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceRequest {
    /// CUDA, then Metal, then CPU: the first one that works.
    #[default]
    Auto,
    /// The host CPU.
    Cpu,
    /// A CUDA device; `None` means ordinal 0.
    Cuda(Option<usize>),
    /// The default Metal device.
    Metal,
}

impl DeviceRequest {
    /// The environment variable read by [`DeviceRequest::from_env`].
    pub const ENV: &'static str = "FERROVOX_DEVICE";

    /// Reads `FERROVOX_DEVICE`; unset or empty means `auto`.
    pub fn from_env() -> Result<Self> {
        match std::env::var(Self::ENV) {
            Ok(value) if !value.trim().is_empty() => value.parse(),
            _ => Ok(Self::Auto),
        }
    }
}

impl FromStr for DeviceRequest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(None)),
            "metal" | "mps" => Ok(Self::Metal),
            other => match other.strip_prefix("cuda:") {
                Some(ordinal) => ordinal
                    .parse::<usize>()
                    .map(|n| Self::Cuda(Some(n)))
                    .map_err(|_| Error::InvalidRequest(s.to_string())),
                None => Err(Error::InvalidRequest(s.to_string())),
            },
        }
    }
}

impl std::fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(None) => f.write_str("cuda"),
            Self::Cuda(Some(n)) => write!(f, "cuda:{n}"),
            Self::Metal => f.write_str("metal"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_form() {
        assert_eq!(
            "auto".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Auto
        );
        assert_eq!(
            " CPU ".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Cpu
        );
        assert_eq!(
            "cuda".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Cuda(None)
        );
        assert_eq!(
            "cuda:3".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Cuda(Some(3))
        );
        assert_eq!(
            "metal".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Metal
        );
    }

    #[test]
    fn rejects_garbage_with_the_input_in_the_message() {
        for bad in ["tpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            let err = bad.parse::<DeviceRequest>().unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for req in [
            DeviceRequest::Auto,
            DeviceRequest::Cpu,
            DeviceRequest::Cuda(None),
            DeviceRequest::Cuda(Some(1)),
            DeviceRequest::Metal,
        ] {
            assert_eq!(req.to_string().parse::<DeviceRequest>().unwrap(), req);
        }
    }
}
