"""Decoding as the paper describes it: x ~ G(x | ẑ), token by token.

Each row's condition is the encoded query activation (plus, for a generator trained without
noise, the InversionView sampling noise); each step draws the next token of every live row
from the generator's softmax at the sampling temperature; a row ends at the end token or at
the length cap. `decode_in_batches` runs rows in fixed batches that shrink as rows finish.
The faster way to run the same decoding — continuous batching on a ragged KV cache, with
rows primed from the first control block — is `scope_core/continuous.py` (`speedups.py`
lists every speed-up and the switch that turns them off).
"""

from __future__ import annotations

from typing import Any

import torch

from .fused_verify import FusedVerifier
from .errors import AutoscopeError
from .generator import Inverter
from .kv_cache import drop_rows


def draw(probs: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One index per row of probs [B, V] by inverse CDF: one uniform per row instead of the
    B·V exponentials `torch.multinomial` draws (2% of a decoding run)."""
    cdf = probs.cumsum(-1)
    # the seeded generator is the CPU's, wherever the model runs (no-op move on the CPU)
    u = torch.rand(probs.shape[0], 1, generator=g, dtype=cdf.dtype).to(cdf.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).squeeze(1).clamp_(max=probs.shape[1] - 1)


def encoded_conditions(inv: Inverter, sidx: int, z: torch.Tensor | None, queries: list[int], g: torch.Generator, sampling_noise: float) -> torch.Tensor | None:
    """Encoded conditions for rows whose queries are `queries` (None: unconditional)."""
    if z is None:
        return None
    zq = z[torch.tensor(queries)]
    if sampling_noise > 0:
        u = torch.nn.functional.normalize(torch.randn(zq.shape, generator=g), dim=-1)
        zq = zq + sampling_noise * zq.norm(dim=-1, keepdim=True) * u
    return inv.encode(zq, torch.full((len(queries),), sidx, dtype=torch.long))


def next_tokens(logits: torch.Tensor, temperature: float, g: torch.Generator) -> torch.Tensor:
    """The next token of each row: sampled at `temperature`, or the most likely at 0 (greedy)."""
    if temperature <= 0:
        return logits.argmax(-1)
    return draw(torch.softmax(logits / temperature, dim=-1), g)


def guided(cond_logits: torch.Tensor, uncond_logits: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance: log p_u + w·(log p_c − log p_u), i.e. p_c^w / p_u^(w−1).

    Why: with a frozen backbone p_c(x) ∝ p_u(x)·L(ẑ | x), so guidance w samples
    ∝ p_u(x)·L(ẑ | x)^w — the likelihood of the query sharpened, as a narrower training
    kernel would, while the prior's own fluency is kept (a lower temperature sharpens the
    prior too). w = 1 is plain sampling."""
    lc, lu = torch.log_softmax(cond_logits, -1), torch.log_softmax(uncond_logits, -1)
    return lu + guidance * (lc - lu)


def check_guidance(inv: Inverter, guidance: float) -> None:
    """Guidance needs an unconditioned model that is the prior's: the frozen backbone (or
    its supervised fine-tune) without control layers. A shallow generator's own blocks were
    only ever trained with their condition, and the InversionView baseline has no
    unconditioned pass, so neither can be guided."""
    if guidance <= 0:
        raise AutoscopeError(f"guidance must be > 0 (1 is plain sampling), not {guidance}")
    if inv.kv_condition is not None:
        raise AutoscopeError("guidance needs an InverseScope generator; the InversionView baseline has no unconditioned pass "
                             "(sample with --guidance 1)")
    if inv.config.upper_blocks:
        raise AutoscopeError(f"guidance needs the whole frozen backbone, but this generator fine-tuned copies of its last "
                             f"{inv.config.upper_blocks} blocks with the control layers, so its unconditioned pass is untrained "
                             "(sample with --guidance 1, or train with --upper-blocks 0)")


def decode_in_batches(inv: Inverter, sidx: int, z: torch.Tensor | None, rows: list[int], temperature: float, max_new_tokens: int,
                       batch_size: int, g: torch.Generator, sampling_noise: float, fused: FusedVerifier | None, preallocate: bool,
                       bar: Any, guidance: float = 1.0) -> list[list[int]]:
    """Sampled token ids per global row, in fixed batches that shrink as rows finish.

    The paper's decoding: each batch starts from the shared prefix with its rows' conditions,
    and draws a token per row and step until the row emits the end token or reaches
    `max_new_tokens`. `preallocate` keeps the KV cache in buffers sized for the longest
    sample (`kv_cache.preallocated`) instead of transformers' concatenating cache.
    `guidance` w ≠ 1 (conditional rows only) runs each row a second time without its
    condition, in a cache of its own, and draws from `guided` logits."""
    bb = inv.backbone
    tokens: list[list[int]] = [[] for _ in rows]
    for first in range(0, len(rows), batch_size):
        batch = list(range(first, min(first + batch_size, len(rows))))
        B = len(batch)
        c = encoded_conditions(inv, sidx, z, [rows[r] for r in batch], g, sampling_noise)
        room = len(bb.prefix_ids) + max_new_tokens if preallocate else None
        cache, inp = inv.start_cache(c, B, room=room)
        cond = inv.condition(c)
        cache_u = inv.start_cache(None, B, room=room)[0] if guidance != 1 and c is not None else None
        live = torch.tensor(batch)
        for _ in range(max_new_tokens):
            with inv.conditioned(cond):
                logits = bb.logits(cache, input_ids=inp)[:, -1, :].float()
            if cache_u is not None:
                with inv.conditioned(None):
                    logits = guided(logits, bb.logits(cache_u, input_ids=inp)[:, -1, :].float(), guidance)
            nxt = bb.out_to_external(next_tokens(logits, temperature, g)).cpu()  # tokenizer ids, on the CPU
            done = nxt == bb.end_id
            for j, r in enumerate(live.tolist()):
                tokens[r].append(int(nxt[j]))
            if fused is not None and bool(done.any()):
                sel = done.nonzero().squeeze(1)
                ended = [int(live[j]) for j in sel]
                fused.finish(ended, [tokens[r] for r in ended], cache, sel)
            if bool(done.all()):
                break
            if bool(done.any()):
                keep = drop_rows(cache, done)  # new row j was row keep[j]
                if cache_u is not None:
                    drop_rows(cache_u, done)  # the same plan, so the same order
                live, nxt = live[keep], nxt[keep]
                if cond is not None:
                    cond = cond.select(keep)
            inp = bb.to_internal(nxt)[:, None].to(bb.device)
        if bar:
            bar.update(B)
    return tokens
