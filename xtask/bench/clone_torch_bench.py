"""Upstream's voice cloning timed: chatterbox-tts 0.1.7's `ChatterboxTTS.prepare_conditionals`
on a reference clip, with full-size S3Gen (its S3 tokenizer and CAMPPlus) and VoiceEncoder at
random weights, written here for ferrovox to load the same files.

Usage: clone_torch_bench.py SPEC.json  (prints one JSON line; SPEC names dir, clip, reps, device)
"""

import importlib.util
import json
import os
import resource
import sys
import time
import types
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from upstream import bare_chatterbox_package, device_from  # noqa: E402

bare_chatterbox_package()
# `chatterbox.tts` imports the Perth watermarker, which prepare_conditionals never calls.
if importlib.util.find_spec("perth") is None:
    sys.modules["perth"] = types.ModuleType("perth")
from chatterbox.models.s3gen import S3Gen  # noqa: E402
from chatterbox.models.t3.modules.t3_config import T3Config  # noqa: E402
from chatterbox.models.voice_encoder import VoiceEncoder  # noqa: E402
from chatterbox.tts import ChatterboxTTS  # noqa: E402


def main():
    spec = json.loads(Path(sys.argv[1]).read_text())
    out = Path(spec["dir"])
    out.mkdir(parents=True, exist_ok=True)
    # ferrovox's TF32 setting and threads, from the spec or else the environment it runs in.
    spec.setdefault("tf32", os.environ.get("FERROVOX_TF32", "1") != "0")
    spec.setdefault("threads", torch.get_num_threads())
    device, sync = device_from(spec)
    device = device.type
    torch.manual_seed(0)
    ve_path, s3gen_path = out / "ve.safetensors", out / "s3gen.safetensors"
    if not (ve_path.is_file() and s3gen_path.is_file()):
        save_file({k: v.contiguous() for k, v in VoiceEncoder().state_dict().items()}, str(ve_path))
        save_file({k: v.contiguous() for k, v in S3Gen().state_dict().items()}, str(s3gen_path))
    # As ChatterboxTTS.from_local loads them.
    ve = VoiceEncoder()
    ve.load_state_dict(load_file(str(ve_path)))
    ve.to(device).eval()
    s3gen = S3Gen()
    s3gen.load_state_dict(load_file(str(s3gen_path)), strict=False)
    s3gen.to(device).eval()
    # prepare_conditionals reads only these attributes of the model.
    tts = ChatterboxTTS.__new__(ChatterboxTTS)
    tts.ve, tts.s3gen, tts.device = ve, s3gen, device
    tts.t3 = types.SimpleNamespace(hp=T3Config.english_only())

    tts.prepare_conditionals(spec["clip"], exaggeration=0.5)  # warm-up
    sync()
    walls = []
    for _ in range(spec["reps"]):
        t0 = time.perf_counter()
        tts.prepare_conditionals(spec["clip"], exaggeration=0.5)
        sync()
        walls.append(time.perf_counter() - t0)
    print(json.dumps({
        "clone_s": sorted(walls)[len(walls) // 2],
        "clone_all": walls,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "tf32": bool(spec["tf32"]),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
