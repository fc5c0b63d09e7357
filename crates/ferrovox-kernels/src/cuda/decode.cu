// An autoregressive decoder's step, fused: a step of one position per row is a few hundred
// kernels whose launches, not their work, take the time, so each kernel here replaces several of
// Candle's. f32 and bf16 (arithmetic in f32 either way).
//
// - rope_write: RoPE on the queries and keys of the fused qkv projection's output, the rotated
//   keys and the values written into each row's cache slot (row r at position pos[r]).
// - attention: one query per row against the cache's first `window` positions, each row
//   attending its positions 0..=pos[r]: scores, softmax and the weighted sum, split over chunks
//   of 64 keys in one kernel and the chunks combined in a second.
// - silu_mul: SwiGLU's silu(gate) * up from the fused gate_up projection's output.
// - add_rms_norm: the residual add and the next RMS norm, both results written.
// - rows_linear: a Linear's product for at most 8 rows, four output features per warp; its
//   SwiGLU form reads silu(gate)·up from the fused projection, replacing silu_mul.

#include <cuda_bf16.h>

namespace {

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
    return __float2bfloat16(v);
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}

// The sum (or max) over the block; every thread gets it. `scratch` holds 32 floats.
template <bool MAX>
__device__ float block_reduce(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = MAX ? warp_max(v) : warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = lane < warps ? scratch[lane] : (MAX ? -INFINITY : 0.f);
    r = MAX ? warp_max(r) : warp_sum(r);
    return r;
}

// qkv [rows, heads + 2·kv_heads, d]; cos, sin [rows, d/2]; q_out [rows, heads, d];
// caches [rows, kv_heads, cap, d]. One thread per (row, slot, i < d/2).
template <typename T>
__device__ void rope_write(const T* __restrict__ qkv, const T* __restrict__ cos,
                           const T* __restrict__ sin, const unsigned* __restrict__ pos,
                           T* __restrict__ q_out, T* __restrict__ k_cache, T* __restrict__ v_cache,
                           int rows, int heads, int kv_heads, int cap, int d) {
    const int half = d / 2, slots = heads + 2 * kv_heads;
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * slots * half) return;
    const int c = (int)(i % half);
    const int slot = (int)((i / half) % slots);
    const int row = (int)(i / ((long)half * slots));
    const T* x = qkv + ((long)row * slots + slot) * d;
    const float x1 = to_f(x[c]), x2 = to_f(x[c + half]);
    if (slot >= heads + kv_heads) {
        const int h = slot - heads - kv_heads;
        T* dst = v_cache + (((long)row * kv_heads + h) * cap + pos[row]) * d;
        dst[c] = x[c];
        dst[c + half] = x[c + half];
        return;
    }
    const float co = to_f(cos[(long)row * half + c]), si = to_f(sin[(long)row * half + c]);
    const T r1 = from_f<T>(x1 * co - x2 * si), r2 = from_f<T>(x1 * si + x2 * co);
    T* dst;
    if (slot < heads) {
        dst = q_out + ((long)row * heads + slot) * d;
    } else {
        dst = k_cache + (((long)row * kv_heads + (slot - heads)) * cap + pos[row]) * d;
    }
    dst[c] = r1;
    dst[c + half] = r2;
}

// Split-K attention, pass 1: block (head, row, split) takes keys [split·CHUNK, (split+1)·CHUNK)
// of those the row attends (0..=pos[row], within the window) and writes its partial result:
// the scores' max, the sum of their exponentials, and the exponential-weighted sum of values
// (`part` [rows, heads, splits, d + 2]). Many small blocks keep every SM reading the cache; one
// block per head left most of the GPU idle and each block bound by latency.
// q [rows, heads, d] (already scaled by 1/√d); caches [rows, kv_heads, cap, d].
// blockDim = CHUNK threads; d ≤ CHUNK.
constexpr int CHUNK = 64;

template <typename T>
__device__ void attention_part(const T* __restrict__ q, const T* __restrict__ k,
                               const T* __restrict__ v, const unsigned* __restrict__ pos,
                               float* __restrict__ part, int heads, int kv_heads, int cap,
                               int window, int d) {
    __shared__ float qs[CHUNK];
    __shared__ float p[CHUNK];
    __shared__ float scratch[32];
    const int head = blockIdx.x, row = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
    const int kvh = head / (heads / kv_heads);
    const int n = min((int)pos[row] + 1, window);
    const int first = split * CHUNK;
    float* out = part + (((long)row * heads + head) * splits + split) * (d + 2);
    if (first >= n) {
        // Nothing here: a max of −∞ and a sum of 0 leave the combination unchanged.
        if (threadIdx.x < d) out[threadIdx.x] = 0.f;
        if (threadIdx.x == 0) {
            out[d] = -INFINITY;
            out[d + 1] = 0.f;
        }
        return;
    }
    const T* qp = q + ((long)row * heads + head) * d;
    if (threadIdx.x < d) qs[threadIdx.x] = to_f(qp[threadIdx.x]);
    __syncthreads();
    const long base = ((long)row * kv_heads + kvh) * cap * d;
    // A thread per key: the key's row read whole by one thread, every key of the chunk at once.
    const int j = first + threadIdx.x;
    float s = -INFINITY;
    if (j < n) {
        const T* kj = k + base + (long)j * d;
        float acc = 0.f;
#pragma unroll 8
        for (int c = 0; c < d; ++c) acc += qs[c] * to_f(kj[c]);
        s = acc;
    }
    const float max = block_reduce<true>(s, scratch);
    const float e = j < n ? __expf(s - max) : 0.f;
    p[threadIdx.x] = e;
    const float sum = block_reduce<false>(e, scratch);
    __syncthreads();
    const int last = min(n - first, CHUNK);
    if (threadIdx.x < d) {
        const T* vp = v + base + (long)first * d + threadIdx.x;
        float acc = 0.f;
#pragma unroll 8
        for (int t = 0; t < last; ++t) acc += p[t] * to_f(vp[(long)t * d]);
        out[threadIdx.x] = acc;
    }
    if (threadIdx.x == 0) {
        out[d] = max;
        out[d + 1] = sum;
    }
}

// Pass 2: one block (d threads) per (head, row) combines the splits' partial results.
// y [rows, heads, d].
template <typename T>
__device__ void attention_combine(const float* __restrict__ part, T* __restrict__ y, int heads,
                                  int splits, int d) {
    const int head = blockIdx.x, row = blockIdx.y, c = threadIdx.x;
    if (c >= d) return;
    const float* in = part + ((long)row * heads + head) * splits * (d + 2);
    float max = -INFINITY;
    for (int i = 0; i < splits; ++i) max = fmaxf(max, in[i * (d + 2) + d]);
    float sum = 0.f, acc = 0.f;
    for (int i = 0; i < splits; ++i) {
        const float* pi = in + i * (d + 2);
        const float scale = pi[d] == -INFINITY ? 0.f : __expf(pi[d] - max);
        sum += pi[d + 1] * scale;
        acc += pi[c] * scale;
    }
    y[((long)row * heads + head) * d + c] = from_f<T>(acc / sum);
}

// gate_up [rows, 2·inter] → out [rows, inter] = silu(gate) · up.
template <typename T>
__device__ void silu_mul(const T* __restrict__ gu, T* __restrict__ out, int rows, int inter) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)rows * inter) return;
    const long r = i / inter, c = i % inter;
    const float g = to_f(gu[r * 2 * inter + c]), u = to_f(gu[r * 2 * inter + inter + c]);
    // Rounded as Candle's separate silu and mul round (to T after each).
    const float s = to_f(from_f<T>(g / (1.f + __expf(-g))));
    out[i] = from_f<T>(s * u);
}

// out[0] = x + h (rounded to T), out[1] = rms_norm(out[0]) · w; one block per row.
template <typename T>
__device__ void add_rms_norm(const T* __restrict__ x, const T* __restrict__ h,
                             const T* __restrict__ w, T* __restrict__ out, int rows, int hidden,
                             float eps) {
    __shared__ float scratch[32];
    const int row = blockIdx.x;
    const T* xr = x + (long)row * hidden;
    const T* hr = h + (long)row * hidden;
    T* sum_out = out + (long)row * hidden;
    T* norm_out = out + ((long)rows + row) * hidden;
    float sq = 0.f;
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
        const T s = from_f<T>(to_f(xr[c]) + to_f(hr[c]));
        sum_out[c] = s;
        const float f = to_f(s);
        sq += f * f;
    }
    const float total = block_reduce<false>(sq, scratch);
    const float scale = rsqrtf(total / hidden + eps);
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
        norm_out[c] = from_f<T>(to_f(sum_out[c]) * scale * to_f(w[c]));
    }
}

// y [rows, out] = x [rows, in] · wᵀ for w [out, in] (a Linear's weight), rows <= 8: a step's
// products read every weight once for a handful of rows, where a GEMM's tiles are mostly empty.
// Each warp computes OUTS consecutive output features, so every slice of x it loads serves
// OUTS weight rows; 16-byte loads along `in` (a multiple of the vector width, rows 16-byte
// aligned); the partial sums reduced across the warp. With SWIGLU, x is a fused gate_up
// projection [rows, 2·in] and the product reads silu(gate)·up, rounded as silu_mul rounds it.
template <typename T, int R, bool SWIGLU>
__device__ void rows_linear(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y,
                            int in, int out) {
    constexpr int VEC = 16 / sizeof(T);
    constexpr int OUTS = 4;
    const int lane = threadIdx.x & 31;
    const int o0 = (blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)) * OUTS;
    if (o0 >= out) return;
    const long x_stride = SWIGLU ? 2L * in : (long)in;
    float acc[OUTS][R];
#pragma unroll
    for (int j = 0; j < OUTS; ++j)
#pragma unroll
        for (int r = 0; r < R; ++r) acc[j][r] = 0.f;
#pragma unroll 2
    for (int i = lane * VEC; i < in; i += 32 * VEC) {
        uint4 wv[OUTS];
#pragma unroll
        for (int j = 0; j < OUTS; ++j) {
            const int o = min(o0 + j, out - 1);
            wv[j] = __ldg(reinterpret_cast<const uint4*>(w + (long)o * in + i));
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
            float xf[VEC];
            const uint4 xv = __ldg(reinterpret_cast<const uint4*>(x + r * x_stride + i));
            const T* xe = reinterpret_cast<const T*>(&xv);
            if (SWIGLU) {
                const uint4 uv = __ldg(reinterpret_cast<const uint4*>(x + r * x_stride + in + i));
                const T* ue = reinterpret_cast<const T*>(&uv);
#pragma unroll
                for (int k = 0; k < VEC; ++k) {
                    const float g = to_f(xe[k]);
                    const float sg = to_f(from_f<T>(g / (1.f + __expf(-g))));
                    xf[k] = to_f(from_f<T>(sg * to_f(ue[k])));
                }
            } else {
#pragma unroll
                for (int k = 0; k < VEC; ++k) xf[k] = to_f(xe[k]);
            }
#pragma unroll
            for (int j = 0; j < OUTS; ++j) {
                const T* we = reinterpret_cast<const T*>(&wv[j]);
#pragma unroll
                for (int k = 0; k < VEC; ++k) acc[j][r] = fmaf(to_f(we[k]), xf[k], acc[j][r]);
            }
        }
    }
#pragma unroll
    for (int j = 0; j < OUTS; ++j)
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const float v = warp_sum(acc[j][r]);
            if (lane == 0 && o0 + j < out) y[(long)r * out + o0 + j] = from_f<T>(v);
        }
}

}  // namespace

#define ROWS_LINEAR(SUFFIX, T, R)                                                              \
    extern "C" __global__ void ferrovox_rows_linear_##R##_##SUFFIX(const T* x, const T* w,     \
                                                                   T* y, int in, int out) {    \
        rows_linear<T, R, false>(x, w, y, in, out);                                            \
    }                                                                                          \
    extern "C" __global__ void ferrovox_rows_linear_swiglu_##R##_##SUFFIX(                     \
        const T* x, const T* w, T* y, int in, int out) {                                       \
        rows_linear<T, R, true>(x, w, y, in, out);                                             \
    }
#define ROWS_LINEARS(SUFFIX, T)                                                                \
    ROWS_LINEAR(SUFFIX, T, 1)                                                                  \
    ROWS_LINEAR(SUFFIX, T, 2)                                                                  \
    ROWS_LINEAR(SUFFIX, T, 3)                                                                  \
    ROWS_LINEAR(SUFFIX, T, 4)                                                                  \
    ROWS_LINEAR(SUFFIX, T, 5)                                                                  \
    ROWS_LINEAR(SUFFIX, T, 6)                                                                  \
    ROWS_LINEAR(SUFFIX, T, 7)                                                                  \
    ROWS_LINEAR(SUFFIX, T, 8)

ROWS_LINEARS(f32, float)
ROWS_LINEARS(bf16, __nv_bfloat16)

#define DECODE_KERNELS(SUFFIX, T)                                                              \
    extern "C" __global__ void ferrovox_rope_write_##SUFFIX(                                   \
        const T* qkv, const T* cos, const T* sin, const unsigned* pos, T* q_out, T* k_cache,   \
        T* v_cache, int rows, int heads, int kv_heads, int cap, int d) {                        \
        rope_write<T>(qkv, cos, sin, pos, q_out, k_cache, v_cache, rows, heads, kv_heads, cap, \
                      d);                                                                      \
    }                                                                                          \
    extern "C" __global__ void ferrovox_decode_attention_part_##SUFFIX(                        \
        const T* q, const T* k, const T* v, const unsigned* pos, float* part, int heads,        \
        int kv_heads, int cap, int window, int d) {                                            \
        attention_part<T>(q, k, v, pos, part, heads, kv_heads, cap, window, d);                \
    }                                                                                          \
    extern "C" __global__ void ferrovox_decode_attention_combine_##SUFFIX(                     \
        const float* part, T* y, int heads, int splits, int d) {                               \
        attention_combine<T>(part, y, heads, splits, d);                                       \
    }                                                                                          \
    extern "C" __global__ void ferrovox_silu_mul_##SUFFIX(const T* gu, T* out, int rows,       \
                                                          int inter) {                         \
        silu_mul<T>(gu, out, rows, inter);                                                     \
    }                                                                                          \
    extern "C" __global__ void ferrovox_add_rms_norm_##SUFFIX(                                 \
        const T* x, const T* h, const T* w, T* out, int rows, int hidden, float eps) {          \
        add_rms_norm<T>(x, h, w, out, rows, hidden, eps);                                      \
    }

DECODE_KERNELS(f32, float)
DECODE_KERNELS(bf16, __nv_bfloat16)
