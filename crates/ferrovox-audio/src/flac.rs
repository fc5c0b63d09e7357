//! FLAC encoding of mono 16-bit audio.

use flacenc::component::BitRepr;
use flacenc::error::Verify;

use crate::to_i16;

/// Why FLAC encoding failed.
#[derive(Debug, thiserror::Error)]
#[error("FLAC encoding failed: {0}")]
pub struct FlacError(String);

/// Encodes samples in [-1, 1] as a complete mono 16-bit FLAC file.
pub fn encode_flac(samples: &[f32], sample_rate: u32) -> Result<Vec<u8>, FlacError> {
    let ints: Vec<i32> = to_i16(samples).into_iter().map(i32::from).collect();
    let config = flacenc::config::Encoder::default()
        .into_verified()
        .map_err(|(_, e)| FlacError(format!("{e:?}")))?;
    let source = flacenc::source::MemSource::from_samples(&ints, 1, 16, sample_rate as usize);
    let stream = flacenc::encode_with_fixed_block_size(&config, source, config.block_size)
        .map_err(|e| FlacError(format!("{e:?}")))?;
    let mut sink = flacenc::bitsink::ByteSink::new();
    stream
        .write(&mut sink)
        .map_err(|e| FlacError(format!("{e:?}")))?;
    let mut bytes = sink.as_slice().to_vec();
    fixed_block_sizes(&mut bytes)?;
    Ok(bytes)
}

/// Sets STREAMINFO's minimum block size to its maximum. flacenc counts the shorter last block
/// in the minimum, which the format excludes ("minimum block size used in the stream,
/// excluding the last block"); strict readers (symphonia, so ferrovox's own upload decoder)
/// then refuse the file. Every block but the last has the encoder's fixed size, which is the
/// maximum, as libFLAC writes it.
fn fixed_block_sizes(bytes: &mut [u8]) -> Result<(), FlacError> {
    // "fLaC", then STREAMINFO's block header (type 0), then its min and max block sizes.
    if bytes.len() < 12 || &bytes[..4] != b"fLaC" || bytes[4] & 0x7f != 0 {
        return Err(FlacError(
            "the encoder's output does not start with STREAMINFO".into(),
        ));
    }
    let (min, max) = bytes[8..12].split_at_mut(2);
    min.copy_from_slice(max);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_back_to_the_same_samples() {
        let samples: Vec<f32> = (0..10_000)
            .map(|i| (i as f32 * 0.013).sin() * 0.6 + (i as f32 * 0.31).cos() * 0.1)
            .collect();
        let bytes = encode_flac(&samples, 22050).unwrap();
        assert!(bytes.len() < samples.len() * 2, "FLAC should compress");
        let mut reader = claxon::FlacReader::new(std::io::Cursor::new(bytes)).unwrap();
        let info = reader.streaminfo();
        assert_eq!(
            (info.sample_rate, info.channels, info.bits_per_sample),
            (22050, 1, 16)
        );
        let decoded: Vec<i16> = reader.samples().map(|s| s.unwrap() as i16).collect();
        assert_eq!(decoded, to_i16(&samples));
    }

    #[test]
    fn streaminfo_block_sizes_follow_the_format() {
        // 5 blocks of 4096 and a last one of 3520: the minimum excludes the last block.
        let samples = vec![0.25f32; 24_000];
        let bytes = encode_flac(&samples, 24_000).unwrap();
        let min = u16::from_be_bytes([bytes[8], bytes[9]]);
        let max = u16::from_be_bytes([bytes[10], bytes[11]]);
        assert_eq!((min, max), (4096, 4096));
        assert!(fixed_block_sizes(&mut b"RIFF0000000000".to_vec()).is_err());
    }

    #[test]
    fn empty_audio_is_a_valid_file() {
        let bytes = encode_flac(&[], 24000).unwrap();
        let mut reader = claxon::FlacReader::new(std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(reader.samples().count(), 0);
    }
}
