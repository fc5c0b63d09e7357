"""The official `openai` client against a running ferrovox server: streams Chatterbox audio with
Chatterbox's controls as extra fields, then sends an out-of-range control. Prints one JSON line.

Usage: openai_client.py BASE_URL VOICE
"""
import json
import sys

import openai
from openai import OpenAI

base, voice = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base + "/v1", api_key="unused")
chunks, total = 0, 0
with client.audio.speech.with_streaming_response.create(
    model="chatterbox",
    voice=voice,
    input="Hello from a streamed Chatterbox voice.",
    response_format="pcm",
    extra_body={"max_new_tokens": 60, "exaggeration": 0.6},
) as response:
    status = response.status_code
    for chunk in response.iter_bytes():
        chunks += 1
        total += len(chunk)
try:
    client.audio.speech.create(
        model="chatterbox", voice=voice, input="Hi.", extra_body={"temperature": 50}
    )
    bad = None
except openai.APIStatusError as e:
    bad = [type(e).__name__, e.status_code, str(e)]
print(json.dumps({"status": status, "chunks": chunks, "bytes": total, "bad": bad,
                  "openai": openai.__version__}))
