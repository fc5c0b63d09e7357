//! Text → units → audio pieces → one joined stream: the one path every caller's synthesis
//! takes (through [`crate::Voice`]).

use ferrovox_audio::{Join, Joiner};

use crate::{Audio, EngineError, Pieces, SynthesisOptions, TtsModel, Unit};

/// Whether a stream's units may go through the model in pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piecewise {
    /// As the model asks ([`TtsModel::pieces`]).
    AsModel,
    /// Only units the model must stream (whole-file synthesis, a batched voice).
    Required,
}

/// Synthesizes `units` one by one, whole through `synth` or in pieces through the model, and
/// hands the joined audio to `sink`.
pub(crate) fn stream_units(
    model: &dyn TtsModel,
    units: &[Unit],
    options: &SynthesisOptions,
    piecewise: Piecewise,
    synth: &mut dyn FnMut(&Unit) -> Result<Vec<f32>, EngineError>,
    sink: &mut dyn FnMut(&[f32]) -> Result<(), EngineError>,
) -> Result<(), EngineError> {
    let rate = model.sample_rate();
    let silence = (options.unit_silence * rate as f64) as usize;
    let mut joiner = Joiner::for_rate(rate);
    for (i, unit) in units.iter().enumerate() {
        let then = if unit.ends_sentence {
            Join::Silence(silence)
        } else {
            Join::Crossfade
        };
        let in_pieces = match (model.pieces(), piecewise) {
            (Pieces::EveryUnit, _) => true,
            (Pieces::FirstUnit, Piecewise::AsModel) => i == 0,
            (Pieces::FirstUnit, Piecewise::Required) => false,
        };
        let span = tracing::info_span!("unit", ids = unit.ids.len());
        if in_pieces {
            let _unit = span.entered();
            // Pieces go out as they come, but for a tail long enough for the unit's own join
            // (a fade or a crossfade) to be applied once the unit is done.
            let keep = 2 * (rate as usize / 50);
            let mut tail: Vec<f32> = Vec::new();
            model.stream_unit(unit, options, &mut |piece| {
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

/// SplitMix64's finaliser, to derive each unit's seed from the request's.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Validates the options, normalizes (when asked) and splits text into the model's units,
/// each with its own seed. Text with nothing a voice can speak is the caller's error.
pub(crate) fn prepare_text(
    model: &dyn TtsModel,
    text: &str,
    options: &SynthesisOptions,
) -> Result<Vec<Unit>, EngineError> {
    options.validate_common()?;
    model.validate(options)?;
    if text.trim().is_empty() {
        return Err(EngineError::EmptyInput("the text is empty".into()));
    }
    let mut units = if options.normalize {
        model.prepare(&ferrovox_text::normalize_english(text), options)?
    } else {
        model.prepare(text, options)?
    };
    if units.is_empty() {
        return Err(EngineError::EmptyInput(
            "the text holds nothing this voice can speak (only punctuation or symbols?)".into(),
        ));
    }
    for (i, unit) in units.iter_mut().enumerate() {
        unit.seed = mix(options.seed ^ mix(i as u64));
    }
    Ok(units)
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
