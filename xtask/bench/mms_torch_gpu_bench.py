"""Times transformers' VitsModel (MMS-TTS-eng configuration, random weights) on a CUDA GPU.

Usage: mms_torch_gpu_bench.py SPEC_JSON  (spec: dir, tokens, batches, reps)
On first use writes `dir/model.safetensors` + `dir/config.json` (seed 0, noise scales 0) and
`dir/ids.json` (the token ids), so ferrovox times the same weights on the same input. Two
PyTorch set-ups are timed: plain fp32 eager, and tuned (TF32 matmul and convolutions,
cudnn.benchmark, weight norm removed), each under inference_mode with synchronised timing.
Prints one JSON line.
"""
import json
import os
import sys
import time

import torch
from transformers import VitsConfig, VitsModel


def remove_weight_norm(model: torch.nn.Module) -> int:
    removed = 0
    for module in model.modules():
        if "weight" in getattr(module, "parametrizations", {}):
            torch.nn.utils.parametrize.remove_parametrizations(module, "weight")
            removed += 1
        elif hasattr(module, "weight_g"):
            torch.nn.utils.remove_weight_norm(module)
            removed += 1
    return removed


def time_calls(model, x, reps):
    walls = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        wav = model(input_ids=x).waveform
        torch.cuda.synchronize()
        walls.append(time.perf_counter() - t0)
    walls.sort()
    return walls, wav


def main() -> None:
    spec = json.load(open(sys.argv[1]))
    out = spec["dir"]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    config = VitsConfig(noise_scale=0.0, noise_scale_duration=0.0)
    model = VitsModel(config).eval()
    if not os.path.exists(os.path.join(out, "model.safetensors")):
        model.save_pretrained(out, safe_serialization=True)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, config.vocab_size, (spec["tokens"],), generator=g).tolist()
    json.dump({"ids": ids}, open(os.path.join(out, "ids.json"), "w"))
    device = torch.device("cuda")
    model = model.to(device)
    results = {}
    for mode in ("fp32_eager", "tuned"):
        tuned = mode == "tuned"
        torch.backends.cuda.matmul.allow_tf32 = tuned
        torch.backends.cudnn.allow_tf32 = tuned
        torch.backends.cudnn.benchmark = tuned
        if tuned:
            results["weight_norm_removed"] = remove_weight_norm(model)
        per_batch = {}
        with torch.inference_mode():
            for batch in spec["batches"]:
                x = torch.tensor([ids] * batch, device=device)
                torch.cuda.reset_peak_memory_stats()
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                model(input_ids=x)
                torch.cuda.synchronize()
                first = time.perf_counter() - t0
                walls, wav = time_calls(model, x, spec["reps"])
                per_batch[str(batch)] = {
                    "first_call_s": first,
                    "walls": walls,
                    "median_s": walls[len(walls) // 2],
                    "audio_s_per_item": wav.shape[-1] / config.sampling_rate,
                    "max_reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
                    "max_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
                }
        results[mode] = per_batch
    print(json.dumps({"torch": torch.__version__, "results": results}))


if __name__ == "__main__":
    main()
