// The inverse of VITS's unconstrained rational-quadratic spline, one thread per element:
// identity outside ±tail_bound, else softmax'd knots, a bin search and the quadratic's root.
// Mirrors the host version in ferrovox-vits's `spline.rs` step for step, so both round alike.

namespace {

constexpr float MIN_BIN_WIDTH = 1e-3f;
constexpr float MIN_BIN_HEIGHT = 1e-3f;
constexpr float MIN_DERIVATIVE = 1e-3f;
constexpr int MAX_BINS = 32;

// `bins + 1` knots from −bound to bound out of the unnormalised sizes at p[0], p[stride], …
__device__ void knots(const float* p, int stride, int bins, float scale, float min_size,
                      float bound, float* out) {
    float max = -INFINITY;
    for (int j = 0; j < bins; ++j) max = fmaxf(max, p[j * stride] / scale);
    float sum = 0.f;
    for (int j = 0; j < bins; ++j) sum += expf(p[j * stride] / scale - max);
    float acc = 0.f;
    out[0] = -bound;
    for (int j = 0; j < bins; ++j) {
        const float s = expf(p[j * stride] / scale - max) / sum;
        acc += min_size + (1.f - min_size * bins) * s;
        out[j + 1] = 2.f * bound * acc - bound;
    }
    out[bins] = bound;
}

__device__ float softplus(float x) { return x > 20.f ? x : log1pf(expf(x)); }

}  // namespace

// params [batch, 3·bins − 1, len]: widths and heights (divided by `scale` here), then the
// inner derivatives; values and out [batch, len].
extern "C" __global__ void ferrovox_spline_inverse(const float* __restrict__ params,
                                                   const float* __restrict__ values,
                                                   float* __restrict__ out, int batch, int len,
                                                   int bins, float scale, float tail_bound,
                                                   float boundary) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= batch * len || bins > MAX_BINS) return;
    const float y = values[i];
    if (!(y >= -tail_bound && y <= tail_bound)) {
        out[i] = y;
        return;
    }
    const int b = i / len, t = i - b * len;
    const float* p = params + (size_t)b * (3 * bins - 1) * len + t;
    float cw[MAX_BINS + 1], ch[MAX_BINS + 1];
    knots(p, len, bins, scale, MIN_BIN_WIDTH, tail_bound, cw);
    knots(p + (size_t)bins * len, len, bins, scale, MIN_BIN_HEIGHT, tail_bound, ch);
    // The last knot is nudged up for the search only, as upstream does.
    int bin = 0;
    for (int j = 0; j <= bins; ++j) {
        const float k = j == bins ? ch[j] + 1e-6f : ch[j];
        if (y >= k) bin = j;
    }
    bin = min(bin, bins - 1);
    const float w = cw[bin + 1] - cw[bin], h = ch[bin + 1] - ch[bin];
    const float delta = h / w;
    auto derivative = [&](int j) {
        const float u = (j == 0 || j == bins) ? boundary : p[(size_t)(2 * bins + j - 1) * len];
        return MIN_DERIVATIVE + softplus(u);
    };
    const float d0 = derivative(bin), d1 = derivative(bin + 1);
    const float i1 = d0 + d1 - 2.f * delta;
    const float i2 = y - ch[bin];
    const float i3 = i2 * i1;
    const float a = h * (delta - d0) + i3;
    const float bq = h * d0 - i3;
    const float c = -delta * i2;
    const float disc = bq * bq - 4.f * a * c;
    const float root = (2.f * c) / (-bq - sqrtf(fmaxf(disc, 0.f)));
    out[i] = root * w + cw[bin];
}
