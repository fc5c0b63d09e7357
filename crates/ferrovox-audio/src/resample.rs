//! Sample-rate conversion with rubato's FFT resampler (exact rational ratios such as
//! 22050 → 24000 Hz), usable on a stream: chunk boundaries leave no trace in the output.

use rubato::{FftFixedIn, Resampler};

/// Why resampling failed.
#[derive(Debug, thiserror::Error)]
pub enum ResampleError {
    /// A rate of zero or a ratio rubato cannot build.
    #[error("cannot resample {from} Hz to {to} Hz: {reason}")]
    Rates { from: u32, to: u32, reason: String },
    /// The resampler failed mid-stream.
    #[error("resampling failed: {0}")]
    Process(String),
}

const CHUNK: usize = 1024;

/// A resampler fed piece by piece. The output equals resampling the concatenated input at once.
pub struct StreamResampler {
    inner: Option<FftFixedIn<f32>>,
    from: u32,
    to: u32,
    pending: Vec<f32>,
    /// Leading output samples still to drop (the filter's delay).
    delay_left: usize,
    consumed: u64,
    produced: u64,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl StreamResampler {
    /// A resampler from `from` Hz to `to` Hz (a pass-through when they are equal).
    pub fn new(from: u32, to: u32) -> Result<Self, ResampleError> {
        if from == 0 || to == 0 {
            return Err(ResampleError::Rates {
                from,
                to,
                reason: "sample rates must be positive".into(),
            });
        }
        let inner = if from == to {
            None
        } else {
            Some(
                FftFixedIn::new(from as usize, to as usize, CHUNK, 2, 1).map_err(|e| {
                    ResampleError::Rates {
                        from,
                        to,
                        reason: e.to_string(),
                    }
                })?,
            )
        };
        let delay_left = inner.as_ref().map_or(0, |r| r.output_delay());
        Ok(Self {
            inner,
            from,
            to,
            pending: Vec::new(),
            delay_left,
            consumed: 0,
            produced: 0,
        })
    }

    /// Output samples due for `n` input samples.
    fn due(&self, n: u64) -> u64 {
        (n * self.to as u64).div_ceil(self.from as u64)
    }

    /// Feeds samples; returns the output that is final so far.
    pub fn push(&mut self, input: &[f32]) -> Result<Vec<f32>, ResampleError> {
        self.consumed += input.len() as u64;
        let Some(inner) = self.inner.as_mut() else {
            return Ok(input.to_vec());
        };
        self.pending.extend_from_slice(input);
        let mut out = Vec::new();
        let mut start = 0;
        while self.pending.len() - start >= inner.input_frames_next() {
            let need = inner.input_frames_next();
            let res = inner
                .process(&[&self.pending[start..start + need]], None)
                .map_err(|e| ResampleError::Process(e.to_string()))?;
            start += need;
            let chunk = res.into_iter().next().unwrap_or_default();
            emit(
                &mut self.delay_left,
                &mut self.produced,
                chunk,
                &mut out,
                None,
            );
        }
        self.pending.drain(..start);
        Ok(out)
    }

    /// Flushes the filter; returns the rest of the output. The total output holds
    /// `ceil(input · to / from)` samples.
    pub fn finish(mut self) -> Result<Vec<f32>, ResampleError> {
        let total = self.due(self.consumed);
        let mut out = Vec::new();
        let Some(mut inner) = self.inner.take() else {
            return Ok(out);
        };
        // An empty buffer is refused by the resampler ("insufficient buffer size 0"): when the
        // pushes ended on a whole chunk, the flush starts with no input at all.
        let pending = std::mem::take(&mut self.pending);
        let mut first = Some(pending).filter(|p| !p.is_empty());
        while self.produced < total {
            let res = match first.take() {
                Some(p) => inner.process_partial(Some(&[p]), None),
                None => inner.process_partial(None::<&[Vec<f32>]>, None),
            }
            .map_err(|e| ResampleError::Process(e.to_string()))?;
            let chunk = res.into_iter().next().unwrap_or_default();
            if chunk.is_empty() {
                break;
            }
            emit(
                &mut self.delay_left,
                &mut self.produced,
                chunk,
                &mut out,
                Some(total),
            );
        }
        Ok(out)
    }
}

/// Appends `chunk` to `out` after dropping what is left of the filter delay, keeping the total
/// under `limit`.
fn emit(
    delay_left: &mut usize,
    produced: &mut u64,
    mut chunk: Vec<f32>,
    out: &mut Vec<f32>,
    limit: Option<u64>,
) {
    let skip = (*delay_left).min(chunk.len());
    *delay_left -= skip;
    chunk.drain(..skip);
    if let Some(limit) = limit {
        chunk.truncate(limit.saturating_sub(*produced) as usize);
    }
    *produced += chunk.len() as u64;
    out.extend_from_slice(&chunk);
}

/// Resamples a whole signal.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>, ResampleError> {
    let mut r = StreamResampler::new(from, to)?;
    let mut out = r.push(samples)?;
    out.extend(r.finish()?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, hz: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| 0.5 * (std::f32::consts::TAU * hz * i as f32 / rate as f32).sin())
            .collect()
    }

    #[test]
    fn pushes_ending_on_a_whole_chunk_still_flush() {
        // The first push of exactly one chunk leaves nothing pending for the flush.
        for (from, to) in [(24_000, 48_000), (22_050, 48_000), (16_000, 48_000)] {
            let mut r = StreamResampler::new(from, to).unwrap();
            let chunk = r.inner.as_ref().map_or(1, |i| i.input_frames_next());
            let mut out = r.push(&sine(from, 440.0, chunk)).unwrap();
            assert!(r.pending.is_empty());
            out.extend(r.finish().unwrap());
            assert_eq!(
                out.len() as u64,
                (chunk as u64 * to as u64).div_ceil(from as u64)
            );
        }
    }

    #[test]
    fn a_sine_keeps_its_frequency_and_phase() {
        let input = sine(22050, 440.0, 22050);
        let out = resample(&input, 22050, 24000).unwrap();
        assert_eq!(out.len(), 24000);
        let expected = sine(24000, 440.0, 24000);
        // Away from the edges, where the filter sees zeros outside the signal.
        let err = out[1000..23000]
            .iter()
            .zip(&expected[1000..23000])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 2e-3, "max error {err}");
    }

    #[test]
    fn pieces_give_the_same_output_as_one_call() {
        let input = sine(22050, 1000.0, 9000);
        let whole = resample(&input, 22050, 24000).unwrap();
        let mut r = StreamResampler::new(22050, 24000).unwrap();
        let mut pieced = Vec::new();
        for piece in input.chunks(777) {
            pieced.extend(r.push(piece).unwrap());
        }
        pieced.extend(r.finish().unwrap());
        assert_eq!(pieced.len(), whole.len());
        let err = pieced
            .iter()
            .zip(&whole)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-6, "{err}");
    }

    #[test]
    fn equal_rates_pass_through_and_zero_is_refused() {
        assert_eq!(resample(&[0.1, 0.2], 24000, 24000).unwrap(), [0.1, 0.2]);
        assert!(matches!(
            StreamResampler::new(0, 24000),
            Err(ResampleError::Rates { .. })
        ));
    }
}
