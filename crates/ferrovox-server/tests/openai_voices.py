"""The official `openai` client clones a voice on a running ferrovox server and speaks with it:
`client.audio.voices.create` uploads the clip (multipart `audio_sample`, `name`, `consent`),
`client.audio.speech.create` speaks with `voice={"id": ...}`; a too-short clip is refused.
Prints one JSON line.

Usage: openai_voices.py BASE_URL CLIP.wav
"""
import io
import json
import struct
import sys

import openai
from openai import OpenAI

base, clip = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base + "/v1", api_key="unused")
with open(clip, "rb") as f:
    voice = client.audio.voices.create(audio_sample=f, name="Grace", consent="cons_test")
speech = client.audio.speech.create(
    model="chatterbox",
    voice={"id": voice.id},
    input="Hello from a cloned voice.",
    response_format="pcm",
    extra_body={"max_new_tokens": 40},
)
listed = client.get("/audio/voices", cast_to=object)
# Half a second of a 16-bit 24 kHz tone: under the 2 s minimum.
n = 12000
samples = b"".join(struct.pack("<h", int(8000 * ((i % 40) / 20 - 1))) for i in range(n))
header = b"RIFF" + struct.pack("<I", 36 + 2 * n) + b"WAVEfmt " + struct.pack(
    "<IHHIIHH", 16, 1, 1, 24000, 48000, 2, 16) + b"data" + struct.pack("<I", 2 * n)
try:
    client.audio.voices.create(
        audio_sample=("short.wav", io.BytesIO(header + samples), "audio/wav"),
        name="Short", consent="cons_test")
    bad = None
except openai.APIStatusError as e:
    bad = [type(e).__name__, e.status_code, str(e)]
print(json.dumps({
    "voice": {"id": voice.id, "name": voice.name},
    "speech_status": speech.response.status_code,
    "bytes": len(speech.content),
    "listed": [v["id"] for v in listed["data"]],
    "bad": bad,
    "openai": openai.__version__,
}))
