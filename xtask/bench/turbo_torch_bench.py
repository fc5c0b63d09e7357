"""Times upstream Chatterbox Turbo or Nano (chatterbox-tts, PyTorch eager) at full size with
random weights: T3's tokens per second (`T3.inference_turbo`, GPT-2 medium, or GPT-2 small for
Nano, no guidance) and its time to the first token, S3Gen's meanflow decoder on a sentence's
tokens in 2 steps and in 1, and on a paragraph's in 2.

Usage: turbo_torch_bench.py SPEC_JSON  (spec: dir, threads, device, tf32, reps, new_tokens,
sentence_tokens, paragraph_tokens, prompt_tokens, text_tokens, nano; `weights_only`: write the files, time nothing)
On first use writes `dir/t3_turbo_v1.safetensors` (T3 with tts_turbo.py's hyper-parameters,
seed 0; for Nano `dir/t3_nano_v1.safetensors`, the same on a `GPT2_small` entry of
`LLAMA_CONFIGS` as later upstream loaders add it: GPT2_medium's at 768 wide, 12 heads, 12 layers), `dir/s3gen_meanflow.safetensors` (S3Gen(meanflow=True)'s flow and HiFT, seed 0) and
`dir/turbo_inputs.safetensors` (speaker embedding, prompt speech tokens, GPT-2 text ids, the
S3Gen reference), so ferrovox runs the same models on the same inputs. Prints one JSON line.
"""
import json
import os
import resource
import sys
import time

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from upstream import (  # noqa: E402
    bare_chatterbox_package, device_from, nano_hp, ref_dict, shared_weights, turbo_hp,
)

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
    nano = spec.get("nano", False)
    t3 = T3(nano_hp() if nano else turbo_hp()).eval()
    path = os.path.join(out, "t3_nano_v1.safetensors" if nano else "t3_turbo_v1.safetensors")
    shared_weights(t3, path)
    del t3.tfmr.wte  # as ChatterboxTurboTTS.from_local does
    s3gen = S3Gen(meanflow=True).eval()
    s3_path = os.path.join(out, "s3gen_meanflow.safetensors")
    shared_weights(s3gen, s3_path, ("flow.", "mel2wav."))
    inputs_path = os.path.join(out, "turbo_inputs.safetensors")
    if not os.path.exists(inputs_path):
        g = torch.Generator().manual_seed(1)
        n_prompt = spec["prompt_tokens"]
        spk = torch.randn(1, 256, generator=g)
        save_file({
            "speaker_emb": spk / spk.norm(),
            "cond_prompt_speech_tokens": torch.randint(0, 6561, (1, n_prompt), generator=g),
            "text_tokens": torch.randint(0, 50257, (1, spec["text_tokens"]), generator=g),
            "prompt_token": torch.randint(0, 6561, (1, 250), generator=g),
            "prompt_feat": torch.randn(1, 500, 80, generator=g),
            "embedding": torch.randn(1, 192, generator=g),
            "sentence": torch.randint(0, 6561, (spec["sentence_tokens"],), generator=g),
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
        emotion_adv=None,
    )
    text = inputs["text_tokens"].to(device)
    ref = ref_dict(*(inputs[k].to(device) for k in ("prompt_token", "prompt_feat", "embedding")))

    def generate(n):
        # inference_turbo draws once after the prefill, then max_gen_len more.
        return t3.inference_turbo(cond(), text, max_gen_len=n - 1)

    generate(8)
    sync()
    rates, counts = [], []
    for rep in range(spec["reps"]):
        torch.manual_seed(100 + rep)
        sync()
        t0 = time.perf_counter()
        tokens = generate(spec["new_tokens"])
        sync()
        counts.append(int(tokens.shape[1]))
        rates.append(tokens.shape[1] / (time.perf_counter() - t0))
    firsts = []
    for rep in range(spec["reps"]):
        torch.manual_seed(200 + rep)
        sync()
        t0 = time.perf_counter()
        generate(1)
        sync()
        firsts.append(time.perf_counter() - t0)
    silence = torch.tensor([4299, 4299, 4299])
    sentence = torch.cat([inputs["sentence"], silence]).to(device)
    # The paragraph: the sentence's tokens repeated to `paragraph_tokens`, then the silence.
    n_par = spec["paragraph_tokens"]
    paragraph = torch.cat([inputs["sentence"].repeat(n_par // len(inputs["sentence"]) + 1)[:n_par],
                           silence]).to(device)
    decode = {}
    for steps, tokens, name in ((2, sentence, "2_step"), (1, sentence, "1_step"),
                                (2, paragraph, "paragraph_2_step")):
        with torch.inference_mode():
            s3gen.inference(speech_tokens=tokens, ref_dict=ref, n_cfm_timesteps=steps)
        sync()
        walls = []
        for rep in range(spec["reps"]):
            torch.manual_seed(300 + rep)
            t0 = time.perf_counter()
            with torch.inference_mode():
                s3gen.inference(speech_tokens=tokens, ref_dict=ref, n_cfm_timesteps=steps)
            sync()
            walls.append(time.perf_counter() - t0)
        decode[name] = sorted(walls)[len(walls) // 2]
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    print(json.dumps({
        "tokens_per_s": median(rates),
        "tokens_per_s_all": rates,
        "tokens": counts,
        "first_token_s": median(firsts),
        "s3gen_s": decode,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
