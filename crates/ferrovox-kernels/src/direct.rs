//! The direct convolution microkernel behind [`super::PackedConv1d`] on AVX-512 machines.
//!
//! The per-tap GEMM path runs one small GEMM per kernel tap (`K` = input channels, often 32),
//! so every tap packs its operands again and reloads and stores the whole output tile. Here a
//! block of 4 output channels × 96 samples stays in 24 vector registers for the entire
//! reduction over taps and input channels, reading the input window and a weight panel laid
//! out in reduction order: the output is touched once and nothing is packed per call.

/// Output channels per register block.
pub const CO_BLOCK: usize = 4;
/// Vectors of 16 samples per register block.
const VECS: usize = 6;
/// Samples per register block.
pub const COLS: usize = 16 * VECS;

/// Whether this CPU runs the microkernel: AVX-512F, and `FERROVOX_CONV_DIRECT` not `0` (the
/// switch exists to measure the kernel against the per-tap GEMM path).
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| !super::switched_off("FERROVOX_CONV_DIRECT") && cpu_has_avx512f())
}

/// Whether the CPU has AVX-512F (and DQ, which the vectorised activations use).
#[cfg(target_arch = "x86_64")]
pub fn cpu_has_avx512f() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512dq")
}

/// Whether the CPU has AVX-512F: never off x86-64.
#[cfg(not(target_arch = "x86_64"))]
pub fn cpu_has_avx512f() -> bool {
    false
}

/// Reorders a tap-major weight `[k][out][in]` into panels of [`CO_BLOCK`] output channels,
/// each `[k][in][CO_BLOCK]`: the order in which the microkernel reads them.
pub fn panels(tap_major: &[f32], cout: usize, cin: usize, kernel: usize) -> Vec<f32> {
    debug_assert_eq!(cout % CO_BLOCK, 0);
    let mut out = Vec::with_capacity(tap_major.len());
    for block in 0..cout / CO_BLOCK {
        for k in 0..kernel {
            for ci in 0..cin {
                for c in 0..CO_BLOCK {
                    let co = block * CO_BLOCK + c;
                    out.push(tap_major[(k * cout + co) * cin + ci]);
                }
            }
        }
    }
    out
}

/// One register block: `y[c][0..n] = bias[c] + Σ residuals[c][0..n] + Σ_k Σ_ci panel[k][ci][c]
/// · window[ci][k·dilation + 0..n]` for the block's [`CO_BLOCK`] output rows: the output is
/// written once, with no pass to initialise it.
///
/// # Safety
/// The CPU must have AVX-512F. `window` must be readable for `cin` rows of `win_stride`
/// values with `(kernel − 1)·dilation + COLS ≤ win_stride` past it; `panel` for
/// `kernel·cin·CO_BLOCK` values; `bias` for [`CO_BLOCK`] values; `y` writable and each
/// residual (when not null) readable for [`CO_BLOCK`] rows of `y_stride` values, of which the first
/// `n ≤ COLS` are used.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn block(
    window: *const f32,
    win_stride: usize,
    panel: *const f32,
    cin: usize,
    kernel: usize,
    dilation: usize,
    bias: *const f32,
    residuals: [*const f32; 2],
    y: *mut f32,
    y_stride: usize,
    n: usize,
) {
    use std::arch::x86_64::*;
    let mut masks = [0u16; VECS];
    for (j, m) in masks.iter_mut().enumerate() {
        let valid = n.saturating_sub(16 * j).min(16);
        *m = ((1u32 << valid) - 1) as u16;
    }
    let [first, second] = residuals;
    // SAFETY (whole body): the caller vouches for every extent read or written below.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); VECS]; CO_BLOCK];
        for (c, row) in acc.iter_mut().enumerate() {
            let b = _mm512_set1_ps(*bias.add(c));
            for (j, a) in row.iter_mut().enumerate() {
                let at = c * y_stride + 16 * j;
                *a = b;
                if !first.is_null() {
                    *a = _mm512_add_ps(*a, _mm512_maskz_loadu_ps(masks[j], first.add(at)));
                }
                if !second.is_null() {
                    *a = _mm512_add_ps(*a, _mm512_maskz_loadu_ps(masks[j], second.add(at)));
                }
            }
        }
        let mut w = panel;
        for k in 0..kernel {
            let mut x = window.add(k * dilation);
            for _ in 0..cin {
                let mut xs = [_mm512_setzero_ps(); VECS];
                for (j, v) in xs.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(x.add(16 * j));
                }
                for (c, row) in acc.iter_mut().enumerate() {
                    let wv = _mm512_set1_ps(*w.add(c));
                    for (a, &v) in row.iter_mut().zip(&xs) {
                        *a = _mm512_fmadd_ps(wv, v, *a);
                    }
                }
                w = w.add(CO_BLOCK);
                x = x.add(win_stride);
            }
        }
        for (c, row) in acc.iter().enumerate() {
            for (j, &a) in row.iter().enumerate() {
                _mm512_mask_storeu_ps(y.add(c * y_stride + 16 * j), masks[j], a);
            }
        }
    }
}

/// Never called: [`available`] is false off x86-64.
///
/// # Safety
/// None needed; it panics.
#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
pub unsafe fn block(
    _window: *const f32,
    _win_stride: usize,
    _panel: *const f32,
    _cin: usize,
    _kernel: usize,
    _dilation: usize,
    _bias: *const f32,
    _residuals: [*const f32; 2],
    _y: *mut f32,
    _y_stride: usize,
    _n: usize,
) {
    unreachable!("the direct conv kernel is x86-64 only")
}
