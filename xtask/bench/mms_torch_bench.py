"""Times transformers' VitsModel (MMS-TTS-eng configuration, random weights) in PyTorch eager.

Usage: mms_torch_bench.py SPEC_JSON  (spec: dir, threads, reps, cases: {name: text})
On first use writes `dir/model.safetensors` + `dir/config.json` (seed 0) so ferrovox loads the
same weights, and `dir/ids.json` with the token ids used per case. Noise scales are 0 so both
runtimes produce the same durations and therefore the same amount of audio.
"""
import json
import os
import resource
import sys
import time

import torch
from transformers import VitsConfig, VitsModel


def ids_for(text: str) -> list:
    # Random weights: any ids in the vocabulary will do; derive them from the text so the
    # sequence length follows the text like MMS's character tokenizer (blank interleaved).
    chars = [c for c in text.lower() if c.isalpha() or c in " '"]
    ids = [0]
    for c in chars:
        ids += [1 + ord(c) % 37, 0]
    return ids


def main() -> None:
    spec = json.load(open(sys.argv[1]))
    torch.set_num_threads(spec["threads"])
    out = spec["dir"]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    config = VitsConfig(noise_scale=0.0, noise_scale_duration=0.0)
    # With seed 0 the default init predicts about 3.6 frames per token (58 ms at 16 kHz),
    # close to real MMS speech, so the weights are used as initialised.
    model = VitsModel(config).eval()
    if not os.path.exists(os.path.join(out, "model.safetensors")):
        model.save_pretrained(out, safe_serialization=True)
    ids = {name: ids_for(text) for name, text in spec["cases"].items()}
    json.dump(ids, open(os.path.join(out, "ids.json"), "w"))
    cases = {}
    with torch.inference_mode():
        for name, seq in ids.items():
            x = torch.tensor([seq])
            walls, audio_s = [], 0.0
            for rep in range(spec["reps"] + 1):
                t0 = time.perf_counter()
                wav = model(input_ids=x).waveform
                wall = time.perf_counter() - t0
                if rep:
                    walls.append(wall)
                audio_s = wav.shape[-1] / config.sampling_rate
            cases[name] = {"wall_s": walls, "audio_s": audio_s, "tokens": len(seq)}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"engine": "transformers-pytorch", "peak_rss": peak,
                      "versions": {"torch": torch.__version__}, "cases": cases}))


if __name__ == "__main__":
    main()
