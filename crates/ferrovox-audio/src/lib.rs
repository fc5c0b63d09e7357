//! Audio for ferrovox: WAV, raw PCM and FLAC encoding, a streaming resampler, and the joiner
//! that stitches separately synthesized pieces without clicks.

mod flac;
mod join;
mod resample;
mod wav;

pub use flac::{encode_flac, FlacError};
pub use join::{Join, Joiner};
pub use resample::{resample, ResampleError, StreamResampler};
pub use wav::{read_wav, to_i16, wav_header, write_pcm_s16le, write_wav, Wav};
