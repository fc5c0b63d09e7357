//! Text → units → audio pieces → one joined stream, shared by models and engine voices.

use ferrovox_audio::{Join, Joiner};

use crate::{Audio, EngineError, SynthesisOptions, TtsModel, Unit};

/// How the first unit of a stream is synthesized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FirstUnit {
    /// Like every other unit (whole-file synthesis, or a batched voice).
    Whole,
    /// Through [`TtsModel::synthesize_unit_early`], for time to first audio.
    Early,
}

/// Synthesizes `text` unit by unit with `synth` and hands the joined audio to `sink`.
pub(crate) fn stream_units<M: TtsModel + ?Sized>(
    model: &M,
    text: &str,
    options: &SynthesisOptions,
    first: FirstUnit,
    synth: &mut dyn FnMut(&Unit) -> Result<Vec<f32>, EngineError>,
    sink: &mut dyn FnMut(&[f32]) -> Result<(), EngineError>,
) -> Result<(), EngineError> {
    options.validate()?;
    let _span = tracing::info_span!("synthesize", voice = model.id(), chars = text.len()).entered();
    let units = {
        let _prepare = tracing::info_span!("prepare").entered();
        prepare_text(model, text, options)?
    };
    let rate = model.sample_rate();
    let silence = (options.unit_silence * rate as f64) as usize;
    let mut joiner = Joiner::for_rate(rate);
    for (i, unit) in units.iter().enumerate() {
        let then = if unit.ends_sentence {
            Join::Silence(silence)
        } else {
            Join::Crossfade
        };
        let _unit = tracing::info_span!("unit", ids = unit.ids.len()).entered();
        if i == 0 && first == FirstUnit::Early {
            // Pieces go out as they come, but for a tail long enough for the unit's own join
            // (a fade or a crossfade) to be applied once the unit is done.
            let keep = 2 * (rate as usize / 50);
            let mut tail: Vec<f32> = Vec::new();
            model.synthesize_unit_early(unit, options, &mut |piece| {
                tail.extend_from_slice(&piece);
                if tail.len() > keep {
                    let ready: Vec<f32> = tail.drain(..tail.len() - keep).collect();
                    let out = joiner.push(&ready, Join::Continue);
                    if !out.is_empty() {
                        sink(&out)?;
                    }
                }
                Ok(())
            })?;
            let out = joiner.push(&tail, then);
            if !out.is_empty() {
                sink(&out)?;
            }
            continue;
        }
        let out = joiner.push(&synth(unit)?, then);
        if !out.is_empty() {
            sink(&out)?;
        }
    }
    let rest = joiner.finish();
    if !rest.is_empty() {
        sink(&rest)?;
    }
    Ok(())
}

/// Normalizes (when asked) and splits text into the model's units.
pub(crate) fn prepare_text<M: TtsModel + ?Sized>(
    model: &M,
    text: &str,
    options: &SynthesisOptions,
) -> Result<Vec<Unit>, EngineError> {
    if options.normalize {
        model.prepare(&ferrovox_text::normalize_english(text))
    } else {
        model.prepare(text)
    }
}

/// Runs a streaming synthesis and gathers its chunks into one [`Audio`].
pub(crate) fn collect(
    sample_rate: u32,
    stream: impl FnOnce(&mut dyn FnMut(&[f32]) -> Result<(), EngineError>) -> Result<(), EngineError>,
) -> Result<Audio, EngineError> {
    let mut samples = Vec::new();
    stream(&mut |chunk| {
        samples.extend_from_slice(chunk);
        Ok(())
    })?;
    Ok(Audio {
        samples,
        sample_rate,
    })
}
