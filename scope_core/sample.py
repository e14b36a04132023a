"""Sample inputs x ~ G(x | ẑ) and verify them by re-running the target.

Decoding is batched with a KV cache and rows that emit the end token leave the batch
(their cache rows are dropped), so a batch costs what its longest *live* rows cost.
Every sample is then run through the target at the same site — from the decoder's own
KV cache where that is exact (`fused_verify`), else from scratch — and its distance to ẑ
decides acceptance (hard kernel) or weight (gaussian kernel).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel

from .distances import Kernel, Metric, distance, kernel_weight
from .eps import EpsChoice
from .extract import extract
from .fused_verify import FusedVerifier, fused_ineligible
from .generator import Condition, Inverter
from .kv_cache import RaggedCache, drop_rows
from .sites import Site
from .targets import Target


VerifyMode = Literal["auto", "full"]


class Sample(BaseModel):
    text: str
    distance: float
    weight: float
    accepted: bool
    is_copy: bool  # verbatim training prompt


class QueryResult(BaseModel):
    query: str
    index: int | None = None  # row in the run's examples, when the query is a prior prompt
    samples: list[Sample]

    @property
    def n_accepted(self) -> int:
        return sum(s.accepted for s in self.samples)


class SampleRun(BaseModel):
    site: str
    eps: EpsChoice
    metric: str
    kernel: str
    temperature: float
    queries: list[QueryResult]
    timing: dict[str, float]


def draw(probs: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One index per row of probs [B, V] by inverse CDF: one uniform per row instead of the
    B·V exponentials `torch.multinomial` draws (2% of a decoding run)."""
    cdf = probs.cumsum(-1)
    u = torch.rand(probs.shape[0], 1, generator=g, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).squeeze(1).clamp_(max=probs.shape[1] - 1)


@torch.no_grad()
def generate(
    inv: Inverter,
    site: str | None,
    z: torch.Tensor | None,
    n_queries: int,
    n: int,
    temperature: float = 1.0,
    max_new_tokens: int = 48,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
    sampling_noise: float = 0.0,
    fused: FusedVerifier | None = None,
    preallocate: bool = True,
    continuous: bool = True,
) -> list[list[str]]:
    """n samples for each of `n_queries` conditions z [Q, d] at `site` (z=None: unconditional).

    `sampling_noise` s > 0 perturbs each row's condition to z + s‖z‖u, u a random unit
    vector: the InversionView protocol for a generator trained without noise. With
    `fused`, rows that end are handed to it (with their KV cache) before they leave the
    batch; sample k of query q is global row q·n + k.

    `continuous` (the default where the generator allows it): up to `batch_size` rows
    decode at once and a finished row's place goes to the next waiting one
    (`kv_cache.RaggedCache`), so only the very end of a job runs on a thinning batch.
    Otherwise rows go in fixed batches that shrink as they finish; `preallocate` False
    then keeps transformers' concatenating cache (for comparison: `bench/decode_bench.py`)."""
    rows = [q for q in range(n_queries) for _ in range(n)]
    g = torch.Generator().manual_seed(seed)
    sidx = inv.site_index(site) if site is not None else 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rows), desc="generating", unit="sample")
    if continuous and preallocate and inv.kv_condition is None:
        tokens = _decode_continuous(inv, sidx, z, rows, temperature, max_new_tokens, batch_size, g, sampling_noise, fused, bar)
    else:
        tokens = _decode_in_batches(inv, sidx, z, rows, temperature, max_new_tokens, batch_size, g, sampling_noise, fused, preallocate, bar)
    if bar:
        bar.close()
    out: list[list[str]] = [[] for _ in range(n_queries)]
    for r, toks in enumerate(tokens):
        out[rows[r]].append(inv.backbone.decode(toks))
    return out


def _conditions(inv: Inverter, sidx: int, z: torch.Tensor | None, queries: list[int], g: torch.Generator, sampling_noise: float) -> torch.Tensor | None:
    """Encoded conditions for rows whose queries are `queries` (None: unconditional)."""
    if z is None:
        return None
    zq = z[torch.tensor(queries)]
    if sampling_noise > 0:
        u = torch.nn.functional.normalize(torch.randn(zq.shape, generator=g), dim=-1)
        zq = zq + sampling_noise * zq.norm(dim=-1, keepdim=True) * u
    return inv.encode(zq, torch.full((len(queries),), sidx, dtype=torch.long))


def _next_tokens(logits: torch.Tensor, temperature: float, g: torch.Generator) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    return draw(torch.softmax(logits / temperature, dim=-1), g)


def _decode_continuous(inv: Inverter, sidx: int, z: torch.Tensor | None, rows: list[int], temperature: float, max_new_tokens: int,
                       batch_size: int, g: torch.Generator, sampling_noise: float, fused: FusedVerifier | None, bar: Any) -> list[list[int]]:
    """Sampled token ids per global row, decoding with continuous batching."""
    bb = inv.backbone
    prefix = bb.prefix_kv()
    start = bb.to_internal(torch.tensor(bb.prefix_ids[-1:]))
    cap = len(bb.prefix_ids) + max_new_tokens
    ref = next(inv.backbone.model.parameters())
    cache = RaggedCache(bb.arch.n_layers, (min(batch_size, len(rows)), bb.n_kv_heads, cap, bb.arch.head_dim), prefix, dtype=ref.dtype)
    tokens: list[list[int]] = [[] for _ in rows]
    waiting = deque(range(len(rows)))
    live: list[int] = []  # global row at each batch position
    cond: Condition | None = None
    inp = torch.zeros(0, dtype=torch.long)
    while waiting or live:
        if waiting and len(live) < batch_size:
            new = [waiting.popleft() for _ in range(min(batch_size - len(live), len(waiting)))]
            c = _conditions(inv, sidx, z, [rows[r] for r in new], g, sampling_noise)
            cn = inv.condition(c)
            cond = cn if cond is None or cn is None else cond.extend(cn)
            cache.add(len(new))
            live += new
            inp = torch.cat([inp, start.expand(len(new))])
        with inv.conditioned(cond):
            logits = bb.logits(cache, input_ids=inp[:, None], position_ids=cache.positions(), attention_mask=cache.step_mask(ref.dtype))
        cache.advance()
        nxt = bb.out_to_external(_next_tokens(logits[:, -1, :].float(), temperature, g))
        ended = nxt == bb.end_id
        for j, r in enumerate(live):
            tokens[r].append(int(nxt[j]))
        full = torch.tensor([len(tokens[r]) >= max_new_tokens for r in live])
        if fused is not None and bool(ended.any()):
            sel = ended.nonzero().squeeze(1)
            fused.finish([live[j] for j in sel.tolist()], [tokens[live[j]] for j in sel.tolist()], cache, sel)
        done = ended | full
        if bool(done.any()):
            if bar:
                bar.update(int(done.sum()))
            order = cache.remove(done)
            live, nxt = [live[j] for j in order.tolist()], nxt[order]
            if cond is not None:
                cond = cond.select(order)
        inp = bb.to_internal(nxt)
    return tokens


def _decode_in_batches(inv: Inverter, sidx: int, z: torch.Tensor | None, rows: list[int], temperature: float, max_new_tokens: int,
                       batch_size: int, g: torch.Generator, sampling_noise: float, fused: FusedVerifier | None, preallocate: bool,
                       bar: Any) -> list[list[int]]:
    """Sampled token ids per global row, in fixed batches that shrink as rows finish."""
    bb = inv.backbone
    tokens: list[list[int]] = [[] for _ in rows]
    for first in range(0, len(rows), batch_size):
        batch = list(range(first, min(first + batch_size, len(rows))))
        B = len(batch)
        c = _conditions(inv, sidx, z, [rows[r] for r in batch], g, sampling_noise)
        cache, inp = inv.start_cache(c, B, room=len(bb.prefix_ids) + max_new_tokens if preallocate else None)
        cond = inv.condition(c)
        live = torch.tensor(batch)
        for _ in range(max_new_tokens):
            with inv.conditioned(cond):
                logits = bb.logits(cache, input_ids=inp)[:, -1, :].float()
            nxt = bb.out_to_external(_next_tokens(logits, temperature, g))  # tokenizer ids
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
                live, nxt = live[keep], nxt[keep]
                if cond is not None:
                    cond = cond.select(keep)
            inp = bb.to_internal(nxt)[:, None]
        if bar:
            bar.update(B)
    return tokens


def verify(
    target: Target,
    site: Site,
    zq: torch.Tensor,
    samples: Sequence[Sequence[str]],
    metric: Metric,
    mean: torch.Tensor | None,
    batch_size: int = 32,
    progress: bool = False,
    known: dict[tuple[int, int], torch.Tensor] | None = None,
) -> list[list[float]]:
    """d(z(x), ẑ) for every sample x of every query; empty samples get +inf.

    `known` maps (query, sample) to a site activation already read (the fused path);
    every other non-empty sample is re-run through the target."""
    known = known or {}
    flat = [(q, k, t) for q, ss in enumerate(samples) for k, t in enumerate(ss) if t.strip() and (q, k) not in known]
    dists: list[list[float]] = [[float("inf")] * len(ss) for ss in samples]
    pairs = list(known.items())
    if flat:
        acts = extract(target, [t for _, _, t in flat], [site], batch_size=batch_size, progress=progress)[site]
        pairs += [((q, k), a) for (q, k, _), a in zip(flat, acts)]
    if pairs:
        acts = torch.stack([a for _, a in pairs])
        q_idx = torch.tensor([q for (q, _), _ in pairs])
        for ((q, k), _), d in zip(pairs, distance(acts, zq[q_idx], metric, mean).tolist()):
            dists[q][k] = d
    return dists


def assemble(
    queries: Sequence[str],
    indices: Sequence[int | None],
    samples: Sequence[Sequence[str]],
    dists: Sequence[Sequence[float]],
    eps: float,
    kernel: Kernel,
    train_texts: set[str],
) -> list[QueryResult]:
    out = []
    for q, idx, ss, ds in zip(queries, indices, samples, dists):
        d_t = torch.tensor(ds)
        w = kernel_weight(torch.nan_to_num(d_t, posinf=1e9), eps, kernel).tolist()
        out.append(QueryResult(query=q, index=idx, samples=[
            Sample(text=t, distance=float(d), weight=float(wi), accepted=bool(d < eps), is_copy=t in train_texts)
            for t, d, wi in zip(ss, ds, w)
        ]))
    return out


def sample_and_verify(
    inv: Inverter | None,
    target: Target,
    site: Site,
    zq: torch.Tensor,
    queries: Sequence[str],
    indices: Sequence[int | None],
    eps: EpsChoice,
    train_texts: set[str],
    mean: torch.Tensor | None,
    n: int = 16,
    temperature: float = 1.0,
    kernel: Kernel = "hard",
    conditional: bool = True,
    max_new_tokens: int = 48,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
    sampling_noise: float = 0.0,
    verify_mode: VerifyMode = "auto",
    continuous: bool = True,
) -> SampleRun:
    """The full sampler: generate, verify, weight. Timing per phase goes into the result.

    `verify_mode` "auto" reads the site from the decoder's own cache where that is exact
    (`fused_verify`), "full" re-runs the target on every sample."""
    t0 = time.perf_counter()
    assert inv is not None
    why_not = fused_ineligible(inv, target, site, conditional) if verify_mode == "auto" else "verify_mode full"
    fused = FusedVerifier(target, site) if why_not is None else None
    gen = generate(inv, site.name if conditional else None, zq if conditional else None, len(queries), n,
                   temperature, max_new_tokens, batch_size, seed, progress, sampling_noise, fused=fused, continuous=continuous)
    t1 = time.perf_counter()
    known: dict[tuple[int, int], torch.Tensor] = {}
    if fused is not None:
        usable = fused.usable([(q * n + k, t) for q, ss in enumerate(gen) for k, t in enumerate(ss)])
        known = {(r // n, r % n): a for r, a in usable.items()}
    dists = verify(target, site, zq, gen, eps.metric, mean, progress=progress, known=known)  # type: ignore[arg-type]
    t2 = time.perf_counter()
    res = assemble(queries, indices, gen, dists, eps.eps, kernel, train_texts)
    flat = [t for ss in gen for t in ss if t.strip()]
    n_tok = sum(len(ids) for ids in target.suffix_ids(flat)) if flat else 0
    return SampleRun(site=site.name, eps=eps, metric=eps.metric, kernel=kernel, temperature=temperature, queries=res,
                     timing={"generate_s": t1 - t0, "verify_s": t2 - t1, "samples": float(len(queries) * n), "verify_tokens": float(n_tok),
                             "fused_verified": float(len(known))})


def summarise(run: SampleRun) -> dict[str, float]:
    """The sampler's figures: refusal rate, exact-copy rate, accepted-novel per 100, distinct per query."""
    samples = [s for q in run.queries for s in q.samples]
    n = max(len(samples), 1)
    acc = [s.accepted for s in samples]
    novel = [s.accepted and not s.is_copy for s in samples]
    finite = [s.distance for s in samples if np.isfinite(s.distance)]
    return {
        "refusal_rate": 1 - sum(acc) / n,
        "exact_copy_rate": sum(s.is_copy for s in samples) / n,
        "accepted_novel_per_100": 100 * sum(novel) / n,
        "distinct_per_query": float(np.mean([len({s.text for s in q.samples}) for q in run.queries])) if run.queries else 0.0,
        "median_distance": float(np.median(finite)) if finite else float("nan"),
        "queries_with_accepted": sum(q.n_accepted > 0 for q in run.queries) / max(len(run.queries), 1),
    }
