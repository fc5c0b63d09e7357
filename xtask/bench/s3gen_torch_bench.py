"""Times upstream S3Gen (chatterbox-tts, PyTorch eager) at full size with random weights.

Usage: s3gen_torch_bench.py SPEC_JSON  (spec: dir, threads, device: cpu|cuda, tf32, reps,
prompt_tokens, cases: {name: n_tokens}, batch: how many utterances the batch case runs,
batch_case: the case whose tokens it repeats)
On first use writes `dir/s3gen.safetensors` (the flow and HiFT weights under their checkpoint
keys, seed 0) and `dir/inputs.safetensors` (prompt tokens, prompt mel, x-vector and the target
tokens of every case) so ferrovox times the same model on the same inputs. Prints one JSON line.
"""
import json
import os
import resource
import sys
import time


import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from upstream import bare_chatterbox_package, device_from, ref_dict, shared_weights  # noqa: E402

bare_chatterbox_package()
from chatterbox.models.s3gen import S3Gen  # noqa: E402


def stage_split(model, tokens, ref, sync) -> dict:
    """One more call with the encoder, the CFM solve and HiFT timed apart (synchronized around
    each, so a breakdown, not a speed), under the names ferrovox's stages use."""
    totals = {}
    parts = {
        "s3gen.encoder": model.flow.encoder,
        "s3gen.cfm": model.flow.decoder,
        "s3gen.hift": model.mel2wav,
    }
    originals = {}
    for stage, module in parts.items():
        attr = "inference" if stage == "s3gen.hift" else "forward"
        inner = getattr(module, attr)
        originals[stage] = (module, attr, inner)

        def timed(*a, _inner=inner, _stage=stage, **k):
            sync()
            t0 = time.perf_counter()
            out = _inner(*a, **k)
            sync()
            totals[_stage] = totals.get(_stage, 0.0) + time.perf_counter() - t0
            return out

        setattr(module, attr, timed)
    try:
        sync()
        t0 = time.perf_counter()
        model.inference(speech_tokens=tokens, ref_dict=dict(ref))
        sync()
        totals["total"] = time.perf_counter() - t0
    finally:
        for module, attr, inner in originals.values():
            setattr(module, attr, inner)
    return totals


def main() -> None:
    spec = json.load(open(sys.argv[1]))
    device, sync = device_from(spec)
    out = spec["dir"]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    model = S3Gen().eval()
    weights = os.path.join(out, "s3gen.safetensors")
    shared_weights(model, weights, ("flow.", "mel2wav."))
    inputs_path = os.path.join(out, "inputs.safetensors")
    if not os.path.exists(inputs_path):
        g = torch.Generator().manual_seed(1)
        n_prompt = spec["prompt_tokens"]
        inputs = {
            "prompt_tokens": torch.randint(0, 6561, (1, n_prompt), generator=g),
            "prompt_feat": torch.randn(1, 2 * n_prompt, 80, generator=g),
            "xvector": torch.randn(1, 192, generator=g),
        }
        for name, n in spec["cases"].items():
            inputs[f"tokens.{name}"] = torch.randint(0, 6561, (1, n), generator=g)
        save_file(inputs, inputs_path)
    model = model.to(device)
    inputs = {k: v.to(device) for k, v in load_file(inputs_path).items()}
    ref = ref_dict(inputs["prompt_tokens"], inputs["prompt_feat"], inputs["xvector"])
    cases = {}
    with torch.inference_mode():
        for name in spec["cases"]:
            tokens = inputs[f"tokens.{name}"]
            walls, audio_s = [], 0.0
            for rep in range(spec["reps"] + 1):
                t0 = time.perf_counter()
                wav, _ = model.inference(speech_tokens=tokens, ref_dict=dict(ref))
                sync()
                wall = time.perf_counter() - t0
                audio_s = wav.shape[-1] / 24000
                if rep > 0:  # the first call is the warm-up
                    walls.append(wall)
            walls.sort()
            cases[name] = {"wall_s": walls[len(walls) // 2], "walls": walls, "audio_s": audio_s}
            cases[name]["stages"] = stage_split(model, tokens, ref, sync)
        # Upstream's inference takes one utterance: a batch is that many calls in a row.
        tokens = inputs[f"tokens.{spec['batch_case']}"]
        t0 = time.perf_counter()
        total = 0.0
        for _ in range(spec["batch"]):
            wav, _ = model.inference(speech_tokens=tokens, ref_dict=dict(ref))
            total += wav.shape[-1] / 24000
        sync()
        cases["batch"] = {"wall_s": time.perf_counter() - t0, "audio_s": total, "items": spec["batch"]}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"torch": torch.__version__, "threads": spec["threads"], "device": str(device), "cases": cases, "peak_rss_mib": peak}
    if device.type == "cuda":
        result["gpu_max_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
        result["gpu_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result))


if __name__ == "__main__":
    main()
