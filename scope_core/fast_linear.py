"""Linear layers with oneDNN-prepacked weights, for inference forwards on CPU.

Why: a float32 `F.linear` on CPU goes to MKL's sgemm, which repacks the weight matrix on
every call. At the row counts sampling runs at — 1 to 512 rows a decoding step — that
repacking is a large share of a linear's time. oneDNN's prepacked weights (the layout
torch.compile's CPU freezing pass uses) made SmolLM2's 576×1536 linear 1.15–1.2× faster at
192–768 rows and about 2× at 8 rows (NOTES §29). The results agree with `F.linear` to float
rounding (|Δ| ≈ 2e-6 on unit-scale inputs) but are not bit-identical, so the forwards that
must agree with each other — the target's own (`extract`), the decoder's shared lower blocks
and the fused verifier's tails — all run under `prepacked_linears`.

`AUTOSCOPE_PREPACK=0` turns it off (for comparison, or where oneDNN misbehaves), as does the
switch of every speed-up, `AUTOSCOPE_SPEEDUPS=0` (`speedups.py`). The packed
copies are extra memory, as much as the weights they copy, so at most
`AUTOSCOPE_PREPACK_BYTES` (default 2 GiB: all of SmolLM2's blocks, a fraction of an 8B
model's) are kept; layers beyond that run plain.
"""

from __future__ import annotations

import os
import threading
import types
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .speedups import speedups_on

_lock = threading.Lock()
_depth: dict[int, int] = {}  # id(module) -> how many open contexts patched it
_packed: weakref.WeakKeyDictionary[nn.Linear, tuple[int, int, torch.Tensor]] = weakref.WeakKeyDictionary()


def prepack_budget() -> int:
    """Bytes of packed weights kept at most (`AUTOSCOPE_PREPACK_BYTES`, default 2 GiB)."""
    return int(os.environ.get("AUTOSCOPE_PREPACK_BYTES", 2 << 30))


def prepack_available() -> bool:
    return os.environ.get("AUTOSCOPE_PREPACK", "1") != "0" and speedups_on() and torch.backends.mkldnn.is_available()


def _packed_weight(m: nn.Linear) -> torch.Tensor | None:
    """The module's weight in oneDNN's layout, packed again only when the weight changed;
    None when packing it would exceed `prepack_budget`."""
    w = m.weight
    key = (w.data_ptr(), w._version)
    with _lock:
        hit = _packed.get(m)
        if hit is None or hit[:2] != key:
            held = sum(p.numel() * p.element_size() for other, (_, _, p) in _packed.items() if other is not m)
            if held + w.numel() * w.element_size() > prepack_budget():
                return None
            hit = (*key, torch.ops.mkldnn._reorder_linear_weight(w.detach(), 64))
            _packed[m] = hit
    return hit[2]


def _fast_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    packed = None
    if not torch.is_grad_enabled() and x.dtype == torch.float32 and x.device.type == "cpu":
        packed = _packed_weight(self)
    if packed is None:
        return nn.functional.linear(x, self.weight, self.bias)
    return torch.ops.mkldnn._linear_pointwise(x, packed, self.bias, "none", [], "")


def _eligible(m: nn.Module) -> bool:
    return (type(m) is nn.Linear and m.weight.dtype == torch.float32 and m.weight.device.type == "cpu"
            and (m.bias is None or m.bias.dtype == torch.float32))


@contextmanager
def prepacked_linears(*models: nn.Module) -> Iterator[None]:
    """Inside, every float32 CPU `nn.Linear` of `models` runs on its prepacked weight when
    gradients are off (with gradients on it is the plain layer). Re-entrant; a no-op where
    oneDNN is missing or `AUTOSCOPE_PREPACK=0`."""
    if not prepack_available():
        yield
        return
    mods = list({id(m): m for model in models for m in model.modules() if _eligible(m)}.values())
    with _lock:
        for m in mods:
            if _depth.get(id(m), 0) == 0:
                m.forward = types.MethodType(_fast_forward, m)  # type: ignore[method-assign]
            _depth[id(m)] = _depth.get(id(m), 0) + 1
    try:
        yield
    finally:
        with _lock:
            for m in mods:
                _depth[id(m)] -= 1
                if _depth[id(m)] == 0:
                    del _depth[id(m)]
                    del m.forward
