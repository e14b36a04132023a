"""Entering the backbone at its first control block: the trunk shortcut and priming, a
speed-up of training and decoding that gives the full forward's results.

Below the first control block k nothing depends on the condition: the residual entering
block k is the target's own (the frozen backbone *is* the target, or shares its lower
blocks, `generator.graft_upper`), and at the prefix's last token it is the same for every
prompt. So

- training (`TrunkShortcut.loss_from_trunk`, NOTES §1) starts each prompt at block k from the
  residuals the activation cache kept (`extract.extract_with_trunk`), and runs only blocks
  k.. and the head;
- continuous decoding (`continuous.prime`) computes the prefix's last token below block k
  once (`BlockEntry.prefix_primer`), and every row that joins the batch starts at block k.

Both check once that entering at block k gives the full forward's loss or logits and go the
plain way where it does not (an architecture that adds position embeddings to
`inputs_embeds`, say): `train.trunk_residuals`, `continuous.primer`. The equality tests:
tests/test_generator.py (loss and gradients), tests/test_kv_cache.py (primed rows decode as
unprimed ones, and the fallback), tests/test_shallow.py (the residual read from a graft).

The two classes are mixins of `generator.Backbone` and `generator.Inverter`, so that
`generator.py` holds the method alone; they use those classes' attributes (`model`, `arch`,
`prefix_ids`, `to_internal`, `device`; `backbone`, `controls`, `kv_condition`, `conditioned`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .errors import AutoscopeError


class BlockEntry:
    """What `generator.Backbone` gains here: running the model from block k on."""

    arch: Any  # targets.Architecture
    model: Any
    prefix_ids: list[int]

    @contextmanager
    def layers_from(self, k: int):
        """Inside, the model runs only blocks k.. on `inputs_embeds` = the residual entering
        block k. Attention modules keep their layer index, so a full-depth prefix cache
        still lines up."""
        arch = self.arch
        full = getattr(arch.layers_parent, arch.layers_attr)
        setattr(arch.layers_parent, arch.layers_attr, nn.ModuleList(list(full)[k:]))
        try:
            yield
        finally:
            setattr(arch.layers_parent, arch.layers_attr, full)

    @torch.no_grad()
    def prefix_last_hidden(self, k: int) -> torch.Tensor:
        """Residual entering block k at the last prefix token (the same for every prompt)."""
        return self.prefix_primer(k)[0]

    @torch.no_grad()
    def prefix_primer(self, k: int) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """The last prefix token as blocks 0..k-1 see it, the same for every prompt: the
        residual entering block k [d], and per block below k its key and value [H, D] there.

        Why: below the first control layer nothing depends on the condition, so training
        (`TrunkShortcut.loss_from_trunk`) and decoding (`continuous.decode_continuous`) start each row
        at block k instead of repeating that computation per row.

        Read by a pre-hook on block k, not with `output_hidden_states`: transformers installs
        its hidden-state capture hooks lazily on every block of the model it is asked on, and a
        graft (`graft_upper`) shares its lower blocks with the target — asking the graft would
        hook the target's blocks a second time, and the target's own `hidden_states` would then
        list those blocks twice."""
        from transformers.cache_utils import DynamicCache

        ids = self.to_internal(torch.tensor([self.prefix_ids])).to(self.device)
        seen: list[torch.Tensor] = []

        class _Enough(Exception):
            pass

        def grab(module: nn.Module, args: tuple, kwargs: dict) -> None:
            seen.append(kwargs.get("hidden_states", args[0] if args else None))
            raise _Enough

        if k >= self.arch.n_layers:  # the residual after the last block: no block to hook
            raise AutoscopeError(f"no block {k}: the backbone has {self.arch.n_layers}")
        cache = DynamicCache()
        handle = self.arch.layers[k].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            self.model(input_ids=ids, past_key_values=cache, use_cache=True)
        except _Enough:
            pass
        finally:
            handle.remove()
        kv = [(cache.layers[i].keys[0, :, -1], cache.layers[i].values[0, :, -1]) for i in range(k)]
        return seen[0][0, -1], kv


class TrunkShortcut:
    """What `generator.Inverter` gains here: its loss from the cached trunk, and the memory of
    whether its rows can be primed."""

    backbone: Any  # generator.Backbone
    controls: Any  # nn.ModuleDict of control layers, by block
    kv_condition: Any
    _priming_exact: bool | None = None  # set by continuous.primer on first use
    _h_prefix: torch.Tensor | None = None  # the prefix's last token entering `trunk_layer`, read once

    @property
    def trunk_layer(self) -> int | None:
        """First block that carries a control layer: blocks below it never see the condition."""
        if self.kv_condition is not None or not self.controls:
            return None
        return min(int(i) for i in self.controls)

    def loss_from_trunk(self, trunk: list[torch.Tensor], ids: list[list[int]], c: torch.Tensor | None) -> tuple[torch.Tensor, int]:
        """Same as `Inverter.loss`, but starting from cached residuals entering `trunk_layer`
        (trunk[i]: [≥ len(ids[i]) - 1, d] for the text tokens) instead of recomputing the
        frozen blocks below it — the frozen backbone is the target, so the activation
        cache already holds them."""
        bb = self.backbone
        k = self.trunk_layer
        assert k is not None
        if self._h_prefix is None:
            self._h_prefix = bb.prefix_last_hidden(k)
        B, T, d = len(ids), max(len(s) for s in ids), self._h_prefix.shape[-1]
        x = torch.zeros(B, T, d)
        tgt = torch.full((B, T), -100, dtype=torch.long)
        for i, s in enumerate(ids):
            x[i, 0] = self._h_prefix.cpu()
            x[i, 1 : len(s)] = trunk[i][: len(s) - 1].float()
            tgt[i, : len(s)] = bb.out_index(torch.tensor(s))
        # the backbone's dtype and device (no-ops for a float32 CPU backbone)
        x, tgt = x.to(bb.device, self._h_prefix.dtype), tgt.to(bb.device)
        cache = bb.prefix_cache(B)
        with bb.layers_from(k), self.conditioned(c):
            logits = bb.logits(cache, inputs_embeds=x)
        n = int((tgt != -100).sum())
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tgt.reshape(-1), ignore_index=-100, reduction="sum")
        return loss / n, n
