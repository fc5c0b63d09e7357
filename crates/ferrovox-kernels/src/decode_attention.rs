//! One query per row against a key/value cache on the CPU: a decoder step's attention. Through
//! Candle it is a batched GEMM per head for the scores and another for the values, each a call
//! into `gemm` that packs its operands, for a product of one row; a step of a 30-layer decoder
//! made a few thousand of them. Here each head is a dot product per cached key, a softmax and
//! a weighted sum of value rows, read in place.

use rayon::prelude::*;

/// Where the cache's rows are: `[rows, kv_heads, capacity, head_dim]`, row-major.
#[derive(Debug, Clone, Copy)]
pub struct CacheShape {
    pub rows: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub capacity: usize,
    pub head_dim: usize,
}

/// `y[r, h] = softmax(q[r, h] · K[r, h']ᵀ) · V[r, h']` over row `r`'s first `seen[r]` cached
/// positions, `h' = h / (heads / kv_heads)`; `q` `[rows, heads, head_dim]` already scaled by `1/√d`,
/// `y` `[rows, heads·head_dim]`. Parallel over (row, head) on the current rayon pool.
pub fn one_query_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: CacheShape,
    seen: &[usize],
) -> Result<Vec<f32>, String> {
    let CacheShape {
        rows,
        heads,
        kv_heads,
        capacity,
        head_dim: d,
    } = shape;
    let cache_len = rows * kv_heads * capacity * d;
    if kv_heads == 0
        || heads % kv_heads != 0
        || seen.len() != rows
        || seen.iter().any(|&s| s == 0 || s > capacity)
        || q.len() != rows * heads * d
        || k.len() != cache_len
        || v.len() != cache_len
    {
        return Err(format!(
            "one-query attention: q of {} values, caches of {} and {} for {shape:?}, {seen:?} seen",
            q.len(),
            k.len(),
            v.len()
        ));
    }
    let group = heads / kv_heads;
    let mut y = vec![0f32; rows * heads * d];
    y.par_chunks_mut(d).enumerate().for_each(|(i, out)| {
        let (r, h) = (i / heads, i % heads);
        let seen = seen[r];
        let base = (r * kv_heads + h / group) * capacity * d;
        let qi = &q[i * d..(i + 1) * d];
        let keys = &k[base..base + seen * d];
        let values = &v[base..base + seen * d];
        let mut scores: Vec<f32> = keys.chunks_exact(d).map(|kj| dot(qi, kj)).collect();
        let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
        let mut sum = 0f32;
        for s in &mut scores {
            *s = (*s - max).exp();
            sum += *s;
        }
        out.fill(0.0);
        for (p, vj) in scores.iter().zip(values.chunks_exact(d)) {
            let w = p / sum;
            for (o, x) in out.iter_mut().zip(vj) {
                *o = w.mul_add(*x, *o);
            }
        }
    });
    Ok(y)
}

/// A dot product in 16 independent lanes, which the compiler vectorises.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (a, b) in ca.zip(cb) {
        for l in 0..16 {
            lanes[l] = a[l].mul_add(b[l], lanes[l]);
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for (a, b) in ra.iter().zip(rb) {
        sum = a.mul_add(*b, sum);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Against softmax and weighted sums in f64, with grouped heads and positions past `seen`
    /// holding values that must not be read.
    #[test]
    fn matches_an_f64_attention_and_reads_only_what_was_seen() {
        for (heads, kv_heads, d) in [(4, 4, 64), (4, 2, 20), (2, 1, 7)] {
            let shape = CacheShape {
                rows: 3,
                heads,
                kv_heads,
                capacity: 12,
                head_dim: d,
            };
            let n = shape.rows * kv_heads * shape.capacity * d;
            let q = values(shape.rows * heads * d, 1);
            let (mut k, mut v) = (values(n, 2), values(n, 3));
            // Each row its own length; positions past it hold NaN, which must not be read.
            let seen = [9, 1, 12];
            for c in 0..n {
                let row = c / (kv_heads * shape.capacity * d);
                if (c / d) % shape.capacity >= seen[row] {
                    k[c] = f32::NAN;
                    v[c] = f32::NAN;
                }
            }
            let y = one_query_attention(&q, &k, &v, shape, &seen).unwrap();
            for r in 0..shape.rows {
                let seen = seen[r];
                for h in 0..heads {
                    let base = (r * kv_heads + h / (heads / kv_heads)) * shape.capacity * d;
                    let qi = &q[(r * heads + h) * d..][..d];
                    let s: Vec<f64> = (0..seen)
                        .map(|j| {
                            (0..d)
                                .map(|c| f64::from(qi[c]) * f64::from(k[base + j * d + c]))
                                .sum()
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                    let total: f64 = e.iter().sum();
                    for c in 0..d {
                        let want: f64 = (0..seen)
                            .map(|j| e[j] / total * f64::from(v[base + j * d + c]))
                            .sum();
                        let got = f64::from(y[(r * heads + h) * d + c]);
                        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn bad_shapes_are_refused() {
        let shape = CacheShape {
            rows: 1,
            heads: 3,
            kv_heads: 2,
            capacity: 4,
            head_dim: 2,
        };
        assert!(one_query_attention(&[0.0; 6], &[0.0; 16], &[0.0; 16], shape, &[1]).is_err());
        let shape = CacheShape {
            kv_heads: 3,
            ..shape
        };
        assert!(one_query_attention(&[0.0; 6], &[0.0; 24], &[0.0; 24], shape, &[5]).is_err());
        assert!(one_query_attention(&[0.0; 6], &[0.0; 24], &[0.0; 24], shape, &[0]).is_err());
        assert!(one_query_attention(&[0.0; 6], &[0.0; 24], &[0.0; 24], shape, &[1, 1]).is_err());
        assert!(one_query_attention(&[0.0; 6], &[0.0; 24], &[0.0; 24], shape, &[4]).is_ok());
    }
}
