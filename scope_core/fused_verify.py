"""Verify samples by finishing the target's forward from the decoder's own KV cache.

Why: when the generator's backbone *is* the frozen target (the default) and every control
layer sits above the site, the decoder's blocks 0..site run exactly the target's
computation on exactly the tokens the target will see (`prefix + text`): the shared chat
prefix, then each sampled token. Re-running the target from scratch repeats that work.
Here, when a row emits the end token, its KV cache for blocks 0..site is kept and only the
template's tail (end of turn + generation prompt, ~5 tokens) is run through those blocks
to read the site at the decision position. Verification drops from a full truncated
forward per sample to a few tokens.

Exactness is checked, not assumed: a sample takes this path only if re-tokenising its
decoded text gives back the sampled ids followed by the tail (the target sees the
*string*, so a non-canonical tokenisation must be verified the slow way), and only if the
row ended with the end token. Everything else falls back to `extract`. The two paths agree
to float rounding (tested).
"""

from __future__ import annotations

from typing import Any

import torch

from .extract import _StopForward, recording
from .fast_linear import prepacked_linears
from .generator import Inverter, shares_blocks
from .kv_cache import gather_rows
from .sites import Site
from .targets import Target


def fused_ineligible(inv: Inverter, target: Target, site: Site, conditional: bool) -> str | None:
    """Why the fused path cannot be used for this (inverter, target, site), or None if it can."""
    bb = inv.backbone
    if not shares_blocks(bb.model, target.model, site.layer):
        return f"the generator's backbone does not run the target's own blocks 0-{site.layer}"
    if bb.vocab is not None:
        return "the backbone has its own vocabulary"
    if inv.kv_condition is not None and conditional:
        return "the InversionView condition enters at block 0"
    if conditional and inv.controls and min(int(i) for i in inv.controls) <= site.layer:
        return f"a control layer sits at or below the site's layer {site.layer}"
    if list(bb.prefix_ids) != list(target.prefix_ids):
        return "the generator's prefix differs from the target's prompt prefix"
    tail = target.tail_ids()
    if not tail or tail[0] != bb.end_id:
        return "the template's tail does not start with the generator's end token"
    return None


class FusedVerifier:
    """Collects site activations for rows that leave the decoding batch with the end token.

    Rows end a few at a time, and a forward over a few rows costs what reading the weights
    costs; so finished rows are held (their blocks 0..site keys/values) and their tails run
    together, `flush_rows` at a time. Rows that ended at different steps have caches of
    different lengths: they are right-padded, the padding masked out, and the tail's
    positions given explicitly."""

    def __init__(self, target: Target, site: Site, flush_rows: int = 128):
        self.target, self.site, self.flush_rows = target, site, flush_rows
        self.tail = target.tail_ids()
        self.acts: dict[int, torch.Tensor] = {}  # global row -> site activation [d]
        self.ids: dict[int, list[int]] = {}  # global row -> sampled ids (end excluded)
        # held rows, one chunk per `finish` call: (global rows, their lengths, per layer (keys, values) [n, H, L, D])
        self._pending: list[tuple[list[int], torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]] = []
        self._held = 0

    def finish(self, rows: list[int], token_lists: list[list[int]], cache: Any, sel: torch.Tensor) -> None:
        """Rows `rows` (global ids; `sel` their positions in `cache`) just sampled the end
        token: keep their blocks 0..site keys/values until the next flush."""
        lengths, kv = gather_rows(cache, sel, self.site.layer + 1)
        self._pending.append((list(rows), lengths, kv))
        self._held += len(rows)
        for r, toks in zip(rows, token_lists):
            self.ids[r] = toks[:-1]
        if self._held >= self.flush_rows:
            self.flush()

    @torch.no_grad()
    def flush(self) -> None:
        """Run the template's tail through blocks 0..site for every held row, in one batch."""
        from transformers.cache_utils import DynamicCache

        if not self._pending:
            return
        rows = [r for chunk in self._pending for r in chunk[0]]
        lengths = torch.cat([chunk[1].cpu() for chunk in self._pending])
        G, T, P = len(rows), len(self.tail), int(lengths.max())
        layers = []
        for li in range(self.site.layer + 1):
            k0 = self._pending[0][2][li][0]
            ks = k0.new_zeros((G, k0.shape[1], P, k0.shape[-1]))
            vs = torch.zeros_like(ks)
            g = 0
            for _, lens, kv in self._pending:
                n, L = len(lens), kv[li][0].shape[2]
                ks[g:g + n, :, :L], vs[g:g + n, :, :L] = kv[li][0], kv[li][1]
                g += n
            layers.append((ks, vs))
        mask = torch.ones((G, P + T), dtype=torch.long)
        mask[:, :P] = (torch.arange(P)[None, :] < lengths[:, None]).long()
        pos = lengths[:, None] + torch.arange(T)[None, :]
        ids = torch.tensor(self.tail).expand(G, -1)
        dev = self.target.device  # built on the CPU, run where the target is (no-ops there)
        mask, pos, ids = mask.to(dev), pos.to(dev), ids.to(dev)
        with recording(self.target, [self.site]) as rec, prepacked_linears(self.target.model):
            rec.positions = torch.full((G,), T - 1)
            try:
                self.target.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                  past_key_values=DynamicCache(layers), use_cache=True)
            except _StopForward:
                pass
        acts = rec.out[self.site]
        for j, r in enumerate(rows):
            self.acts[r] = acts[j]
        self._pending, self._held = [], 0

    def usable(self, rows_texts: list[tuple[int, str]]) -> dict[int, torch.Tensor]:
        """Of (global row, decoded text), those whose text re-tokenises to the sampled ids."""
        self.flush()
        cand = [(r, t) for r, t in rows_texts if r in self.acts and t.strip()]
        if not cand:
            return {}
        suffixes = self.target.suffix_ids([t for _, t in cand])
        return {r: self.acts[r] for (r, _), s in zip(cand, suffixes) if s == self.ids[r] + self.tail}
