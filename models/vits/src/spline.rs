//! The inverse of the unconstrained rational-quadratic spline (`_unconstrained_rational_quadratic_spline`
//! with `reverse=True` in transformers' `modeling_vits.py`): identity outside `±tail_bound`,
//! a monotonic piecewise rational-quadratic map inside. Evaluated on the host in f32 (one
//! value per text token, each with its own bin search); on CUDA the same steps run as
//! ferrovox-device's `CudaSplineInverse`.

/// Spline parameters for one element: `bins` widths, `bins` heights, `bins − 1` derivatives.
#[derive(Debug, Clone, Copy)]
pub struct SplineParams<'a> {
    pub widths: &'a [f32],
    pub heights: &'a [f32],
    pub derivatives: &'a [f32],
}

const MIN_BIN_WIDTH: f32 = 1e-3;
const MIN_BIN_HEIGHT: f32 = 1e-3;
const MIN_DERIVATIVE: f32 = 1e-3;

fn softmax(x: &[f32]) -> Vec<f32> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = x.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

/// torch's softplus (beta 1, threshold 20).
fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// Knot positions from unnormalised bin sizes: `bins + 1` values from `−bound` to `bound`.
fn knots(unnormalized: &[f32], min_size: f32, bound: f32) -> Vec<f32> {
    let n = unnormalized.len();
    let sizes = softmax(unnormalized);
    let mut knots = Vec::with_capacity(n + 1);
    knots.push(0.0f32);
    let mut acc = 0.0f32;
    for s in sizes {
        acc += min_size + (1.0 - min_size * n as f32) * s;
        knots.push(acc);
    }
    for k in knots.iter_mut() {
        *k = 2.0 * bound * *k - bound;
    }
    knots[0] = -bound;
    knots[n] = bound;
    knots
}

/// The unconstrained derivative at both ends: softplus of it plus the minimum gives 1.
pub fn boundary_derivative() -> f32 {
    (((1.0 - MIN_DERIVATIVE) as f64).exp() - 1.0).ln() as f32
}

/// Inverts the spline at `y`.
pub fn inverse(y: f32, p: SplineParams, tail_bound: f32) -> f32 {
    if !(-tail_bound..=tail_bound).contains(&y) {
        return y;
    }
    let bins = p.widths.len();
    let cumwidths = knots(p.widths, MIN_BIN_WIDTH, tail_bound);
    let mut cumheights = knots(p.heights, MIN_BIN_HEIGHT, tail_bound);
    let boundary = boundary_derivative();
    let derivative = |i: usize| -> f32 {
        let u = if i == 0 || i == bins {
            boundary
        } else {
            p.derivatives[i - 1]
        };
        MIN_DERIVATIVE + softplus(u)
    };
    let width = |i: usize| cumwidths[i + 1] - cumwidths[i];
    let height = cumheights[1..]
        .iter()
        .zip(&cumheights[..bins])
        .map(|(a, b)| a - b)
        .collect::<Vec<_>>();
    cumheights[bins] += 1e-6;
    let bin = cumheights
        .iter()
        .filter(|&&k| y >= k)
        .count()
        .saturating_sub(1);
    let bin = bin.min(bins - 1);
    let (w, h) = (width(bin), height[bin]);
    let delta = h / w;
    let (d0, d1) = (derivative(bin), derivative(bin + 1));
    let i1 = d0 + d1 - 2.0 * delta;
    let i2 = y - cumheights[bin];
    let i3 = i2 * i1;
    let a = h * (delta - d0) + i3;
    let b = h * d0 - i3;
    let c = -delta * i2;
    let disc = b * b - 4.0 * a * c;
    let root = (2.0 * c) / (-b - disc.max(0.0).sqrt());
    root * w + cumwidths[bin]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forward spline, to check that `inverse` inverts it.
    fn forward(x: f32, p: SplineParams, bound: f32) -> f32 {
        if !(-bound..=bound).contains(&x) {
            return x;
        }
        let bins = p.widths.len();
        let cw = knots(p.widths, MIN_BIN_WIDTH, bound);
        let ch = knots(p.heights, MIN_BIN_HEIGHT, bound);
        let boundary = (((1.0 - MIN_DERIVATIVE) as f64).exp() - 1.0).ln() as f32;
        let d = |i: usize| {
            MIN_DERIVATIVE
                + softplus(if i == 0 || i == bins {
                    boundary
                } else {
                    p.derivatives[i - 1]
                })
        };
        let mut loc = cw.clone();
        loc[bins] += 1e-6;
        let bin = loc.iter().filter(|&&k| x >= k).count() - 1;
        let (w, h) = (cw[bin + 1] - cw[bin], ch[bin + 1] - ch[bin]);
        let delta = h / w;
        let theta = (x - cw[bin]) / w;
        let t1 = theta * (1.0 - theta);
        let num = h * (delta * theta * theta + d(bin) * t1);
        let den = delta + (d(bin) + d(bin + 1) - 2.0 * delta) * t1;
        ch[bin] + num / den
    }

    #[test]
    fn inverse_inverts_forward_and_tails_are_identity() {
        let widths = [0.3, -1.0, 0.5, 2.0, 0.0, 0.1, -0.4, 0.9, 1.1, -2.0];
        let heights = [1.3, 0.2, -0.5, 0.0, 0.7, -1.1, 0.4, 0.8, -0.3, 0.6];
        let derivatives = [0.1, -0.3, 0.9, 1.5, -2.0, 0.0, 0.4, -0.8, 0.2];
        let p = SplineParams {
            widths: &widths,
            heights: &heights,
            derivatives: &derivatives,
        };
        for i in -49..=49 {
            let x = i as f32 * 0.1;
            let y = forward(x, p, 5.0);
            let back = inverse(y, p, 5.0);
            assert!((back - x).abs() < 1e-4, "x={x} y={y} back={back}");
        }
        assert_eq!(inverse(7.5, p, 5.0), 7.5);
        assert_eq!(inverse(-5.01, p, 5.0), -5.01);
    }
}
