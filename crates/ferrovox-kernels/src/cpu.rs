//! What this CPU can run, detected at run time (not the flags the binary was compiled with),
//! and which of those features ferrovox's kernels take.

/// The instruction-set extensions that matter to speech models' kernels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuFeatures {
    /// Every feature of [`KNOWN`] this CPU reports.
    pub detected: Vec<&'static str>,
    /// The detected features ferrovox's own kernels run on here (comma-separated), each with
    /// what runs on them.
    pub used: Vec<(&'static str, &'static str)>,
}

/// The features looked for, in the order they are reported.
#[cfg(target_arch = "x86_64")]
pub const KNOWN: &[&str] = &[
    "sse4.2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512dq",
    "avx512vnni",
    "avx512bf16",
    "avx512fp16",
    "amx-tile",
    "amx-bf16",
    "amx-int8",
];
#[cfg(target_arch = "aarch64")]
pub const KNOWN: &[&str] = &["neon", "fp16", "dotprod", "bf16", "i8mm", "sve", "sve2"];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub const KNOWN: &[&str] = &[];

#[cfg(target_arch = "x86_64")]
fn has(feature: &str) -> bool {
    use std::arch::is_x86_feature_detected as d;
    match feature {
        "sse4.2" => d!("sse4.2"),
        "avx" => d!("avx"),
        "avx2" => d!("avx2"),
        "fma" => d!("fma"),
        "f16c" => d!("f16c"),
        "avx512f" => d!("avx512f"),
        "avx512bw" => d!("avx512bw"),
        "avx512vl" => d!("avx512vl"),
        "avx512dq" => d!("avx512dq"),
        "avx512vnni" => d!("avx512vnni"),
        "avx512bf16" => d!("avx512bf16"),
        "avx512fp16" => d!("avx512fp16"),
        // `is_x86_feature_detected!` has no stable AMX names yet: CPUID leaf 7 says it.
        "amx-bf16" => amx_bit(22),
        "amx-tile" => amx_bit(24),
        "amx-int8" => amx_bit(25),
        _ => false,
    }
}

/// Bit `bit` of CPUID leaf 7's EDX (AMX support as the CPU reports it; whether the OS lets a
/// process use the tiles is a separate permission no kernel here asks for).
#[cfg(target_arch = "x86_64")]
fn amx_bit(bit: u32) -> bool {
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86-64 CPU, and leaf 7 is read only when the CPU has it.
    let edx = unsafe {
        if std::arch::x86_64::__cpuid(0).eax < 7 {
            return false;
        }
        std::arch::x86_64::__cpuid_count(7, 0).edx
    };
    edx & (1 << bit) != 0
}

#[cfg(target_arch = "aarch64")]
fn has(feature: &str) -> bool {
    use std::arch::is_aarch64_feature_detected as d;
    match feature {
        "neon" => d!("neon"),
        "fp16" => d!("fp16"),
        "dotprod" => d!("dotprod"),
        "bf16" => d!("bf16"),
        "i8mm" => d!("i8mm"),
        "sve" => d!("sve"),
        "sve2" => d!("sve2"),
        _ => false,
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn has(_: &str) -> bool {
    false
}

/// The features of this CPU, detected now.
pub fn cpu_features() -> CpuFeatures {
    let detected: Vec<&'static str> = KNOWN.iter().copied().filter(|f| has(f)).collect();
    let mut used = Vec::new();
    if crate::direct::cpu_has_avx512f() {
        used.push((
            "avx512f, avx512dq",
            "direct and Winograd convolutions, residual stages, tanh and gate, channel norm, transposes",
        ));
        used.push((
            "avx512f",
            "per-tap GEMMs (the gemm crate's AVX-512 microkernel)",
        ));
    } else if detected.contains(&"avx2") && detected.contains(&"fma") {
        used.push((
            "avx2, fma",
            "per-tap GEMMs (the gemm crate's AVX2 microkernel)",
        ));
    }
    CpuFeatures { detected, used }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_agrees_with_the_kernels_own_check() {
        let f = cpu_features();
        assert!(f.detected.iter().all(|d| KNOWN.contains(d)));
        assert_eq!(
            f.detected.contains(&"avx512f"),
            crate::direct::cpu_has_avx512f()
        );
        for (features, _) in &f.used {
            assert!(
                features.split(", ").all(|u| f.detected.contains(&u)),
                "{features}"
            );
        }
    }
}
