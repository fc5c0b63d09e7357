//! MP3 through LAME (`mp3lame-encoder`, LGPL-3.0, built from its bundled source): mono, constant
//! bitrate, at the voice's own rate (LAME takes 8 to 48 kHz; 22.05 and 24 kHz are MPEG-2 layer
//! III), encoded as chunks arrive. `finish` flushes LAME's buffered frames: without it the last
//! fraction of a second is lost.

use mp3lame_encoder::{Bitrate, Builder, FlushGap, Mode, MonoPcm, Quality};

use super::CodecError;

/// Constant bitrate of `mp3` output, kbit/s: transparent for speech at 22–24 kHz mono.
pub const MP3_KBPS: u32 = 64;

/// A streaming MP3 encoder.
pub struct Mp3Encoder {
    lame: mp3lame_encoder::Encoder,
}

impl std::fmt::Debug for Mp3Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mp3Encoder")
            .field("sample_rate", &self.lame.sample_rate())
            .finish()
    }
}

fn lame_error(what: &str, e: impl std::fmt::Display) -> CodecError {
    CodecError::Encoder(format!("LAME {what}: {e}"))
}

impl Mp3Encoder {
    /// Mono at `rate` Hz, [`MP3_KBPS`].
    pub fn new(rate: u32) -> Result<Self, CodecError> {
        let mut b = Builder::new().ok_or_else(|| lame_error("init", "out of memory"))?;
        b.set_num_channels(1)
            .map_err(|e| lame_error("channels", e))?;
        b.set_sample_rate(rate)
            .map_err(|e| lame_error(&format!("sample rate {rate}"), e))?;
        b.set_brate(Bitrate::Kbps64)
            .map_err(|e| lame_error("bitrate", e))?;
        b.set_mode(Mode::Mono).map_err(|e| lame_error("mode", e))?;
        b.set_quality(Quality::Good)
            .map_err(|e| lame_error("quality", e))?;
        let lame = b.build().map_err(|e| lame_error("build", e))?;
        Ok(Self { lame })
    }

    /// MP3 frames completed by `samples` (clipped to [-1, 1], NaN as silence: LAME aborts the
    /// process on NaN or infinite input); LAME holds back the rest.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<u8>, CodecError> {
        let samples = &*super::sanitized(samples);
        let mut out = Vec::with_capacity(samples.len() * 5 / 4 + 7200);
        self.lame
            .encode_to_vec(MonoPcm(samples), &mut out)
            .map_err(|e| lame_error("encode", e))?;
        Ok(out)
    }

    /// The frames LAME still holds, the last padded with silence to a whole frame (the
    /// no-gap flush would leave the last ones out).
    pub fn finish(mut self) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(7200);
        self.lame
            .flush_to_vec::<FlushGap>(&mut out)
            .map_err(|e| lame_error("flush", e))?;
        Ok(out)
    }
}
