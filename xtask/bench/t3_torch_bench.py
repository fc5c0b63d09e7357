"""Times upstream Chatterbox T3 + S3Gen (chatterbox-tts, PyTorch eager) at full size with random
weights: T3's tokens per second with CFG at batch 1, and the time until the first audio of a
sentence (upstream does not stream: T3 generates the whole sentence, then S3Gen decodes it).

Usage: t3_torch_bench.py SPEC_JSON  (spec: dir, threads, device: cpu|cuda, tf32, reps,
new_tokens, sentence_tokens, prompt_tokens; `weights_only`: write the files, time nothing)
On first use writes `dir/t3_cfg.safetensors` (`T3().state_dict()` as released, seed 0),
`dir/s3gen.safetensors` (flow + HiFT, seed 0) and `dir/t3_inputs.safetensors` (speaker
embedding, prompt speech tokens, prompt mel, x-vector, text tokens), so ferrovox runs the same
model on the same inputs. Prints one JSON line.
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
from chatterbox.models.t3 import T3  # noqa: E402
from chatterbox.models.t3.modules.cond_enc import T3Cond  # noqa: E402


def main() -> None:
    spec = json.load(open(sys.argv[1]))
    device, sync = device_from(spec)
    out = spec["dir"]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    t3 = T3().eval()
    path = os.path.join(out, "t3_cfg.safetensors")
    # Before any `inference` call, which attaches a patched copy as a submodule.
    shared_weights(t3, path)
    s3gen = S3Gen().eval()
    s3_path = os.path.join(out, "s3gen.safetensors")
    shared_weights(s3gen, s3_path, ("flow.", "mel2wav."))
    inputs_path = os.path.join(out, "t3_inputs.safetensors")
    if not os.path.exists(inputs_path):
        g = torch.Generator().manual_seed(1)
        n_prompt = spec["prompt_tokens"]
        spk = torch.randn(1, 256, generator=g)
        text = torch.randint(1, 255, (1, spec["text_tokens"]), generator=g)
        text[0, 0], text[0, -1] = 255, 0
        save_file({
            "speaker_emb": spk / spk.norm(),
            "cond_prompt_speech_tokens": torch.randint(0, 6561, (1, n_prompt), generator=g),
            "prompt_token": torch.randint(0, 6561, (1, n_prompt), generator=g),
            "prompt_feat": torch.randn(1, 2 * n_prompt, 80, generator=g),
            "embedding": torch.randn(1, 192, generator=g),
            "text_tokens": text,
        }, inputs_path)
    inputs = load_file(inputs_path)
    if spec.get("weights_only"):
        print(json.dumps({"written": out}))
        return
    t3.to(device)
    s3gen.to(device)
    cond = lambda: T3Cond(  # noqa: E731 - upstream caches embeddings inside the T3Cond
        speaker_emb=inputs["speaker_emb"].to(device),
        cond_prompt_speech_tokens=inputs["cond_prompt_speech_tokens"].to(device),
        emotion_adv=0.5 * torch.ones(1, 1, 1, device=device),
    )
    text = inputs["text_tokens"].to(device)
    text2 = torch.cat([text, text], dim=0)
    ref = ref_dict(*(inputs[k].to(device) for k in ("prompt_token", "prompt_feat", "embedding")))

    def generate(n):
        return t3.inference(
            t3_cond=cond(), text_tokens=text2, max_new_tokens=n, temperature=0.8, cfg_weight=0.5,
            min_p=0.05, top_p=1.0, repetition_penalty=1.2,
        )

    # Warm-up (module loads, cuBLAS handles), then timed runs.
    generate(8)
    sync()
    rates, walls, counts = [], [], []
    for rep in range(spec["reps"]):
        torch.manual_seed(100 + rep)
        sync()
        t0 = time.perf_counter()
        tokens = generate(spec["new_tokens"])
        sync()
        wall = time.perf_counter() - t0
        walls.append(wall)
        counts.append(int(tokens.shape[1]))
        rates.append(tokens.shape[1] / wall)
    # One untimed sentence through T3 and S3Gen (ferrovox warms its stream up the same way).
    torch.manual_seed(199)
    warm = generate(spec["sentence_tokens"])[0]
    with torch.inference_mode():
        s3gen.inference(speech_tokens=warm[warm < 6561], ref_dict=ref)
    sync()
    firsts = []
    for rep in range(spec["reps"]):
        torch.manual_seed(200 + rep)
        sync()
        t0 = time.perf_counter()
        tokens = generate(spec["sentence_tokens"])[0]
        tokens = tokens[tokens < 6561]
        with torch.inference_mode():
            wav, _ = s3gen.inference(speech_tokens=tokens, ref_dict=ref)
        sync()
        firsts.append(time.perf_counter() - t0)
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    result = {
        "tokens_per_s": median(rates),
        "tokens_per_s_all": rates,
        "tokens": counts,
        "walls": walls,
        "first_audio_s": median(firsts),
        "first_audio_all": firsts,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        result["gpu_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        result["gpu_max_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    print(json.dumps(result))


if __name__ == "__main__":
    main()
