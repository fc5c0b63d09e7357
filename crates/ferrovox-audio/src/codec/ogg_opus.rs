//! Ogg Opus (RFC 7845) through libopus (`unsafe-libopus`: libopus 1.3 transpiled to Rust, so
//! it builds with no C toolchain or CMake) and the `ogg` crate's page writer. Mono, 48 kHz
//! (resampled from the voice's rate; the header records the original), 20 ms frames at
//! [`OPUS_KBPS`], pages flushed with every pushed chunk so a stream plays as it arrives.
//!
//! The header's pre-skip is the encoder's lookahead; every page's granule position counts the
//! 48 kHz samples decodable up to its last packet, pre-skip included, and the last page's is
//! cut to the real length (end trimming). At the end the encoder is fed silence until the
//! lookahead has come out: the final samples are in the stream, not left inside the encoder.

use std::ptr::NonNull;

use ogg::writing::{PacketWriteEndInfo, PacketWriter};
use unsafe_libopus::varargs::{VarArg, VarArgs};
use unsafe_libopus::{
    opus_encode_float, opus_encoder_create, opus_encoder_ctl_impl, opus_encoder_destroy,
    OpusEncoder, OPUS_APPLICATION_AUDIO, OPUS_GET_LOOKAHEAD_REQUEST, OPUS_OK,
    OPUS_SET_BITRATE_REQUEST,
};

use super::CodecError;
use crate::StreamResampler;

/// Opus's decoding rate.
pub const OPUS_RATE: u32 = 48_000;

/// Bitrate of `opus` output, kbit/s: wideband speech at full quality.
pub const OPUS_KBPS: u32 = 32;

/// Samples per 20 ms frame at 48 kHz.
const FRAME: usize = 960;

/// The Ogg stream's serial number (one logical stream per file).
const SERIAL: u32 = 0x6665_7672;

/// A libopus encoder state.
struct Opus(NonNull<OpusEncoder>);

// SAFETY: the state is plain memory owned by this handle and used by one thread at a time.
unsafe impl Send for Opus {}

impl Drop for Opus {
    fn drop(&mut self) {
        // SAFETY: made by `opus_encoder_create`, destroyed once.
        unsafe { opus_encoder_destroy(self.0.as_ptr()) }
    }
}

impl Opus {
    fn new() -> Result<Self, CodecError> {
        let mut error = 0;
        // SAFETY: a plain constructor; `error` outlives the call.
        let st =
            unsafe { opus_encoder_create(OPUS_RATE as i32, 1, OPUS_APPLICATION_AUDIO, &mut error) };
        let st = NonNull::new(st)
            .filter(|_| error == OPUS_OK)
            .ok_or_else(|| CodecError::Encoder(format!("libopus: encoder_create error {error}")))?;
        let opus = Self(st);
        opus.ctl(
            OPUS_SET_BITRATE_REQUEST,
            VarArg::I32(OPUS_KBPS as i32 * 1000),
        )?;
        Ok(opus)
    }

    fn ctl(&self, request: i32, arg: VarArg<'_>) -> Result<(), CodecError> {
        // SAFETY: a valid state and the argument type `request` takes.
        let r = unsafe { opus_encoder_ctl_impl(self.0.as_ptr(), request, VarArgs::new(vec![arg])) };
        if r == OPUS_OK {
            Ok(())
        } else {
            Err(CodecError::Encoder(format!(
                "libopus: ctl {request} error {r}"
            )))
        }
    }

    fn lookahead(&self) -> Result<usize, CodecError> {
        let mut samples = 0;
        self.ctl(OPUS_GET_LOOKAHEAD_REQUEST, VarArg::I32Out(&mut samples))?;
        Ok(samples.max(0) as usize)
    }

    /// One packet of a 20 ms frame.
    fn encode(&mut self, frame: &[f32]) -> Result<Vec<u8>, CodecError> {
        debug_assert_eq!(frame.len(), FRAME);
        let mut packet = vec![0u8; 1500];
        // SAFETY: `frame` holds FRAME samples, `packet` its length in bytes.
        let n = unsafe {
            opus_encode_float(
                self.0.as_ptr(),
                frame.as_ptr(),
                FRAME as i32,
                packet.as_mut_ptr(),
                packet.len() as i32,
            )
        };
        if n < 0 {
            return Err(CodecError::Encoder(format!("libopus: encode error {n}")));
        }
        packet.truncate(n as usize);
        Ok(packet)
    }
}

/// A streaming Ogg Opus encoder.
pub struct OggOpusEncoder {
    opus: Opus,
    ogg: PacketWriter<'static, Vec<u8>>,
    /// Taken by `finish`.
    resampler: Option<StreamResampler>,
    /// 48 kHz samples not yet a whole frame.
    pending: Vec<f32>,
    /// The last packet encoded, written with the next one (the stream's end marks the last).
    held: Option<Vec<u8>>,
    /// Packets written to pages.
    written: u64,
    /// Real 48 kHz samples fed in.
    samples: u64,
    pre_skip: usize,
}

impl std::fmt::Debug for OggOpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OggOpusEncoder")
            .field("pre_skip", &self.pre_skip)
            .field("samples", &self.samples)
            .finish_non_exhaustive()
    }
}

impl OggOpusEncoder {
    /// Mono input at `rate` Hz; the header pages are written at once.
    pub fn new(rate: u32) -> Result<Self, CodecError> {
        let opus = Opus::new()?;
        let pre_skip = opus.lookahead()?;
        let resampler = StreamResampler::new(rate, OPUS_RATE)
            .map_err(|e| CodecError::Encoder(format!("resampling {rate} Hz to 48 kHz: {e}")))?;
        let mut head = b"OpusHead".to_vec();
        head.push(1); // version
        head.push(1); // channels
        head.extend_from_slice(&(pre_skip as u16).to_le_bytes());
        head.extend_from_slice(&rate.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // mapping family: mono/stereo
        let vendor = b"ferrovox (libopus 1.3)";
        let mut tags = b"OpusTags".to_vec();
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes()); // no user comments
        let mut ogg = PacketWriter::new(Vec::new());
        for header in [head, tags] {
            ogg.write_packet(header, SERIAL, PacketWriteEndInfo::EndPage, 0)
                .map_err(|e| CodecError::Encoder(format!("ogg: {e}")))?;
        }
        Ok(Self {
            opus,
            ogg,
            resampler: Some(resampler),
            pending: Vec::new(),
            held: None,
            written: 0,
            samples: 0,
            pre_skip,
        })
    }

    /// The encoder's lookahead, the header's pre-skip (48 kHz samples).
    pub fn pre_skip(&self) -> usize {
        self.pre_skip
    }

    /// Bytes written so far, taken out of the page writer.
    fn take(&mut self) -> Vec<u8> {
        std::mem::take(self.ogg.inner_mut())
    }

    /// Encodes the whole frames in `pending`, writing every packet but the newest to pages
    /// (the last written ends a page, so what came in goes out now).
    fn encode_pending(&mut self, end: bool) -> Result<(), CodecError> {
        let frames = self.pending.len() / FRAME;
        let mut packets: Vec<Vec<u8>> = self.held.take().into_iter().collect();
        for f in 0..frames {
            packets.push(
                self.opus
                    .encode(&self.pending[f * FRAME..(f + 1) * FRAME])?,
            );
        }
        self.pending.drain(..frames * FRAME);
        if !end {
            self.held = packets.pop();
        }
        let last = packets.len();
        for (i, packet) in packets.into_iter().enumerate() {
            self.written += 1;
            let (info, granule) = match (i + 1 == last, end) {
                // End trimming: the real samples after the pre-skip, no padding.
                (true, true) => (
                    PacketWriteEndInfo::EndStream,
                    self.pre_skip as u64 + self.samples,
                ),
                (true, false) => (PacketWriteEndInfo::EndPage, self.written * FRAME as u64),
                (false, _) => (
                    PacketWriteEndInfo::NormalPacket,
                    self.written * FRAME as u64,
                ),
            };
            self.ogg
                .write_packet(packet, SERIAL, info, granule)
                .map_err(|e| CodecError::Encoder(format!("ogg: {e}")))?;
        }
        Ok(())
    }

    /// The pages `samples` (at the input rate; clipped to [-1, 1], NaN as silence) complete.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<u8>, CodecError> {
        let samples = &*super::sanitized(samples);
        let resampler = self
            .resampler
            .as_mut()
            .ok_or_else(|| CodecError::Encoder("the Opus stream is finished".into()))?;
        let resampled = resampler
            .push(samples)
            .map_err(|e| CodecError::Encoder(e.to_string()))?;
        self.samples += resampled.len() as u64;
        self.pending.extend_from_slice(&resampled);
        self.encode_pending(false)?;
        Ok(self.take())
    }

    /// The last pages: the resampler's tail, then silence until every real sample has come
    /// out of the encoder's lookahead, the last page cut to the real length.
    pub fn finish(mut self) -> Result<Vec<u8>, CodecError> {
        let tail = match self.resampler.take() {
            Some(r) => r.finish(),
            None => Ok(Vec::new()),
        }
        .map_err(|e| CodecError::Encoder(e.to_string()))?;
        self.samples += tail.len() as u64;
        self.pending.extend_from_slice(&tail);
        let held = u64::from(self.held.is_some());
        let needed = self.pre_skip as u64 + self.samples;
        let frames = (self.written + held) + self.pending.len().div_ceil(FRAME) as u64;
        let frames = frames
            .max(needed.div_ceil(FRAME as u64))
            .max(self.written + held + 1);
        let total = (frames - self.written - held) as usize * FRAME;
        self.pending.resize(total, 0.0);
        self.encode_pending(true)?;
        Ok(self.take())
    }
}
