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
        let span = tracing::info_span!("unit", ids = unit.ids.len());
        if i == 0 && first == FirstUnit::Early {
            let _unit = span.entered();
            // Pieces go out as they come, but for a tail long enough for the unit's own join
            // (a fade or a crossfade) to be applied once the unit is done.
            let keep = 2 * (rate as usize / 50);
            let mut tail: Vec<f32> = Vec::new();
            model.synthesize_unit_early(unit, options, &mut |piece| {
                tail.extend_from_slice(&piece);
                if tail.len() <= keep {
                    return Ok(());
                }
                let ready: Vec<f32> = tail.drain(..tail.len() - keep).collect();
                join_into(&mut joiner, &ready, Join::Continue, sink)
            })?;
            join_into(&mut joiner, &tail, then, sink)?;
        } else {
            let audio = {
                let _unit = span.entered();
                synth(unit)?
            };
            join_into(&mut joiner, &audio, then, sink)?;
        }
    }
    let rest = joiner.finish();
    if !rest.is_empty() {
        sink(&rest)?;
    }
    Ok(())
}

/// Pushes `piece` into `joiner` and hands on whatever became final.
fn join_into(
    joiner: &mut Joiner,
    piece: &[f32],
    then: Join,
    sink: &mut dyn FnMut(&[f32]) -> Result<(), EngineError>,
) -> Result<(), EngineError> {
    let out = joiner.push(piece, then);
    if out.is_empty() {
        Ok(())
    } else {
        sink(&out)
    }
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
