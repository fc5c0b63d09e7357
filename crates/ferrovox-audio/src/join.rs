//! Stitches separately synthesized pieces into one stream without clicks. A piece that ends a
//! sentence fades out into inserted silence and the next fades in; a piece cut mid-sentence
//! (long-input chunking) overlaps the next one and the two are crossfaded. The joiner holds
//! back only the overlap, so it works on a stream.

/// How a piece connects to the one after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// Fade out, then this many samples of silence.
    Silence(usize),
    /// Crossfade into the next piece.
    Crossfade,
    /// The next piece continues this one sample for sample (a unit decoded in pieces).
    Continue,
}

/// The streaming joiner.
#[derive(Debug, Clone)]
pub struct Joiner {
    edge: usize,
    overlap: usize,
    held: Vec<f32>,
    fade_in_next: bool,
}

/// Raised-cosine gain rising from 0 to 1 over `n` samples, at sample `i`.
fn rise(i: usize, n: usize) -> f32 {
    let x = (i as f32 + 0.5) / n as f32;
    0.5 - 0.5 * (std::f32::consts::PI * x).cos()
}

impl Joiner {
    /// `edge`: fade length at silences; `overlap`: crossfade length between cut pieces.
    pub fn new(edge: usize, overlap: usize) -> Self {
        Self {
            edge,
            overlap,
            held: Vec::new(),
            fade_in_next: true,
        }
    }

    /// Fades of 4 ms at silences and a 20 ms crossfade, at `sample_rate`.
    pub fn for_rate(sample_rate: u32) -> Self {
        Self::new(sample_rate as usize / 250, sample_rate as usize / 50)
    }

    /// Adds a piece; returns the samples that are final.
    pub fn push(&mut self, piece: &[f32], then: Join) -> Vec<f32> {
        let mut audio = piece.to_vec();
        if !self.held.is_empty() {
            let held = std::mem::take(&mut self.held);
            let n = held.len().min(audio.len());
            for (i, (a, h)) in audio.iter_mut().zip(&held).enumerate() {
                let w = rise(i, n);
                *a = *h * (1.0 - w) + *a * w;
            }
            // A piece shorter than the overlap: the rest of the held tail still fades out.
            if held.len() > n {
                let rest = &held[n..];
                let m = rest.len();
                audio.extend(rest.iter().enumerate().map(|(i, h)| h * (1.0 - rise(i, m))));
            }
        } else if self.fade_in_next {
            let n = self.edge.min(audio.len());
            for (i, a) in audio.iter_mut().take(n).enumerate() {
                *a *= rise(i, n);
            }
        }
        match then {
            Join::Silence(gap) => {
                fade_out(&mut audio, self.edge);
                audio.resize(audio.len() + gap, 0.0);
                self.fade_in_next = true;
            }
            Join::Crossfade => {
                let keep = self.overlap.min(audio.len() / 2);
                self.held = audio.split_off(audio.len() - keep);
                self.fade_in_next = false;
            }
            Join::Continue => self.fade_in_next = false,
        }
        audio
    }

    /// Ends the stream: whatever is held back fades out.
    pub fn finish(&mut self) -> Vec<f32> {
        let mut rest = std::mem::take(&mut self.held);
        let n = rest.len();
        fade_out(&mut rest, n);
        self.fade_in_next = true;
        rest
    }
}

fn fade_out(audio: &mut [f32], len: usize) {
    let n = len.min(audio.len());
    let start = audio.len() - n;
    for (i, a) in audio[start..].iter_mut().enumerate() {
        *a *= 1.0 - rise(i, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_step(x: &[f32]) -> f32 {
        x.windows(2)
            .map(|w| (w[1] - w[0]).abs())
            .fold(0f32, f32::max)
    }

    #[test]
    fn cut_pieces_crossfade_without_a_step() {
        let mut j = Joiner::new(8, 100);
        let mut out = j.push(&[0.8; 1000], Join::Crossfade);
        out.extend(j.push(&[-0.8; 1000], Join::Silence(0)));
        out.extend(j.finish());
        // 1.6 of jump spread over 100 samples, and the ends fade to silence over 8.
        assert!(
            max_step(&out[10..out.len() - 10]) < 0.06,
            "{}",
            max_step(&out)
        );
        assert_eq!(out.len(), 2000 - 100);
        assert!(out[0].abs() < 0.1 && out.last().unwrap().abs() < 0.1);
    }

    #[test]
    fn sentences_fade_into_exact_silence() {
        let mut j = Joiner::new(10, 50);
        let a = j.push(&[0.5; 200], Join::Silence(30));
        assert_eq!(a.len(), 230);
        assert!(a[200..].iter().all(|&s| s == 0.0));
        assert!(a[199].abs() < 0.01 && (a[100] - 0.5).abs() < 1e-6);
        let b = j.push(&[0.5; 200], Join::Silence(0));
        assert!(b[0].abs() < 0.01, "fades in after a silence");
    }

    #[test]
    fn continued_pieces_join_sample_for_sample() {
        let whole: Vec<f32> = (0..400).map(|i| (i as f32 * 0.05).sin()).collect();
        let mut split = Joiner::new(8, 40);
        let mut out = split.push(&whole[..150], Join::Continue);
        out.extend(split.push(&whole[150..], Join::Silence(10)));
        out.extend(split.finish());
        let mut one = Joiner::new(8, 40);
        let mut want = one.push(&whole, Join::Silence(10));
        want.extend(one.finish());
        assert_eq!(out, want);
    }

    #[test]
    fn a_piece_shorter_than_the_overlap_keeps_the_tail() {
        let mut j = Joiner::new(0, 40);
        let a = j.push(&[1.0; 100], Join::Crossfade);
        let b = j.push(&[1.0; 10], Join::Silence(0));
        // 60 emitted, 40 held: 10 mixed with the short piece, 30 fading out after it.
        assert_eq!(a.len() + b.len(), 60 + 10 + 30);
        assert!(max_step(&b) < 0.2);
    }
}
