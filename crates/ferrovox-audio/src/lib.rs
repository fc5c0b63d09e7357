//! Audio for ferrovox: WAV, raw PCM and FLAC encoding, a streaming resampler, the joiner
//! that stitches separately synthesized pieces without clicks, and the reference-clip front end
//! for voice cloning (decode any common format, mix, trim, measure, check, resample).

pub mod codec;
mod fbank;
mod filterbank;
mod flac;
mod join;
mod loudness_norm;
mod mel;
mod reference;
mod resample;
mod stft;
mod wav;

pub use codec::{AudioFormat, CodecError, Encoder, PCM_RATE};
pub use fbank::{kaldi_mel_banks, povey_window, Fbank, FbankConfig, KaldiFbank};
pub use filterbank::SparseFilterbank;
pub use flac::{encode_flac, FlacError};
pub use join::{Join, Joiner};
pub use loudness_norm::{loudness_gain, normalize_loudness, upstream_integrated_loudness};
pub use mel::{mel_filterbank, LogMel, MelConfig, MelSpectrogram};
pub use reference::{
    decode_audio, ClipHash, ReferenceClip, ReferenceError, ReferenceLimits, UsedSpan,
};
pub use resample::{resample, ResampleError, StreamResampler};
pub use stft::{
    hann_window_scipy, hann_window_torch, istft, reflect_pad, stft, Spectrogram, Stft, StftError,
};
pub use wav::{read_wav, to_i16, wav_header, write_pcm_s16le, write_wav, Wav};
