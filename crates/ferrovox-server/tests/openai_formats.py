"""The official `openai` client against a running ferrovox server, with its default arguments
and then each `response_format`; every body is decoded by PyAV (FFmpeg's decoders: none of
ferrovox's code), and the lossy ones compared with the WAV of the same request. Prints one JSON
line: per format the content type, bytes, decoded rate, samples, duration and SNR against WAV.

Usage: openai_formats.py BASE_URL VOICE TEXT
"""
import io
import json
import sys

import av
import numpy as np
import openai
from openai import OpenAI

base, voice, text = sys.argv[1], sys.argv[2], sys.argv[3]
client = OpenAI(base_url=base + "/v1", api_key="unused")


def decode(data):
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        frames = [f.to_ndarray().reshape(-1) for f in container.decode(stream)]
        rate = stream.codec_context.sample_rate
        codec = stream.codec_context.name
    samples = np.concatenate(frames).astype(np.float64) if frames else np.zeros(0)
    if samples.dtype.kind != "f" or np.abs(samples).max(initial=0) > 1.5:
        samples = samples / 32768.0
    return samples, rate, codec


def snr(want, got, max_lag):
    best = (-1e9, 0)
    for lag in range(0, max_lag):
        n = min(len(want), len(got) - lag)
        if n <= 0:
            break
        w, g = want[:n], got[lag:lag + n]
        value = 10 * np.log10(np.sum(w * w) / max(np.sum((w - g) ** 2), 1e-20))
        best = max(best, (value, lag))
    return best


report = {"openai": openai.__version__, "av": av.__version__, "formats": {}}
# Default arguments: no response_format, no stream_format.
default = client.audio.speech.create(model="tts-1", voice=voice, input=text)
bodies = {"default": (default.response.headers.get("content-type"), default.content)}
for fmt in ["mp3", "opus", "wav", "flac"]:
    r = client.audio.speech.create(model="tts-1", voice=voice, input=text, response_format=fmt)
    bodies[fmt] = (r.response.headers.get("content-type"), r.content)
reference, ref_rate, _ = decode(bodies["wav"][1])
for name, (ctype, data) in bodies.items():
    samples, rate, codec = decode(data)
    entry = {"content_type": ctype, "bytes": len(data), "codec": codec, "rate": rate,
             "samples": len(samples), "seconds": len(samples) / rate}
    if rate == ref_rate and name != "wav":
        value, lag = snr(reference, samples, 3000)
        entry.update(snr_db=round(float(value), 2), lag=lag)
    elif rate != ref_rate:
        # Opus decodes at 48 kHz: compare with the WAV resampled by PyAV's resampler.
        resampler = av.AudioResampler(format="dbl", layout="mono", rate=rate)
        frame = av.AudioFrame.from_ndarray(reference.reshape(1, -1), format="dbl", layout="mono")
        frame.sample_rate = ref_rate
        up = np.concatenate([f.to_ndarray().reshape(-1) for f in
                             resampler.resample(frame) + resampler.resample(None)])
        value, lag = snr(up, samples, 400)
        entry.update(snr_db=round(float(value), 2), lag=lag, reference_samples=len(up))
    report["formats"][name] = entry
report["wav_rate"] = ref_rate
print(json.dumps(report))
