//! A decoder step's fused CUDA kernels (`cuda/decode.cu`), f32 and bf16: RoPE with the cache
//! write, one-query attention over the cache, SwiGLU's `silu(gate) · up`, and the residual add
//! with the next RMS norm. A step of one position per row is a few hundred small kernels whose
//! launches take the time (even replayed from a CUDA graph); these take a Llama layer from
//! about 22 kernels to 9.
//!
//! Every function takes contiguous tensors and checks their shapes; off CUDA, in a build
//! without the kernels, or with `FERROVOX_CUDA_DECODE=0`, [`available`] is false and the caller
//! keeps Candle's ops.

use candle_core::{DType, Result, Tensor};

/// Whether the fused kernels run for tensors like `like`: CUDA, f32 or bf16, built with the
/// kernels, not switched off by `FERROVOX_CUDA_DECODE=0`.
pub fn available(like: &Tensor) -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let off = *OFF.get_or_init(|| {
        matches!(
            std::env::var("FERROVOX_CUDA_DECODE").as_deref(),
            Ok("0" | "false" | "off" | "no")
        )
    });
    !off && matches!(like.dtype(), DType::F32 | DType::BF16)
        && super::cuda_kernels_loaded(like.device(), "decode")
}

/// Keys per attention block (`CHUNK` in the kernel), also its thread count and the largest
/// head size it takes.
const CHUNK: usize = 64;

/// `imp::$f::<T>(args)` with `T` the element type of `$t` where the kernels are built;
/// elsewhere an error (callers ask [`available`] first). A `Result<Tensor>` either way.
macro_rules! launch {
    ($t:expr, $f:ident ( $($arg:expr),* )) => {{
        #[cfg(ferrovox_cuda_kernels)]
        let launched: Result<Tensor> = match $t.dtype() {
            DType::F32 => imp::$f::<f32>($($arg),*),
            DType::BF16 => imp::$f::<half::bf16>($($arg),*),
            other => Err(candle_core::Error::Msg(format!(
                "fused decode kernels take f32 or bf16, not {other:?}"
            ))),
        };
        #[cfg(not(ferrovox_cuda_kernels))]
        let launched: Result<Tensor> = {
            let _ = ($($arg),*);
            Err(candle_core::Error::Msg(
                "ferrovox's fused decode kernels are not in this build (no CUDA)".into(),
            ))
        };
        launched
    }};
}

/// RoPE on the queries and keys of `qkv` `[rows, 1, (heads + 2·kv_heads)·d]` with each row's
/// `cos`, `sin` `[rows, 1, d/2]`, the rotated keys and the values written into `k_cache` and
/// `v_cache` `[rows, kv_heads, capacity, d]` at each row's `position` (`[rows]` u32). Returns the
/// rotated queries `[rows, heads, d]`.
#[allow(clippy::too_many_arguments)]
pub fn rope_write(
    qkv: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    position: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    heads: usize,
    kv_heads: usize,
) -> Result<Tensor> {
    let (rows, _, _, d) = k_cache.dims4()?;
    let slots = heads + 2 * kv_heads;
    if qkv.elem_count() != rows * slots * d
        || k_cache.dims() != v_cache.dims()
        || k_cache.dim(1)? != kv_heads
        || cos.elem_count() != rows * d / 2
        || sin.elem_count() != rows * d / 2
        || position.elem_count() != rows
        || position.dtype() != DType::U32
        || !d.is_multiple_of(2)
        || kv_heads == 0
        || !heads.is_multiple_of(kv_heads)
        || [cos.dtype(), sin.dtype(), k_cache.dtype(), v_cache.dtype()]
            .iter()
            .any(|t| *t != qkv.dtype())
    {
        candle_core::bail!(
            "rope_write: qkv {:?}, cos {:?}, positions {:?}, caches {:?} for {heads} heads",
            qkv.dims(),
            cos.dims(),
            position.dims(),
            k_cache.dims()
        );
    }
    launch!(
        qkv,
        rope_write(qkv, cos, sin, position, k_cache, v_cache, heads, kv_heads)
    )
}

/// Each row's query `q` `[rows, heads, d]` (scaled by `1/√d`) against the caches' first
/// `window` positions, row `r` attending positions `0..=position[r]`: `[rows, 1, heads·d]`.
pub fn attention(
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    position: &Tensor,
    window: usize,
) -> Result<Tensor> {
    let (rows, heads, d) = q.dims3()?;
    let (cr, kv_heads, cap, cd) = k_cache.dims4()?;
    if cr != rows
        || cd != d
        || k_cache.dims() != v_cache.dims()
        || window == 0
        || window > cap
        || kv_heads == 0
        || !heads.is_multiple_of(kv_heads)
        || d == 0
        || d > CHUNK
        || position.elem_count() != rows
        || position.dtype() != DType::U32
        || k_cache.dtype() != q.dtype()
        || v_cache.dtype() != q.dtype()
    {
        candle_core::bail!(
            "decode attention: q {:?}, caches {:?}, window {window}",
            q.dims(),
            k_cache.dims()
        );
    }
    launch!(q, attention(q, k_cache, v_cache, position, window))
}

/// `silu(gate) · up` of `gate_up` `[.., 2·inter]` (gate first): `[.., inter]`.
pub fn silu_mul(gate_up: &Tensor) -> Result<Tensor> {
    let features = gate_up.dim(candle_core::D::Minus1)?;
    if !features.is_multiple_of(2) {
        candle_core::bail!("silu_mul: {features} features is not gate and up halves");
    }
    launch!(gate_up, silu_mul(gate_up))
}

/// `(x + h, rms_norm(x + h) · weight)` for `x`, `h` `[.., hidden]`, the sum rounded to the
/// dtype before the norm reads it, as two separate ops would.
pub fn add_rms_norm(x: &Tensor, h: &Tensor, weight: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    let hidden = x.dim(candle_core::D::Minus1)?;
    if x.dims() != h.dims()
        || weight.dims() != [hidden]
        || h.dtype() != x.dtype()
        || weight.dtype() != x.dtype()
    {
        candle_core::bail!(
            "add_rms_norm: x {:?}, h {:?}, weight {:?}",
            x.dims(),
            h.dims(),
            weight.dims()
        );
    }
    let both = launch!(x, add_rms_norm(x, h, weight, eps))?;
    Ok((both.get(0)?, both.get(1)?))
}

/// The most rows [`rows_linear`] takes.
pub const ROWS_LINEAR_MAX: usize = 8;

/// Whether products of `rows` rows should go to the few-row kernels rather than Candle's
/// matmul: only up to `FERROVOX_CUDA_ROWS` rows (at most [`ROWS_LINEAR_MAX`]), and by default
/// never. On the H100 at T3's shapes cuBLAS was as fast or faster at every row count from 1
/// to 8 (`cargo xtask bench decode-gemm`), so the kernels stay for measuring and for devices
/// where that differs.
pub fn rows_linear_preferred(rows: usize) -> bool {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let limit = *LIMIT.get_or_init(|| {
        std::env::var("FERROVOX_CUDA_ROWS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .map_or(0, |n| n.min(ROWS_LINEAR_MAX))
    });
    (1..=limit).contains(&rows)
}

/// Whether [`rows_linear`] takes `x` `[.., in]` against `w` `[out, in]`: the decode kernels
/// [`available`], at most [`ROWS_LINEAR_MAX`] rows, one dtype, contiguous, `in` a multiple of
/// a 16-byte vector and both starts 16-byte aligned.
pub fn rows_linear_fits(x: &Tensor, w: &Tensor) -> bool {
    fits(x, w, 1)
}

/// Whether [`rows_linear_swiglu`] takes `gate_up` `[.., 2·in]` against `w` `[out, in]`, as
/// [`rows_linear_fits`].
pub fn rows_linear_swiglu_fits(gate_up: &Tensor, w: &Tensor) -> bool {
    fits(gate_up, w, 2)
}

fn fits(x: &Tensor, w: &Tensor, widen: usize) -> bool {
    let Ok((_, input)) = w.dims2() else {
        return false;
    };
    let size = x.dtype().size_in_bytes();
    let aligned = |t: &Tensor| {
        t.layout()
            .contiguous_offsets()
            .is_some_and(|(start, _)| (start * size).is_multiple_of(16))
    };
    let width = input * widen;
    input > 0
        && available(x)
        && w.dtype() == x.dtype()
        && x.dim(candle_core::D::Minus1).is_ok_and(|d| d == width)
        && (1..=ROWS_LINEAR_MAX).contains(&(x.elem_count() / width))
        && (input * size).is_multiple_of(16)
        && aligned(x)
        && aligned(w)
}

/// `x · wᵀ` for `x` `[.., in]` of at most [`ROWS_LINEAR_MAX`] rows and `w` `[out, in]` (a
/// Linear's weight, no bias): `[.., out]`, f32 accumulation. Callers check
/// [`rows_linear_fits`] first.
pub fn rows_linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if !rows_linear_fits(x, w) {
        candle_core::bail!(
            "rows_linear: x {:?} {:?} against w {:?} {:?} (contiguous, aligned, at most {ROWS_LINEAR_MAX} rows)",
            x.dims(),
            x.dtype(),
            w.dims(),
            w.dtype()
        );
    }
    launch!(x, rows_linear(x, w, false))
}

/// `(silu(gate) · up) · wᵀ` for SwiGLU's fused `gate_up` `[.., 2·in]` (gate first) and the down
/// projection's `w` `[out, in]`: [`silu_mul`] and [`rows_linear`] in one kernel, rounded as
/// the two round. Callers check [`rows_linear_swiglu_fits`] first.
pub fn rows_linear_swiglu(gate_up: &Tensor, w: &Tensor) -> Result<Tensor> {
    if !rows_linear_swiglu_fits(gate_up, w) {
        candle_core::bail!(
            "rows_linear_swiglu: gate_up {:?} {:?} against w {:?} {:?}",
            gate_up.dims(),
            gate_up.dtype(),
            w.dims(),
            w.dtype()
        );
    }
    launch!(gate_up, rows_linear(gate_up, w, true))
}

#[cfg(ferrovox_cuda_kernels)]
mod imp {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{
        CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
    };
    use candle_core::cuda_backend::CudaDType;
    use candle_core::op::BackpropOp;
    use candle_core::{CudaDevice, CudaStorage, DType, Result, Shape, Storage, Tensor};

    use super::CHUNK;
    use crate::cuda_module::{function, DECODE};

    fn int(v: usize) -> Result<i32> {
        i32::try_from(v).map_err(candle_core::Error::wrap)
    }

    fn suffix(t: &Tensor) -> Result<&'static str> {
        match t.dtype() {
            DType::F32 => Ok("f32"),
            DType::BF16 => Ok("bf16"),
            other => candle_core::bail!("fused decode kernels take f32 or bf16, not {other:?}"),
        }
    }

    /// `storage` as CUDA memory; `what` names it in the error.
    fn cuda<'a>(what: &str, storage: &'a Storage) -> Result<&'a CudaStorage> {
        match storage {
            Storage::Cuda(c) => Ok(c),
            _ => candle_core::bail!("fused decode kernels: {what} is not on CUDA"),
        }
    }

    /// The contiguous device memory of `storage` under `layout`.
    fn view<'a, T: CudaDType + DeviceRepr>(
        what: &str,
        storage: &'a Storage,
        layout: &candle_core::Layout,
    ) -> Result<CudaView<'a, T>> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("fused decode kernels: {what} is not contiguous");
        };
        Ok(cuda(what, storage)?.as_cuda_slice::<T>()?.slice(start..end))
    }

    /// Locks `$t`'s storage for the launch and binds its device view as `$v`.
    macro_rules! bind {
        ($v:ident, $guard:ident, $t:expr, $ty:ty, $what:expr) => {
            let ($guard, layout) = $t.storage_and_layout();
            let $v = view::<$ty>($what, &$guard, layout)?;
        };
    }

    fn wrap<T: CudaDType + DeviceRepr>(
        out: candle_core::cuda_backend::cudarc::driver::CudaSlice<T>,
        dev: &CudaDevice,
        shape: impl Into<Shape>,
    ) -> Tensor {
        let storage = CudaStorage::wrap_cuda_slice(out, dev.clone());
        Tensor::from_storage(Storage::Cuda(storage), shape, BackpropOp::none(), false)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn rope_write<T: CudaDType + DeviceRepr>(
        qkv: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        position: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        heads: usize,
        kv_heads: usize,
    ) -> Result<Tensor> {
        let (rows, _, cap, d) = k_cache.dims4()?;
        bind!(x, g0, qkv, T, "qkv");
        bind!(c, g1, cos, T, "cos");
        bind!(s, g2, sin, T, "sin");
        bind!(p, g3, position, u32, "positions");
        bind!(kc, g4, k_cache, T, "the key cache");
        bind!(vc, g5, v_cache, T, "the value cache");
        let dev = cuda("qkv", &g0)?.device().clone();
        // SAFETY: the kernel writes every element of the queries.
        let q = unsafe { dev.alloc::<T>(rows * heads * d)? };
        let func = function(
            &dev,
            &DECODE,
            &format!("ferrovox_rope_write_{}", suffix(qkv)?),
        )?;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&func);
        let (r, h, kv, cp, dd) = (int(rows)?, int(heads)?, int(kv_heads)?, int(cap)?, int(d)?);
        b.arg(&x).arg(&c).arg(&s).arg(&p).arg(&q).arg(&kc).arg(&vc);
        b.arg(&r).arg(&h).arg(&kv).arg(&cp).arg(&dd);
        let n = rows * (heads + 2 * kv_heads) * d / 2;
        // SAFETY: arguments match the kernel's signature; the caches are written in place through
        // their device pointers, at slots the shapes checked above bound (positions must be
        // below the capacity: the callers' windows are).
        unsafe {
            b.launch(LaunchConfig::for_num_elems(
                u32::try_from(n).map_err(candle_core::Error::wrap)?,
            ))
        }
        .map_err(candle_core::Error::wrap)?;
        Ok(wrap(q, &dev, (rows, heads, d)))
    }

    pub(super) fn attention<T: CudaDType + DeviceRepr>(
        q: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        position: &Tensor,
        window: usize,
    ) -> Result<Tensor> {
        let (rows, heads, d) = q.dims3()?;
        let (_, kv_heads, cap, _) = k_cache.dims4()?;
        bind!(qv, g0, q, T, "the queries");
        bind!(kc, g1, k_cache, T, "the key cache");
        bind!(vc, g2, v_cache, T, "the value cache");
        bind!(p, g3, position, u32, "positions");
        let dev = cuda("the queries", &g0)?.device().clone();
        let splits = window.div_ceil(CHUNK);
        // SAFETY: the first kernel writes every partial result, the second every output.
        let part = unsafe { dev.alloc::<f32>(rows * heads * splits * (d + 2))? };
        let y = unsafe { dev.alloc::<T>(rows * heads * d)? };
        let u = |v: usize| u32::try_from(v).map_err(candle_core::Error::wrap);
        let stream = dev.cuda_stream();
        let func = function(
            &dev,
            &DECODE,
            &format!("ferrovox_decode_attention_part_{}", suffix(q)?),
        )?;
        let mut b = stream.launch_builder(&func);
        let (h, kv, cp, w, dd) = (
            int(heads)?,
            int(kv_heads)?,
            int(cap)?,
            int(window)?,
            int(d)?,
        );
        b.arg(&qv).arg(&kc).arg(&vc).arg(&p).arg(&part);
        b.arg(&h).arg(&kv).arg(&cp).arg(&w).arg(&dd);
        let cfg = LaunchConfig {
            grid_dim: (u(heads)?, u(rows)?, u(splits)?),
            block_dim: (u(CHUNK)?, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: arguments match the kernel's signature and the shapes checked above.
        unsafe { b.launch(cfg) }.map_err(candle_core::Error::wrap)?;
        let func = function(
            &dev,
            &DECODE,
            &format!("ferrovox_decode_attention_combine_{}", suffix(q)?),
        )?;
        let mut b = stream.launch_builder(&func);
        let sp = int(splits)?;
        b.arg(&part).arg(&y).arg(&h).arg(&sp).arg(&dd);
        let cfg = LaunchConfig {
            grid_dim: (u(heads)?, u(rows)?, 1),
            block_dim: (u(d.div_ceil(32) * 32)?, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: as above; `part` holds `splits` partial results per head and row.
        unsafe { b.launch(cfg) }.map_err(candle_core::Error::wrap)?;
        Ok(wrap(y, &dev, (rows, 1, heads * d)))
    }

    pub(super) fn rows_linear<T: CudaDType + DeviceRepr>(
        x: &Tensor,
        w: &Tensor,
        swiglu: bool,
    ) -> Result<Tensor> {
        let (out, input) = w.dims2()?;
        let width = if swiglu { 2 * input } else { input };
        let rows = x.elem_count() / width;
        bind!(xv, g0, x, T, "x");
        bind!(wv, g1, w, T, "the weight");
        let dev = cuda("x", &g0)?.device().clone();
        // SAFETY: the kernel writes every output element.
        let y = unsafe { dev.alloc::<T>(rows * out)? };
        let name = if swiglu {
            "rows_linear_swiglu"
        } else {
            "rows_linear"
        };
        let func = function(
            &dev,
            &DECODE,
            &format!("ferrovox_{name}_{rows}_{}", suffix(x)?),
        )?;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&func);
        let (i, o) = (int(input)?, int(out)?);
        b.arg(&xv).arg(&wv).arg(&y).arg(&i).arg(&o);
        // 8 warps a block, each computing 4 output features (OUTS in the kernel).
        const WARPS: usize = 8;
        const OUTS: usize = 4;
        let u = |v: usize| u32::try_from(v).map_err(candle_core::Error::wrap);
        let cfg = LaunchConfig {
            grid_dim: (u(out.div_ceil(WARPS * OUTS))?, 1, 1),
            block_dim: (u(32 * WARPS)?, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: arguments match the kernel's signature; `fits` checked the row count, the
        // vector width of `in` and the 16-byte alignment the kernel's loads need.
        unsafe { b.launch(cfg) }.map_err(candle_core::Error::wrap)?;
        let mut dims = x.dims().to_vec();
        *dims.last_mut().expect("x has a last dim") = out;
        Ok(wrap(y, &dev, dims))
    }

    pub(super) fn silu_mul<T: CudaDType + DeviceRepr>(gate_up: &Tensor) -> Result<Tensor> {
        let dims = gate_up.dims().to_vec();
        let (&two_inter, lead) = dims
            .split_last()
            .ok_or_else(|| candle_core::Error::Msg("silu_mul of a scalar".into()))?;
        let inter = two_inter / 2;
        let rows: usize = lead.iter().product();
        bind!(x, g0, gate_up, T, "gate_up");
        let dev = cuda("gate_up", &g0)?.device().clone();
        // SAFETY: the kernel writes every output element.
        let out = unsafe { dev.alloc::<T>(rows * inter)? };
        let func = function(
            &dev,
            &DECODE,
            &format!("ferrovox_silu_mul_{}", suffix(gate_up)?),
        )?;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&func);
        let (r, i) = (int(rows)?, int(inter)?);
        b.arg(&x).arg(&out).arg(&r).arg(&i);
        let n = u32::try_from(rows * inter).map_err(candle_core::Error::wrap)?;
        // SAFETY: arguments match the kernel's signature.
        unsafe { b.launch(LaunchConfig::for_num_elems(n)) }.map_err(candle_core::Error::wrap)?;
        let mut out_dims = lead.to_vec();
        out_dims.push(inter);
        Ok(wrap(out, &dev, out_dims))
    }

    pub(super) fn add_rms_norm<T: CudaDType + DeviceRepr>(
        x: &Tensor,
        h: &Tensor,
        weight: &Tensor,
        eps: f64,
    ) -> Result<Tensor> {
        let hidden = x.dim(candle_core::D::Minus1)?;
        let rows = x.elem_count() / hidden;
        bind!(xv, g0, x, T, "x");
        bind!(hv, g1, h, T, "h");
        bind!(wv, g2, weight, T, "the norm's weight");
        let dev = cuda("x", &g0)?.device().clone();
        // SAFETY: the kernel writes both halves whole.
        let out = unsafe { dev.alloc::<T>(2 * rows * hidden)? };
        let func = function(
            &dev,
            &DECODE,
            &format!("ferrovox_add_rms_norm_{}", suffix(x)?),
        )?;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&func);
        let (r, hd, e) = (int(rows)?, int(hidden)?, eps as f32);
        b.arg(&xv)
            .arg(&hv)
            .arg(&wv)
            .arg(&out)
            .arg(&r)
            .arg(&hd)
            .arg(&e);
        let cfg = LaunchConfig {
            grid_dim: (u32::try_from(rows).map_err(candle_core::Error::wrap)?, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: arguments match the kernel's signature.
        unsafe { b.launch(cfg) }.map_err(candle_core::Error::wrap)?;
        let mut dims = vec![2];
        dims.extend_from_slice(x.dims());
        Ok(wrap(out, &dev, dims))
    }
}
