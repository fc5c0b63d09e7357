"""What the upstream Chatterbox benches share: importing `chatterbox.models` without
`chatterbox/__init__` (which loads the whole TTS stack and the watermarker), the device a
spec asks for with its TF32 setting, the weights both engines read, S3Gen's reference dict, and
Turbo's and Nano's hyper-parameters."""
import importlib.util
import os
import sys
import types

import torch
from safetensors.torch import load_file, save_file


def bare_chatterbox_package() -> None:
    """Registers `chatterbox` as a bare package, so its submodules import alone."""
    spec = importlib.util.find_spec("chatterbox")
    pkg = types.ModuleType("chatterbox")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["chatterbox"] = pkg


def shared_weights(module, path, prefixes=None):
    """Loads `module`'s weights from `path`, which its own state dict is written to first when
    the file does not exist yet, so ferrovox reads the same weights; `prefixes` limits what is
    written (and makes the load non-strict)."""
    if not os.path.exists(path):
        state = {k: v.contiguous() for k, v in module.state_dict().items()
                 if prefixes is None or k.startswith(prefixes)}
        save_file(state, path)
    module.load_state_dict(load_file(path), strict=prefixes is None)


def ref_dict(prompt_token, prompt_feat, embedding):
    """S3Gen's speaker reference as `embed_ref` returns it, from its three tensors."""
    return dict(
        prompt_token=prompt_token,
        prompt_token_len=torch.tensor([prompt_token.shape[1]], device=prompt_token.device),
        prompt_feat=prompt_feat,
        prompt_feat_len=None,
        embedding=embedding,
    )


def turbo_hp():
    """The T3Config ChatterboxTurboTTS.from_local sets (tts_turbo.py)."""
    from chatterbox.models.t3.modules.t3_config import T3Config

    hp = T3Config(text_tokens_dict_size=50276)
    hp.llama_config_name = "GPT2_medium"
    hp.speech_tokens_dict_size = 6563
    hp.input_pos_emb = None
    hp.speech_cond_prompt_len = 375
    hp.use_perceiver_resampler = False
    hp.emotion_adv = False
    return hp


def nano_hp():
    """Turbo's hyper-parameters on GPT-2 small (Chatterbox Nano): a `GPT2_small` entry added to
    upstream's LLAMA_CONFIGS as later upstream loaders add it (GPT2_medium's at 768 wide, 12
    heads, 12 layers), which chatterbox-tts 0.1.7 lacks."""
    import copy

    from chatterbox.models.t3.llama_configs import LLAMA_CONFIGS

    small = copy.deepcopy(LLAMA_CONFIGS["GPT2_medium"])
    small.update(n_embd=768, hidden_size=768, n_head=12, n_layer=12)
    LLAMA_CONFIGS.setdefault("GPT2_small", small)
    hp = turbo_hp()
    hp.llama_config_name = "GPT2_small"
    return hp


def device_from(spec: dict):
    """The spec's device with its threads and TF32 applied, and a function that waits for it."""
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec.get("device", "cpu"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = bool(spec.get("tf32"))
        torch.backends.cudnn.allow_tf32 = bool(spec.get("tf32"))

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    return device, sync
