"""What the upstream Chatterbox benches share: importing `chatterbox.models` without
`chatterbox/__init__` (which loads the whole TTS stack and the watermarker), and the device a
spec asks for with its TF32 setting."""
import importlib.util
import sys
import types

import torch


def bare_chatterbox_package() -> None:
    """Registers `chatterbox` as a bare package, so its submodules import alone."""
    spec = importlib.util.find_spec("chatterbox")
    pkg = types.ModuleType("chatterbox")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["chatterbox"] = pkg


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
