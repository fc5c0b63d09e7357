//! Audio for ferrovox: WAV, raw PCM and FLAC encoding, a streaming resampler, and the joiner
//! that stitches separately synthesized pieces without clicks.

mod flac;
mod join;
mod mel;
mod resample;
mod stft;
mod wav;

pub use flac::{encode_flac, FlacError};
pub use join::{Join, Joiner};
pub use mel::{mel_filterbank, LogMel, MelConfig, MelSpectrogram};
pub use resample::{resample, ResampleError, StreamResampler};
pub use stft::{
    hann_window_scipy, hann_window_torch, istft, reflect_pad, stft, Spectrogram, Stft, StftError,
};
pub use wav::{read_wav, to_i16, wav_header, write_pcm_s16le, write_wav, Wav};
