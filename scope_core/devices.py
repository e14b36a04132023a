"""Where the models run: `--device` and `--dtype` resolved to torch's, and the memory there.

Why one module: every phase (caching, training, sampling, verification, the judge engine)
must agree on the device and dtype of the target, or its tensors meet on different devices
mid-forward. `auto` means the GPU when torch sees one (bfloat16 there, when the card runs
it), else the CPU in float32 — so on a CPU-only host the defaults are exactly what they were.
Memory budgets (decoding KV cache, batch rows) read the device's free memory here instead of
fixed constants: a fixed 1 GiB is most of a small GPU's headroom and a sliver of an H100's.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from .errors import AutoscopeError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
GPU_MEMORY_SHARE = 0.5  # of the free GPU memory, what one budget (the decoding KV cache, a batch) may take


def resolve_device(spec: str | None = "auto") -> torch.device:
    """`auto` → the first GPU where torch sees one, else the CPU; `cpu`; `cuda`/`cuda:N`,
    refused with what to do when no such GPU is visible."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise AutoscopeError(
                f"--device {spec}: torch sees no CUDA GPU on this machine (torch {torch.__version__}, "
                f"CUDA build: {torch.version.cuda or 'none'}). Use --device cpu (or auto), or install a CUDA build of torch "
                "and check that `nvidia-smi` lists a GPU and CUDA_VISIBLE_DEVICES does not hide it")
        index = int(spec.split(":", 1)[1]) if ":" in spec else torch.cuda.current_device()
        if not 0 <= index < torch.cuda.device_count():
            raise AutoscopeError(f"--device {spec}: this machine has {torch.cuda.device_count()} visible GPU(s), "
                                 f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return torch.device("cuda", index)
    raise AutoscopeError(f"unknown device {spec!r}: use {DEVICE_CHOICES}")


def resolve_dtype(spec: str | None, device: torch.device) -> str:
    """The dtype's name: `auto` → bfloat16 on a GPU that supports it (float16 on one that does
    not), float32 on the CPU (where bfloat16 matmuls are slower than float32 on most hosts)."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if device.type == "cuda":
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return "float32"
    if spec not in DTYPES:
        raise AutoscopeError(f"unknown dtype {spec!r}: use auto, float32, bfloat16 or float16")
    return spec


def torch_dtype(name: str) -> torch.dtype:
    """torch's dtype for a resolved name (`resolve_dtype`)."""
    try:
        return DTYPES[name]
    except KeyError:
        raise AutoscopeError(f"unknown dtype {name!r}: use float32, bfloat16 or float16") from None


def module_device(module: Any) -> torch.device:
    """Where a model's weights live (the CPU for a model without parameters)."""
    p = next(iter(module.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def free_memory(device: torch.device) -> int | None:
    """Bytes free on `device` now: the GPU's from the driver (`torch.cuda.mem_get_info`), the
    host's available memory for the CPU (None where it cannot be read)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def memory_budget(device: torch.device, cpu_default: int, share: float = GPU_MEMORY_SHARE) -> int:
    """Bytes one buffer (a decoding KV cache, a batch's activations) may take on `device`.

    On the CPU the measured default stays (the CPU's speed, not its memory, bounds a batch
    there, and seeded CPU runs keep their batch sizes and so their numbers); on a GPU it is
    `share` of the memory free now, so a large card takes large batches and a nearly full one
    small ones. `AUTOSCOPE_MEMORY_BUDGET` (bytes) overrides both."""
    if os.environ.get("AUTOSCOPE_MEMORY_BUDGET"):
        return int(os.environ["AUTOSCOPE_MEMORY_BUDGET"])
    if device.type != "cuda":
        return cpu_default
    free = free_memory(device)
    return max(1 << 20, int((free or cpu_default) * share))
