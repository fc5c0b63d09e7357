"""Times Piper's own runtime (piper-tts + onnxruntime) on the bench texts.

Usage: piper_bench.py SPEC_JSON  (spec: onnx, config, threads, reps, cases: {name: text})
Prints one JSON object: load time and, per case, wall times, time to first audio, audio
seconds and peak RSS. Same voice files and the voice's own inference defaults as ferrovox.
"""
import json
import resource
import sys
import time

import onnxruntime
from piper import PiperVoice


def main() -> None:
    spec = json.load(open(sys.argv[1]))
    start = time.perf_counter()
    voice = PiperVoice.load(spec["onnx"], config_path=spec["config"])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = spec["threads"]
    options.inter_op_num_threads = 1
    voice.session = onnxruntime.InferenceSession(
        spec["onnx"], sess_options=options, providers=["CPUExecutionProvider"]
    )
    load_s = time.perf_counter() - start
    cases = {}
    for name, text in spec["cases"].items():
        walls, firsts, audio_s = [], [], 0.0
        for rep in range(spec["reps"] + 1):
            t0 = time.perf_counter()
            first = None
            samples = 0
            rate = 22050
            for chunk in voice.synthesize(text):
                if first is None:
                    first = time.perf_counter() - t0
                samples += len(chunk.audio_float_array)
                rate = chunk.sample_rate
            wall = time.perf_counter() - t0
            if rep == 0:
                continue  # warm-up
            walls.append(wall)
            firsts.append(first)
            audio_s = samples / rate
        cases[name] = {"wall_s": walls, "first_audio_s": firsts, "audio_s": audio_s}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"engine": "piper-onnxruntime", "load_s": load_s, "peak_rss": peak,
                      "versions": {"onnxruntime": onnxruntime.__version__}, "cases": cases}))


if __name__ == "__main__":
    main()
