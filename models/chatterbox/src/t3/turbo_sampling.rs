//! Turbo's token choice (`T3.inference_turbo`): transformers' temperature, top-k and top-p
//! warpers, then the repetition penalty over the tokens generated so far, a softmax and one
//! draw. On the host: one generation's logits over the speech vocabulary.

use crate::{Error, Result};

/// Turbo's sampling controls; `Default` is `ChatterboxTurboTTS.generate`'s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurboOptions {
    /// Divides the logits; 1 leaves them.
    pub temperature: f32,
    /// Keeps the `top_k` largest logits; 0 keeps all.
    pub top_k: usize,
    /// Keeps the smallest set of most likely tokens whose probability reaches `top_p`; 1 keeps
    /// all.
    pub top_p: f32,
    /// Divides positive and multiplies negative logits of tokens already generated.
    pub repetition_penalty: f32,
    /// Tokens drawn at most, the stop token included.
    pub max_new_tokens: usize,
}

impl Default for TurboOptions {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 1000,
            top_p: 0.95,
            repetition_penalty: 1.2,
            max_new_tokens: 1000,
        }
    }
}

impl TurboOptions {
    /// Refuses controls the processors cannot run with, naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: String| Err(Error::Input(format!("{field}: {why}")));
        if !(self.temperature > 0.0 && self.temperature <= 10.0) {
            return bad(
                "temperature",
                format!("{} is outside (0, 10]", self.temperature),
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", format!("{} is outside (0, 1]", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty <= 10.0) {
            return bad(
                "repetition_penalty",
                format!("{} is outside (0, 10]", self.repetition_penalty),
            );
        }
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens", "0 draws nothing".into());
        }
        Ok(())
    }

    /// `logits` after the processors `inference_turbo` builds from these options, in its
    /// order; `seen` are the ids the penalty applies to. Filtered tokens become −∞.
    pub fn process(&self, logits: &mut [f32], seen: &[u32]) {
        if self.temperature != 1.0 {
            logits.iter_mut().for_each(|l| *l /= self.temperature);
        }
        if self.top_k > 0 && self.top_k < logits.len() {
            let mut sorted = logits.to_vec();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let kth = sorted[self.top_k - 1];
            logits
                .iter_mut()
                .filter(|l| **l < kth)
                .for_each(|l| *l = f32::NEG_INFINITY);
        }
        if self.top_p < 1.0 {
            top_p(logits, self.top_p);
        }
        if self.repetition_penalty != 1.0 {
            let mut ids: Vec<u32> = seen.to_vec();
            ids.sort_unstable();
            ids.dedup();
            for id in ids {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l < 0.0 {
                        *l * self.repetition_penalty
                    } else {
                        *l / self.repetition_penalty
                    };
                }
            }
        }
    }
}

/// transformers' `TopPLogitsWarper`: sort ascending, drop the tokens whose cumulative
/// probability is at most `1 − top_p`, always keeping the most likely.
fn top_p(logits: &mut [f32], top_p: f32) {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[a].total_cmp(&logits[b]));
    let sorted: Vec<f32> = order.iter().map(|&i| logits[i]).collect();
    let probs = softmax(&sorted);
    // torch's cumsum of f32 accumulates in f64 and rounds each sum to f32.
    let mut cumulative = 0f64;
    let last = order.len().saturating_sub(1);
    let bound = (1.0 - f64::from(top_p)) as f32;
    let mut drop = Vec::new();
    for (rank, &p) in probs.iter().enumerate() {
        cumulative += f64::from(p);
        if cumulative as f32 <= bound && rank != last {
            drop.push(order[rank]);
        }
    }
    for i in drop {
        logits[i] = f32::NEG_INFINITY;
    }
}

/// The softmax of `logits` (−∞ gives 0).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// The token `torch.multinomial(probs, 1)` draws with exponential draws `q`: the first
/// index of the largest `probs / q`.
pub fn draw(probs: &[f32], q: &[f32]) -> u32 {
    let mut best = 0;
    let mut best_ratio = f32::NEG_INFINITY;
    for (i, (&p, &q)) in probs.iter().zip(q).enumerate() {
        let r = p / q;
        if r > best_ratio {
            best = i;
            best_ratio = r;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_the_largest_and_ties_at_the_edge() {
        let o = TurboOptions {
            temperature: 1.0,
            top_k: 2,
            top_p: 1.0,
            repetition_penalty: 1.0,
            ..Default::default()
        };
        let mut l = vec![1.0, 3.0, 2.0, 2.0, 0.5];
        o.process(&mut l, &[]);
        assert_eq!(l[..4], [f32::NEG_INFINITY, 3.0, 2.0, 2.0]);
        assert_eq!(l[4], f32::NEG_INFINITY);
    }

    #[test]
    fn the_penalty_comes_last_and_counts_each_id_once() {
        let o = TurboOptions {
            temperature: 2.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 2.0,
            ..Default::default()
        };
        let mut l = vec![4.0, -4.0, 4.0];
        o.process(&mut l, &[0, 1, 1]);
        assert_eq!(l, [1.0, -4.0, 2.0]);
    }

    #[test]
    fn top_p_keeps_the_most_likely_set() {
        let mut l = vec![0.0, 10.0, 9.0, -5.0];
        top_p(&mut l, 0.9);
        assert_eq!(l[1..3], [10.0, 9.0]);
        assert!(l[0] == f32::NEG_INFINITY && l[3] == f32::NEG_INFINITY);
    }
}
