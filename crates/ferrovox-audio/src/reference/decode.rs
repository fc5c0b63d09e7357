//! Container and codec decoding with symphonia, mixed to mono as packets arrive so that only
//! one channel's worth of samples is ever held.

use std::io::ErrorKind;

use symphonia::core::audio::{ChannelLabel, Channels, Position};
use symphonia::core::codecs::audio::{well_known as codec_ids, AudioCodecId, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;

use super::ReferenceError;

/// The start of a source, mixed to mono.
pub(crate) struct Decoded {
    pub samples: Vec<f32>,
    pub rate: u32,
    pub channels: usize,
    pub container: &'static str,
    pub codec: &'static str,
    /// Per mono frame: whether any source channel reached the clip level there. Kept per frame
    /// because averaging hides a channel that clipped alone.
    pub clipped: Vec<bool>,
    /// The source goes on past what was read.
    pub truncated: bool,
    /// The source's length as the container declares it.
    pub declared_s: Option<f64>,
    /// Packets the codec rejected and that were left out.
    pub skipped_packets: usize,
}

/// Most channels a clip may have (third-order ambisonics has 16).
const MAX_CHANNELS: usize = 32;
/// Highest sample rate a clip may have.
const MAX_RATE: u32 = 384_000;

/// Decodes at most `max_s` seconds from the start of `source`.
pub(crate) fn decode<'s>(
    source: Box<dyn MediaSource + 's>,
    hint: &Hint,
    max_s: f64,
    clip_level: f32,
) -> Result<Decoded, ReferenceError> {
    // symphonia's parsers can panic on damaged headers (a WAV claiming 65535 channels overflows
    // its block-align check); a damaged upload is the client's error, never a crash.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode_unguarded(source, hint, max_s, clip_level)
    }))
    .unwrap_or_else(|_| {
        Err(ReferenceError::Unrecognized {
            detail: "its headers are damaged (the decoder failed on them)".into(),
        })
    })
}

fn decode_unguarded<'s>(
    source: Box<dyn MediaSource + 's>,
    hint: &Hint,
    max_s: f64,
    clip_level: f32,
) -> Result<Decoded, ReferenceError> {
    let stream = MediaSourceStream::new(source, Default::default());
    let mut format = symphonia::default::get_probe()
        .probe(
            hint,
            stream,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| ReferenceError::Unrecognized {
            detail: match e {
                SymError::Unsupported(_) => "no container or stream signature found".into(),
                SymError::IoError(io) if io.kind() == ErrorKind::UnexpectedEof => {
                    "the data ends inside its header".into()
                }
                SymError::IoError(io) => format!("reading failed: {io}"),
                SymError::DecodeError(what) => format!("malformed header: {what}"),
                other => other.to_string(),
            },
        })?;
    let container = format.format_info().short_name;

    let track =
        format
            .default_track(TrackType::Audio)
            .ok_or_else(|| ReferenceError::NoAudioTrack {
                container: container.into(),
            })?;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| ReferenceError::NoAudioTrack {
            container: container.into(),
        })?
        .clone();
    let track_id = track.id;
    // The decoder sizes its buffers from the header: a few kilobytes claiming thousands of
    // channels or a huge rate would take memory no clip needs.
    let claimed_channels = params.channels.as_ref().map_or(0, |c| c.count());
    let claimed_rate = params.sample_rate.unwrap_or(0);
    if claimed_channels > MAX_CHANNELS || claimed_rate > MAX_RATE {
        return Err(ReferenceError::Malformed {
            container: container.into(),
            codec: codec_name(params.codec),
            detail: format!(
                "its header claims {claimed_channels} channels at {claimed_rate} Hz; a clip may \
                 have at most {MAX_CHANNELS} channels at {MAX_RATE} Hz"
            ),
        });
    }
    let declared_s = match (track.num_frames, params.sample_rate) {
        (Some(n), Some(rate)) if rate > 0 => Some(n as f64 / rate as f64),
        _ => None,
    };

    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| match e {
            SymError::Unsupported(what) => ReferenceError::UnsupportedCodec {
                container: container.into(),
                codec: codec_name(params.codec),
                detail: if what.contains("unsupported audio codec") {
                    String::new()
                } else {
                    what.to_string()
                },
            },
            other => ReferenceError::Malformed {
                container: container.into(),
                codec: codec_name(params.codec),
                detail: other.to_string(),
            },
        })?;
    let codec = decoder.codec_info().short_name;
    let malformed = |detail: String| ReferenceError::Malformed {
        container: container.into(),
        codec: codec.into(),
        detail,
    };

    let mut out = Decoded {
        samples: Vec::new(),
        rate: 0,
        channels: 0,
        container,
        codec,
        clipped: Vec::new(),
        truncated: false,
        declared_s,
        skipped_packets: 0,
    };
    let mut layout: Option<(u32, Channels, Vec<usize>)> = None;
    let mut planes: Vec<Vec<f32>> = Vec::new();
    let mut max_frames = usize::MAX;
    let mut last_error = None;
    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            // A file cut short ends where its data ends; what came before is still good.
            Err(SymError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => break,
            // A chained Ogg stream starting a new logical stream: only the first is read.
            Err(SymError::ResetRequired) => break,
            Err(e) => return Err(malformed(e.to_string())),
        };
        if packet.track_id != track_id {
            continue;
        }
        if out.samples.len() >= max_frames {
            out.truncated = true;
            break;
        }
        let buf = match decoder.decode(&packet) {
            Ok(buf) => buf,
            // One damaged packet leaves a gap rather than losing the whole clip.
            Err(e @ (SymError::DecodeError(_) | SymError::IoError(_))) => {
                out.skipped_packets += 1;
                last_error = Some(e.to_string());
                continue;
            }
            Err(SymError::ResetRequired) => break,
            Err(SymError::Unsupported(what)) => {
                return Err(ReferenceError::UnsupportedCodec {
                    container: container.into(),
                    codec: codec.into(),
                    detail: what.into(),
                })
            }
            Err(e) => return Err(malformed(e.to_string())),
        };
        if buf.frames() == 0 {
            continue;
        }
        let (rate, channels) = (buf.spec().rate(), buf.spec().channels());
        let mix = match &layout {
            Some((r, c, mix)) if *r == rate && c == channels => mix,
            Some((r, c, _)) => {
                return Err(ReferenceError::FormatChange {
                    from_rate: *r,
                    from_channels: c.count(),
                    to_rate: rate,
                    to_channels: channels.count(),
                })
            }
            None => {
                if rate == 0 {
                    return Err(malformed("a sample rate of 0 Hz".into()));
                }
                let mix = mono_mix(channels)?;
                out.rate = rate;
                out.channels = channels.count();
                max_frames = (max_s * rate as f64).floor() as usize;
                &layout.insert((rate, channels.clone(), mix)).2
            }
        };
        buf.copy_to_vecs_planar::<f32>(&mut planes);
        let frames = buf.frames().min(max_frames - out.samples.len());
        let scale = 1.0 / mix.len() as f32;
        for i in 0..frames {
            out.samples
                .push(mix.iter().map(|&p| planes[p][i]).sum::<f32>() * scale);
            out.clipped
                .push(planes.iter().any(|plane| plane[i].abs() >= clip_level));
        }
        if frames < buf.frames() {
            out.truncated = true;
            break;
        }
    }
    if out.samples.is_empty() {
        return Err(match last_error {
            Some(detail) => malformed(detail),
            None => ReferenceError::NoAudio {
                container: container.into(),
            },
        });
    }
    Ok(out)
}

/// The planes whose average is the mono signal: every channel but the low-frequency effects
/// ones, which carry no speech and are mixed in at their own gain, if at all, by a downmix.
/// Ambisonic components are not loudspeaker feeds, so their average is no mono signal.
fn mono_mix(channels: &Channels) -> Result<Vec<usize>, ReferenceError> {
    let lfe = |pos: Position| pos.intersects(Position::LFE1 | Position::LFE2);
    let refuse = || ReferenceError::ChannelLayout {
        layout: channels.to_string(),
    };
    let planes: Vec<usize> = match channels {
        Channels::Positioned(positions) => (0..64)
            .map(|bit| Position::from_bits_truncate(1 << bit))
            .filter(|pos| !pos.is_empty() && positions.contains(*pos))
            .enumerate()
            .filter(|(_, pos)| !lfe(*pos))
            .map(|(plane, _)| plane)
            .collect(),
        Channels::Discrete(count) => (0..*count as usize).collect(),
        Channels::Custom(labels) => {
            let mut planes = Vec::new();
            for (plane, label) in labels.iter().enumerate() {
                match label {
                    ChannelLabel::Positioned(pos) if lfe(*pos) => {}
                    ChannelLabel::Positioned(_) | ChannelLabel::Discrete(_) => planes.push(plane),
                    _ => return Err(refuse()),
                }
            }
            planes
        }
        _ => return Err(refuse()),
    };
    // A file that is nothing but an LFE channel still has a signal to use.
    if planes.is_empty() && channels.count() > 0 && !matches!(channels, Channels::Ambisonic(_)) {
        return Ok((0..channels.count()).collect());
    }
    if planes.is_empty() {
        return Err(refuse());
    }
    Ok(planes)
}

/// A readable name for codecs that a refusal may have to name.
fn codec_name(id: AudioCodecId) -> String {
    let name = match id {
        codec_ids::CODEC_ID_OPUS => "Opus",
        codec_ids::CODEC_ID_SPEEX => "Speex",
        codec_ids::CODEC_ID_AC3 => "AC-3",
        codec_ids::CODEC_ID_EAC3 => "E-AC-3",
        codec_ids::CODEC_ID_DCA => "DTS",
        codec_ids::CODEC_ID_WMA => "WMA",
        codec_ids::CODEC_ID_WAVPACK => "WavPack",
        codec_ids::CODEC_ID_MONKEYS_AUDIO => "Monkey's Audio",
        codec_ids::CODEC_ID_TTA => "TTA",
        codec_ids::CODEC_ID_TRUEHD => "TrueHD",
        codec_ids::CODEC_ID_MUSEPACK => "Musepack",
        codec_ids::CODEC_ID_AAC => "AAC",
        codec_ids::CODEC_ID_MP3 => "MP3",
        codec_ids::CODEC_ID_VORBIS => "Vorbis",
        codec_ids::CODEC_ID_FLAC => "FLAC",
        codec_ids::CODEC_ID_ALAC => "ALAC",
        _ => return format!("codec {id}"),
    };
    name.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surround_mixes_without_its_lfe_channel() {
        let five_one = Position::FRONT_LEFT
            | Position::FRONT_RIGHT
            | Position::FRONT_CENTER
            | Position::LFE1
            | Position::REAR_LEFT
            | Position::REAR_RIGHT;
        let planes = mono_mix(&Channels::Positioned(five_one)).unwrap();
        assert_eq!(planes, [0, 1, 2, 4, 5]);
    }

    #[test]
    fn discrete_and_labelled_channels_all_count() {
        assert_eq!(mono_mix(&Channels::Discrete(3)).unwrap(), [0, 1, 2]);
        let labels = Channels::Custom(
            vec![
                ChannelLabel::Positioned(Position::FRONT_LEFT),
                ChannelLabel::Positioned(Position::LFE1),
                ChannelLabel::Discrete(7),
            ]
            .into(),
        );
        assert_eq!(mono_mix(&labels).unwrap(), [0, 2]);
    }

    #[test]
    fn ambisonics_and_empty_layouts_are_refused() {
        for layout in [
            Channels::Ambisonic(1),
            Channels::None,
            Channels::Discrete(0),
        ] {
            let err = mono_mix(&layout).unwrap_err();
            assert!(
                matches!(err, ReferenceError::ChannelLayout { .. }),
                "{layout:?}: {err}"
            );
            assert!(err.to_string().contains("cannot mix"), "{err}");
        }
    }
}
