// Stride-1 1-D convolution as an implicit GEMM on tensor cores (mma.sync m16n8k8, TF32).
//
// GEMM view per item: M = output channels, N = time, K = input channels × taps. A block
// stages 8 input channels of the input window (leaky ReLU applied, zero padding included)
// and their weights in shared memory and walks the taps over shifted views of that window,
// so the unfolded input never exists in memory. Bias, up to two residuals and the
// polyphase store of transposed convolutions happen in the epilogue.
//
// Three ways to feed a block (PIPE): SYNC reads each stage when it is needed; REGS reads the
// next stage's input rows into registers while this stage's products run; REGS_W does that and
// also copies the next stage's weights into a second shared-memory buffer with cp.async, so
// they arrive while the tensor cores work. REGS_W expects the host to pass weights already
// rounded to TF32 when it runs the TF32 variant, since they reach shared memory unconverted.
//
// PRECISE splits each operand into two TF32 halves and runs three products (hi·hi, hi·lo,
// lo·hi): f32-level error, for runs with TF32 switched off.

#include <cstdint>

namespace {

constexpr int THREADS = 128;  // four warps
constexpr int ROWS = 4;       // input rows per batch of reads without prefetching
constexpr int COLS = 3;       // column chunks of THREADS per row: windows up to 384 samples

enum Pipe { SYNC = 0, REGS = 1, REGS_W = 2 };

__device__ __forceinline__ uint32_t tf32_bits(float v) {
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
    return r;
}

__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// cp.async of `bytes` (4 or 16) with zero fill: nothing is read where `valid` is false.
template <int BYTES>
__device__ __forceinline__ void copy_async(float* dst, const float* src, bool valid) {
    const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
    if constexpr (BYTES == 16) {
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src),
                     "r"(valid ? 16 : 0)
                     : "memory");
    } else {
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(d), "l"(src),
                     "r"(valid ? 4 : 0)
                     : "memory");
    }
}

__device__ __forceinline__ void copy_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }

// Waits until at most N of this thread's committed copy groups are still in flight.
template <int N>
__device__ __forceinline__ void copy_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

template <int N>
__device__ __forceinline__ void split(const float (&v)[N], uint32_t (&hi)[N], uint32_t (&lo)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) {
        hi[i] = tf32_bits(v[i]);
        lo[i] = tf32_bits(v[i] - __uint_as_float(hi[i]));
    }
}

// One block: WM·32 output channels × (4/WM)·64 samples of one item; each warp 32 × 64.
// CC input channels are staged per synchronisation. Eight (one mma k-step) measured faster than
// as many as fit in 48 KiB (16 or 32): the smaller tile keeps more blocks resident per SM.
template <int K, int WM, int CC, bool PRECISE, int PIPE>
__device__ __forceinline__ void conv1d_body(
    const float* __restrict__ x,     // [batch, cin, len_in]
    const float* __restrict__ w,     // [cout, K, cin]: tap-major
    const float* __restrict__ bias,  // [cout] or null
    const float* __restrict__ res0,  // like y, or null
    const float* __restrict__ res1,  // like y, or null
    float* __restrict__ y,           // [batch, cout, len_out], or phased (see below)
    int cin, int cout, int len_in, int len_out, int pad, int dil, float slope, int phases) {
    constexpr int WN = 4 / WM;
    constexpr int BCO = WM * 32;
    constexpr int BT = WN * 64;
    // Row pitches chosen so a warp's fragment loads hit 32 distinct banks.
    constexpr int WP = ((K * CC + 27) / 32) * 32 + 4;
    const int span = BT + (K - 1) * dil;
    const int XP = ((span + 23) / 32) * 32 + 8;
    // Shared memory: weights [BCO][WP] (tap-major, CC channels per tap; REGS_W keeps two, the
    // one being filled and the one being read), then the window [CC][XP].

    extern __shared__ __align__(16) float smem[];

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, tig = lane % 4;
    const int wm = warp / WN, wn = warp % WN;
    const int b = blockIdx.z, co0 = blockIdx.y * BCO, t0 = blockIdx.x * BT;
    const float* xb = x + (size_t)b * cin * len_in;
    // Whole stages of channels in 16-byte aligned rows (cudaMalloc aligns the base).
    const bool vec_weights = cin % CC == 0 && ((uintptr_t)w & 15) == 0;
    constexpr int QUADS = CC / 4;  // float4 reads per (output channel, tap) and stage

    float acc[2][8][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

    // The input value staged for the products: activated, rounded unless PRECISE splits it.
    auto staged = [&](float u) {
        if (u < 0.f) u *= slope;
        return PRECISE ? u : __uint_as_float(tf32_bits(u));
    };
    // This stage's products, over the weights ws and the window xs of shared memory.
    auto products = [&](const float* ws, const float* xs) {
#pragma unroll
        for (int step = 0; step < K * (CC / 8); ++step) {
            const int k = step / (CC / 8), kc = (step % (CC / 8)) * 8;
            float a[2][4];
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
                const float* wr = ws + (wm * 32 + mt * 16 + g) * WP + k * CC + kc + tig;
                a[mt][0] = wr[0];
                a[mt][1] = wr[8 * WP];
                a[mt][2] = wr[4];
                a[mt][3] = wr[8 * WP + 4];
            }
            float bv[8][2];
            const float* xr = xs + (kc + tig) * XP + wn * 64 + g + k * dil;
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) {
                bv[nt][0] = xr[nt * 8];
                bv[nt][1] = xr[4 * XP + nt * 8];
            }
            if constexpr (PRECISE) {
                uint32_t ah[2][4], al[2][4];
#pragma unroll
                for (int mt = 0; mt < 2; ++mt) split(a[mt], ah[mt], al[mt]);
#pragma unroll
                for (int nt = 0; nt < 8; ++nt) {
                    uint32_t bh[2], bl[2];
                    split(bv[nt], bh, bl);
#pragma unroll
                    for (int mt = 0; mt < 2; ++mt) {
                        mma(acc[mt][nt], al[mt], bh);
                        mma(acc[mt][nt], ah[mt], bl);
                        mma(acc[mt][nt], ah[mt], bh);
                    }
                }
            } else {
#pragma unroll
                for (int nt = 0; nt < 8; ++nt) {
                    const uint32_t bb[2] = {__float_as_uint(bv[nt][0]), __float_as_uint(bv[nt][1])};
#pragma unroll
                    for (int mt = 0; mt < 2; ++mt) {
                        const uint32_t aa[4] = {__float_as_uint(a[mt][0]), __float_as_uint(a[mt][1]),
                                                __float_as_uint(a[mt][2]), __float_as_uint(a[mt][3])};
                        mma(acc[mt][nt], aa, bb);
                    }
                }
            }
        }
    };

    // Starts cp.async copies of the weights of the stage from input channel ci0 into ws (not
    // converted: the TF32 variants get pre-rounded weights).
    auto issue_weights = [&](int ci0, float* ws) {
        if (vec_weights) {
#pragma unroll 4
            for (int i = tid; i < BCO * K * QUADS; i += THREADS) {
                const int m = i / (K * QUADS), r = i - m * (K * QUADS), k = r / QUADS, q = r - k * QUADS;
                const int co = co0 + m;
                const bool ok = co < cout;
                const float* src = ok ? w + ((size_t)co * K + k) * cin + ci0 + q * 4 : w;
                copy_async<16>(ws + m * WP + k * CC + q * 4, src, ok);
            }
        } else {
#pragma unroll 4
            for (int i = tid; i < BCO * K * CC; i += THREADS) {
                const int m = i / (K * CC), r = i - m * (K * CC), k = r / CC, c = r - k * CC;
                const int co = co0 + m, ci = ci0 + c;
                const bool ok = co < cout && ci < cin;
                copy_async<4>(ws + m * WP + k * CC + c, ok ? w + ((size_t)co * K + k) * cin + ci : w, ok);
            }
        }
    };

    // REGS_W keeps two weight buffers ahead of the window.
    constexpr int WBUFS = PIPE == REGS_W ? 2 : 1;
    float* xs = smem + WBUFS * BCO * WP;
    // Reads input rows [c_base, c_base + N) into v, zero outside the item and the padding.
    auto read_rows = [&](auto& v, int c_base) {
        constexpr int N = sizeof(v) / sizeof(v[0]);
#pragma unroll
        for (int r = 0; r < N; ++r) {
            const int ci = c_base + r;
            const float* row = xb + (size_t)ci * len_in;
#pragma unroll
            for (int q = 0; q < COLS; ++q) {
                const int j = tid + q * THREADS, t = t0 - pad + j;
                v[r][q] = (j < span && ci < cin && t >= 0 && t < len_in) ? row[t] : 0.f;
            }
        }
    };
    // Writes rows held in v to the staged window from row c_local on, activated and rounded.
    auto write_rows = [&](const auto& v, int c_local) {
        constexpr int N = sizeof(v) / sizeof(v[0]);
#pragma unroll
        for (int r = 0; r < N; ++r) {
#pragma unroll
            for (int q = 0; q < COLS; ++q) {
                const int j = tid + q * THREADS;
                if (j < span) xs[(c_local + r) * XP + j] = staged(v[r][q]);
            }
        }
    };
    constexpr bool READ_AHEAD = PIPE == REGS || PIPE == REGS_W;
    float next[READ_AHEAD ? CC : 1][COLS];
    if constexpr (READ_AHEAD) read_rows(next, 0);
    if constexpr (PIPE == REGS_W) {
        issue_weights(0, smem);
        copy_async_commit();
    }

    for (int ci0 = 0; ci0 < cin; ci0 += CC) {
        float* ws = smem + (PIPE == REGS_W ? ((ci0 / CC) & 1) * BCO * WP : 0);
        if constexpr (READ_AHEAD) {
            write_rows(next, 0);
        } else {
            // ROWS·COLS independent reads in flight per batch, without holding a whole stage.
#pragma unroll 1
            for (int c0 = 0; c0 < CC; c0 += ROWS) {
                float v[ROWS][COLS];
                read_rows(v, ci0 + c0);
                write_rows(v, c0);
            }
        }
        if constexpr (PIPE == REGS_W) {
            // The other buffer was last read by the products before the previous barrier.
            if (ci0 + CC < cin) {
                issue_weights(ci0 + CC, smem + (((ci0 / CC) + 1) & 1) * BCO * WP);
                copy_async_commit();
                copy_async_wait<1>();
            } else {
                copy_async_wait<0>();
            }
        } else if (vec_weights) {
            // CC consecutive input channels per (channel, tap): aligned float4 reads.
#pragma unroll 4
            for (int i = tid; i < BCO * K * QUADS; i += THREADS) {
                const int m = i / (K * QUADS), r = i - m * (K * QUADS), k = r / QUADS, q = r - k * QUADS;
                const int co = co0 + m;
                float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
                if (co < cout && ci0 < cin)
                    v = *reinterpret_cast<const float4*>(w + ((size_t)co * K + k) * cin + ci0 + q * 4);
                float* d = ws + m * WP + k * CC + q * 4;
                d[0] = PRECISE ? v.x : __uint_as_float(tf32_bits(v.x));
                d[1] = PRECISE ? v.y : __uint_as_float(tf32_bits(v.y));
                d[2] = PRECISE ? v.z : __uint_as_float(tf32_bits(v.z));
                d[3] = PRECISE ? v.w : __uint_as_float(tf32_bits(v.w));
            }
        } else {
#pragma unroll 4
            for (int i = tid; i < BCO * K * CC; i += THREADS) {
                const int m = i / (K * CC), r = i - m * (K * CC), k = r / CC, c = r - k * CC;
                const int co = co0 + m, ci = ci0 + c;
                const float v = (co < cout && ci < cin) ? w[((size_t)co * K + k) * cin + ci] : 0.f;
                ws[m * WP + k * CC + c] = PRECISE ? v : __uint_as_float(tf32_bits(v));
            }
        }
        __syncthreads();
        if constexpr (READ_AHEAD) {
            if (ci0 + CC < cin) read_rows(next, ci0 + CC);
        }
        products(ws, xs);
        __syncthreads();
    }

    // Accumulator (i): row g + 8·(i / 2), column 2·tig + (i % 2) of each 16 × 8 tile.
    const int out_rows = cout / phases;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int co = co0 + wm * 32 + mt * 16 + g + half * 8;
            if (co >= cout) continue;
            const float bco = bias ? bias[co] : 0.f;
            // Phased: channel co·phases + r at sample t is row co of the output at t·phases + r.
            const int row = co / phases, phase = co - row * phases;
            float* yr = y + ((size_t)b * out_rows + row) * ((size_t)len_out * phases) + phase;
            const size_t plain = ((size_t)b * cout + co) * len_out;
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int t = t0 + wn * 64 + nt * 8 + 2 * tig + e;
                    if (t >= len_out) continue;
                    float v = acc[mt][nt][half * 2 + e] + bco;
                    if (res0) v += res0[plain + t];
                    if (res1) v += res1[plain + t];
                    yr[(size_t)t * phases] = v;
                }
            }
        }
    }
}

}  // namespace

#define FERROVOX_CONV1D(K, WM, PRECISE, PIPE, BOUNDS, NAME)                                    \
    extern "C" __global__ void __launch_bounds__ BOUNDS NAME(                                   \
        const float* x, const float* w, const float* bias, const float* res0, const float* res1, \
        float* y, int cin, int cout, int len_in, int len_out, int pad, int dil, float slope,     \
        int phases) {                                                                            \
        conv1d_body<K, WM, 8, PRECISE, PIPE>(x, w, bias, res0, res1, y, cin, cout, len_in,       \
                                             len_out, pad, dil, slope, phases);                  \
    }

#define FERROVOX_CONV1D_VARIANTS(K, P, BOUNDS, SUFFIX)                                     \
    FERROVOX_CONV1D(K, 1, false, P, BOUNDS, ferrovox_conv1d_k##K##_m1_tf32##SUFFIX)        \
    FERROVOX_CONV1D(K, 2, false, P, BOUNDS, ferrovox_conv1d_k##K##_m2_tf32##SUFFIX)        \
    FERROVOX_CONV1D(K, 1, true, P, BOUNDS, ferrovox_conv1d_k##K##_m1_f32##SUFFIX)          \
    FERROVOX_CONV1D(K, 2, true, P, BOUNDS, ferrovox_conv1d_k##K##_m2_f32##SUFFIX)

// The launch bounds steer register allocation: with the block size alone, SYNC and REGS take
// 128 and 166-168 registers (four and three resident blocks per SM); stating a minimum of one
// block lets them grow to 141-210. REGS_W is held to three blocks (unbounded, its 7-tap variant
// took 177 registers: two blocks).
#define FERROVOX_CONV1D_TAPS(K)                                      \
    FERROVOX_CONV1D_VARIANTS(K, SYNC, (THREADS), )                   \
    FERROVOX_CONV1D_VARIANTS(K, REGS, (THREADS), _prefetch)          \
    FERROVOX_CONV1D_VARIANTS(K, REGS_W, (THREADS, 3), _prefetch_w)

FERROVOX_CONV1D_TAPS(3)
FERROVOX_CONV1D_TAPS(5)
FERROVOX_CONV1D_TAPS(7)
FERROVOX_CONV1D_TAPS(11)
