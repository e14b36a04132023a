"""Continuous batching: a speed-up of `decoding.decode_in_batches` that gives the same samples.

Up to `batch_size` rows decode at once in a ragged KV cache (`kv_cache.RaggedCache`): each
row has its own length and positions, and a finished row's slot goes at once to the next
waiting row, so only the very end of a job runs on a thinning batch. Rows that join are
primed: below the first control block the prefix's last token is the same for every row,
so it is computed once and each joining row starts at that block (`prime`).

Exact, and tested to be: continuous and fixed batches give the same greedy samples, primed
and unprimed rows the same tokens, and priming falls back where a backbone cannot be
entered midway (tests/test_kv_cache.py).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch

from .decoding import encoded_conditions, next_tokens
from .fused_verify import FusedVerifier
from .generator import Condition, Inverter
from .kv_cache import RaggedCache


def decode_continuous(inv: Inverter, sidx: int, z: torch.Tensor | None, rows: list[int], temperature: float, max_new_tokens: int,
                       batch_size: int, g: torch.Generator, sampling_noise: float, fused: FusedVerifier | None, bar: Any) -> list[list[int]]:
    """Sampled token ids per global row, decoding with continuous batching.

    Rows join with the prefix's last token as their first input. Where the first control
    layer sits at block k > 0 (the default generators), that token's blocks 0..k-1 are the
    same for every row, so joining rows are primed on the side from block k (`prime`) —
    for L18 samples of ~15 tokens that is 19 of the ~350 block-forwards a sample costs."""
    bb = inv.backbone
    prefix = bb.prefix_kv()
    start = bb.to_internal(torch.tensor(bb.prefix_ids[-1:]))
    cap = len(bb.prefix_ids) + max_new_tokens
    ref = next(inv.backbone.model.parameters())
    cache = RaggedCache(bb.arch.n_layers, (min(batch_size, len(rows)), bb.n_kv_heads, cap, bb.arch.head_dim), prefix, dtype=ref.dtype,
                        device=ref.device)
    first_rows = primer(inv) if z is not None else None
    tokens: list[list[int]] = [[] for _ in rows]
    waiting = deque(range(len(rows)))
    live: list[int] = []  # global row at each batch position
    cond: Condition | None = None
    inp = torch.zeros(0, dtype=torch.long)  # next input (internal id) of each live row

    def settle(first: int, logits: torch.Tensor) -> None:
        """Rows first.. of the batch drew their next token from `logits`; record it, hand
        rows that ended to `fused`, and drop the rows that are done."""
        nonlocal live, inp, cond
        nxt = bb.out_to_external(next_tokens(logits.float(), temperature, g)).cpu()  # bookkeeping on the CPU
        for j, t in enumerate(nxt.tolist()):
            tokens[live[first + j]].append(t)
        drew = torch.zeros(len(live), dtype=torch.bool)
        drew[first:] = True
        ended = torch.zeros(len(live), dtype=torch.bool)
        ended[first:] = nxt == bb.end_id
        full = drew & torch.tensor([len(tokens[r]) >= max_new_tokens for r in live])
        inp = torch.cat([inp[:first], bb.to_internal(nxt)])
        if fused is not None and bool(ended.any()):
            sel = ended.nonzero().squeeze(1)
            fused.finish([live[j] for j in sel.tolist()], [tokens[live[j]] for j in sel.tolist()], cache, sel.to(ref.device))
        done = ended | full
        if bool(done.any()):
            if bar:
                bar.update(int(done.sum()))
            order = cache.remove(done)
            live, inp = [live[j] for j in order.tolist()], inp[order]
            if cond is not None:
                cond = cond.select(order)

    while waiting or live:
        if waiting and len(live) < batch_size:
            new = [waiting.popleft() for _ in range(min(batch_size - len(live), len(waiting)))]
            c = encoded_conditions(inv, sidx, z, [rows[r] for r in new], g, sampling_noise)
            cn = inv.condition(c)
            cond = cn if cond is None or cn is None else cond.extend(cn)
            cache.add(len(new))
            first = len(live)
            live += new
            if first_rows is None:
                inp = torch.cat([inp, start.expand(len(new))])
            else:
                settle(first, prime(inv, cache, first_rows, cn, len(new)))
                continue  # the batch may have room again
        with inv.conditioned(cond):
            logits = bb.logits(cache, input_ids=inp[:, None].to(ref.device), position_ids=cache.positions(),
                               attention_mask=cache.step_mask(ref.dtype))
        cache.advance()
        settle(0, logits[:, -1, :])
    return tokens


def primer(inv: Inverter) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]] | None:
    """`priming.BlockEntry.prefix_primer` at the inverter's first control block, or None where rows
    cannot be primed: no block below the condition, no cached prefix, or — checked once per
    inverter, as the training's trunk shortcut is — a backbone that does not give the
    same first-token logits from block k (one that adds position embeddings to
    `inputs_embeds`, say)."""
    bb, k = inv.backbone, inv.trunk_layer
    if not k or bb.prefix_kv() is None or bb.device.type != "cpu":  # a CPU speed-up: a GPU runs the rows' lower blocks in parallel anyway
        return None
    shared = bb.prefix_primer(k)
    if inv._priming_exact is None:
        P = len(bb.prefix_ids)
        probe = RaggedCache(bb.arch.n_layers, (1, bb.n_kv_heads, P + 1, bb.arch.head_dim), bb.prefix_kv(), dtype=shared[0].dtype)
        probe.add(1)
        primed = prime(inv, probe, shared, None, 1)
        with inv.conditioned(None):
            full = bb.logits(bb.prefix_cache(1), input_ids=bb.to_internal(torch.tensor([bb.prefix_ids[-1:]])))[:, -1]
        inv._priming_exact = bool(torch.allclose(primed, full, rtol=1e-3, atol=1e-3 * float(full.abs().max())))
    return shared if inv._priming_exact else None


def prime(inv: Inverter, cache: RaggedCache, shared: tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]],
           cond: Condition | None, n: int) -> torch.Tensor:
    """First-token logits [n, V] of the last n rows of `cache` (just added, holding the
    prefix but its last token), computed from block k = `inv.trunk_layer` on: the shared
    residual and keys/values of blocks below k come from `shared` (`primer`), blocks k.. run on the
    side with the rows' conditions. Their keys/values at that position go into `cache`."""
    bb = inv.backbone
    h, lower = shared
    k = len(lower)
    side = bb.prefix_cache(n)
    P = len(bb.prefix_ids)
    with bb.layers_from(k), inv.conditioned(cond):
        logits = bb.logits(side, inputs_embeds=h.expand(n, 1, -1), position_ids=torch.full((n, 1), P - 1))
    upper = [(layer.keys[:, :, -1], layer.values[:, :, -1]) for layer in side.layers[k:]]
    cache.write_last(n, lower + upper)
    return logits[:, -1, :]
