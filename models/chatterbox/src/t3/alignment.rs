//! The multilingual v2 T3's stop detector (`AlignmentStreamAnalyzer`,
//! `t3/inference/alignment_stream_analyzer.py`). A few attention heads of the backbone follow
//! the text as speech is spoken; their mean over the text's columns places each new speech
//! token in the text. From that place the detector keeps the stop token away until the end of
//! the text is near, and forces it when the speech lingers on the last text tokens, returns to
//! earlier text, or repeats a token.

/// The heads that follow the text, `(layer, head)`, as upstream names them.
pub const ALIGNED_HEADS: [(usize, usize); 3] = [(12, 15), (13, 11), (9, 2)];

/// The logit upstream writes to suppress or force a token (safe in every 16-bit float type).
const FORCE: f32 = 32768.0;

/// What one step found, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StepReport {
    /// The text position this step's speech token attends most.
    pub attended: usize,
    /// Where the detector places the speech in the text: `attended`, unless that jumped too
    /// far from the place before (then the place stays).
    pub text_position: usize,
    /// The stop token was kept away: the text's end is not near yet.
    pub stop_suppressed: bool,
    /// The stop token was forced, and why.
    pub long_tail: bool,
    pub alignment_repetition: bool,
    pub token_repetition: bool,
}

impl StepReport {
    /// Whether the step forced the stop token.
    pub fn forced_stop(&self) -> bool {
        self.long_tail || self.alignment_repetition || self.token_repetition
    }
}

/// One generation's detector state.
#[derive(Debug, Clone)]
pub struct AlignmentDetector {
    /// The text's columns in the prefill, `start..end` (after the conditioning prefix).
    text: std::ops::Range<usize>,
    stop_token: u32,
    /// Every step's attention over the text, a row per speech position.
    alignment: Vec<Vec<f32>>,
    frame: usize,
    text_position: i64,
    started: bool,
    complete: bool,
    completed_at: Option<usize>,
    /// The last 8 tokens seen, the start token first.
    recent: Vec<u32>,
}

impl AlignmentDetector {
    /// A detector for a prefill whose text tokens sit at `text` (start and stop text tokens
    /// included), generating towards `stop_token`.
    pub fn new(text: std::ops::Range<usize>, stop_token: u32) -> Self {
        Self {
            text,
            stop_token,
            alignment: Vec::new(),
            frame: 0,
            text_position: 0,
            started: false,
            complete: false,
            completed_at: None,
            recent: Vec::new(),
        }
    }

    /// The first query row of this step's attention the detector reads: on the first step the
    /// prefill's speech positions (those after the text), then the one new position.
    pub fn first_row(&self) -> usize {
        if self.frame == 0 {
            self.text.end
        } else {
            0
        }
    }

    /// One step: `attention` holds the aligned heads' mean attention rows of the conditional
    /// guidance row (every position attended so far: on the first step the prefill's rows from
    /// [`first_row`](Self::first_row) on, then the new position's row), `last_token` the
    /// token before this step's (the start token first). Adjusts the guided `logits` over the
    /// speech vocabulary as upstream does.
    pub fn step(
        &mut self,
        attention: &[Vec<f32>],
        last_token: u32,
        logits: &mut [f32],
    ) -> StepReport {
        let (i, j) = (self.text.start, self.text.end);
        let s = j - i;
        let mut chunk: Vec<Vec<f32>> = attention
            .iter()
            .map(|row| {
                let mut r = row[i..j].to_vec();
                // Upstream zeroes the columns past the speech frame count (no monotonic mask).
                for v in r.iter_mut().skip(self.frame + 1) {
                    *v = 0.0;
                }
                r
            })
            .collect();
        let last = chunk.pop().expect("a step has at least one attention row");
        let current = argmax(&last) as i64;
        chunk.push(last);
        self.alignment.extend(chunk);
        let a = &self.alignment;
        let t = a.len();

        let jump = current - self.text_position;
        if -4 < jump && jump < 7 {
            self.text_position = current;
        }

        // A noisy start attends the last columns, or nothing strongly in the first ones.
        if !self.started {
            let tail = a[t.saturating_sub(2)..]
                .iter()
                .flat_map(|r| r[s.saturating_sub(2)..].iter().copied())
                .fold(f32::NEG_INFINITY, f32::max);
            let head = a
                .iter()
                .flat_map(|r| r[..s.min(4)].iter().copied())
                .fold(f32::NEG_INFINITY, f32::max);
            let false_start = tail > 0.1 || head < 0.5;
            self.started = !false_start;
        }

        self.complete = self.complete || self.text_position >= s as i64 - 3;
        if self.complete && self.completed_at.is_none() {
            self.completed_at = Some(t);
        }

        let (long_tail, alignment_repetition) = match self.completed_at {
            Some(from) if self.complete => {
                let since = &a[from..];
                // The last three text tokens held for 5 frames or more (200 ms).
                let tail_cols = s.saturating_sub(3)..s;
                let long_tail = tail_cols
                    .map(|c| since.iter().map(|r| r[c]).sum::<f32>())
                    .fold(f32::NEG_INFINITY, f32::max)
                    >= 5.0;
                // Attention back on earlier text after the end was reached. With five text
                // tokens or fewer there is no earlier text (upstream's reduction would fail).
                let earlier = s.saturating_sub(5);
                let repetition = earlier > 0
                    && since
                        .iter()
                        .map(|r| {
                            r[..earlier]
                                .iter()
                                .copied()
                                .fold(f32::NEG_INFINITY, f32::max)
                        })
                        .sum::<f32>()
                        > 5.0;
                (long_tail, repetition)
            }
            _ => (false, false),
        };

        self.recent.push(last_token);
        if self.recent.len() > 8 {
            self.recent.remove(0);
        }
        let n = self.recent.len();
        let token_repetition = n >= 3 && self.recent[n - 1] == self.recent[n - 2];

        let stop = self.stop_token as usize;
        let stop_suppressed = current < s as i64 - 3 && s > 5;
        if stop_suppressed {
            logits[stop] = -FORCE;
        }
        let report = StepReport {
            attended: current as usize,
            text_position: self.text_position as usize,
            stop_suppressed,
            long_tail,
            alignment_repetition,
            token_repetition,
        };
        if report.forced_stop() {
            logits.fill(-FORCE);
            logits[stop] = FORCE;
        }
        self.frame += 1;
        report
    }
}

/// The first index of the largest value, as `torch.argmax` picks.
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (k, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = k;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A detector over 10 text tokens at columns 3..13 of a 15-position prefill.
    fn detector() -> AlignmentDetector {
        AlignmentDetector::new(3..13, 7)
    }

    /// An attention row over `width` positions peaked at text column `at`.
    fn row(width: usize, at: usize) -> Vec<f32> {
        let mut r = vec![0.0; width];
        r[3 + at] = 1.0;
        r
    }

    #[test]
    fn the_stop_token_is_kept_away_until_the_end_of_the_text_is_near() {
        let mut d = detector();
        let mut logits = vec![1.0; 10];
        let r = d.step(&[row(15, 0), row(15, 0)], 9, &mut logits);
        assert!(r.stop_suppressed && !r.forced_stop(), "{r:?}");
        assert_eq!(logits[7], -FORCE);
        // Speech walks along the text; near its end the stop token is let be.
        let mut width = 15;
        let mut last = 0;
        for at in 1..=7 {
            width += 1;
            let mut logits = vec![1.0; 10];
            let r = d.step(&[row(width, at)], at as u32, &mut logits);
            last = r.text_position;
            assert_eq!(r.stop_suppressed, at < 7, "{at}: {r:?}");
        }
        assert_eq!(last, 7);
    }

    #[test]
    fn a_long_tail_on_the_last_tokens_forces_the_stop_token() {
        let mut d = detector();
        let mut logits = vec![1.0; 10];
        d.step(&[row(15, 0), row(15, 0)], 9, &mut logits);
        let mut forced = None;
        for step in 1..20 {
            // Walk to the end, then stay on the last text token.
            let at = step.min(9);
            let mut logits = vec![1.0; 10];
            // Distinct tokens, so that only the tail can force the stop.
            let r = d.step(&[row(15 + step, at)], 100 + step as u32, &mut logits);
            if r.forced_stop() {
                assert!(r.long_tail, "{r:?}");
                assert!(logits
                    .iter()
                    .enumerate()
                    .all(|(k, &v)| v == if k == 7 { FORCE } else { -FORCE }));
                forced = Some(step);
                break;
            }
        }
        // Complete at position 7 (10 - 3) on step 7, its frames counted from step 8; the last
        // text token is held from step 9, for its fifth frame on step 13.
        assert_eq!(forced, Some(13));
    }

    #[test]
    fn the_same_token_twice_forces_the_stop_token() {
        let mut d = detector();
        let mut logits = vec![1.0; 10];
        assert!(!d
            .step(&[row(15, 0), row(15, 0)], 9, &mut logits)
            .forced_stop());
        assert!(!d.step(&[row(16, 1)], 4, &mut logits).forced_stop());
        let r = d.step(&[row(17, 2)], 4, &mut logits);
        assert!(r.token_repetition && r.forced_stop(), "{r:?}");
    }

    #[test]
    fn a_jump_in_the_text_is_not_followed() {
        let mut d = detector();
        let mut logits = vec![1.0; 10];
        d.step(&[row(15, 0), row(15, 0)], 9, &mut logits);
        // Columns past the frame count are zeroed: on frame 1 only columns 0 and 1 count.
        let r = d.step(&[row(16, 8)], 1, &mut logits);
        assert_eq!(r.text_position, 0, "{r:?}");
    }
}
