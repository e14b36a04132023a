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
from .fast_linear import prepacked_linears
from .fused_verify import FusedVerifier, fused_ineligible
from .generator import Condition, Inverter
from .kv_cache import RaggedCache, drop_rows
from .sites import Site
from .targets import Target


VerifyMode = Literal["auto", "full"]

MAX_DECODE_ROWS = 512
DECODE_KV_BUDGET = 1 << 30  # bytes of decoding KV cache the default batch may take


def decode_rows(inv: Inverter, max_new_tokens: int, n_rows: int, budget: int = DECODE_KV_BUDGET) -> int:
    """Rows decoded at once by default: as many as the job has, up to MAX_DECODE_ROWS, and no
    more than a KV cache of `budget` bytes holds.

    Why 512: a decoding step is compute-bound from ~256 rows on (1.2 ms per row-step for
    SmolLM2 at L18), but each step also pays a fixed cost (Python, weight reads) and a job's
    last steps run on a thinning batch; doubling the batch from 256 took 5–15% off a
    640-sample job (NOTES §28). The memory cap keeps a large model's cache bounded (8B fp32: ~40 rows)."""
    bb = inv.backbone
    ref = next(bb.model.parameters())
    per_row = 2 * bb.arch.n_layers * bb.n_kv_heads * bb.arch.head_dim * (len(bb.prefix_ids) + max_new_tokens) * ref.element_size()
    return max(1, min(MAX_DECODE_ROWS, n_rows, budget // per_row))


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
    batch_size: int | None = None,
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
    then keeps transformers' concatenating cache (for comparison: `bench/decode_bench.py`).
    `batch_size` None: `decode_rows`."""
    rows = [q for q in range(n_queries) for _ in range(n)]
    if batch_size is None:
        batch_size = decode_rows(inv, max_new_tokens, len(rows))
    g = torch.Generator().manual_seed(seed)
    sidx = inv.site_index(site) if site is not None else 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rows), desc="generating", unit="sample")
    with prepacked_linears(inv.backbone.model, inv):
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
    """Sampled token ids per global row, decoding with continuous batching.

    Rows join with the prefix's last token as their first input. Where the first control
    layer sits at block k > 0 (the default generators), that token's blocks 0..k-1 are the
    same for every row, so joining rows are primed on the side from block k (`_prime`) —
    for L18 samples of ~15 tokens that is 19 of the ~350 block-forwards a sample costs."""
    bb = inv.backbone
    prefix = bb.prefix_kv()
    start = bb.to_internal(torch.tensor(bb.prefix_ids[-1:]))
    cap = len(bb.prefix_ids) + max_new_tokens
    ref = next(inv.backbone.model.parameters())
    cache = RaggedCache(bb.arch.n_layers, (min(batch_size, len(rows)), bb.n_kv_heads, cap, bb.arch.head_dim), prefix, dtype=ref.dtype)
    primer = _primer(inv) if z is not None else None
    tokens: list[list[int]] = [[] for _ in rows]
    waiting = deque(range(len(rows)))
    live: list[int] = []  # global row at each batch position
    cond: Condition | None = None
    inp = torch.zeros(0, dtype=torch.long)  # next input (internal id) of each live row

    def settle(first: int, logits: torch.Tensor) -> None:
        """Rows first.. of the batch drew their next token from `logits`; record it, hand
        rows that ended to `fused`, and drop the rows that are done."""
        nonlocal live, inp, cond
        nxt = bb.out_to_external(_next_tokens(logits.float(), temperature, g))
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
            fused.finish([live[j] for j in sel.tolist()], [tokens[live[j]] for j in sel.tolist()], cache, sel)
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
            c = _conditions(inv, sidx, z, [rows[r] for r in new], g, sampling_noise)
            cn = inv.condition(c)
            cond = cn if cond is None or cn is None else cond.extend(cn)
            cache.add(len(new))
            first = len(live)
            live += new
            if primer is None:
                inp = torch.cat([inp, start.expand(len(new))])
            else:
                settle(first, _prime(inv, cache, primer, cn, len(new)))
                continue  # the batch may have room again
        with inv.conditioned(cond):
            logits = bb.logits(cache, input_ids=inp[:, None], position_ids=cache.positions(), attention_mask=cache.step_mask(ref.dtype))
        cache.advance()
        settle(0, logits[:, -1, :])
    return tokens


def _primer(inv: Inverter) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]] | None:
    """`Backbone.prefix_primer` at the inverter's first control block, or None where rows
    cannot be primed: no block below the condition, no cached prefix, or — checked once per
    inverter, as the training's trunk shortcut is — a backbone that does not give the
    same first-token logits from block k (one that adds position embeddings to
    `inputs_embeds`, say)."""
    bb, k = inv.backbone, inv.trunk_layer
    if not k or bb.prefix_kv() is None:
        return None
    primer = bb.prefix_primer(k)
    if inv._priming_exact is None:
        P = len(bb.prefix_ids)
        probe = RaggedCache(bb.arch.n_layers, (1, bb.n_kv_heads, P + 1, bb.arch.head_dim), bb.prefix_kv(), dtype=primer[0].dtype)
        probe.add(1)
        primed = _prime(inv, probe, primer, None, 1)
        with inv.conditioned(None):
            full = bb.logits(bb.prefix_cache(1), input_ids=bb.to_internal(torch.tensor([bb.prefix_ids[-1:]])))[:, -1]
        inv._priming_exact = bool(torch.allclose(primed, full, rtol=1e-3, atol=1e-3 * float(full.abs().max())))
    return primer if inv._priming_exact else None


def _prime(inv: Inverter, cache: RaggedCache, primer: tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]],
           cond: Condition | None, n: int) -> torch.Tensor:
    """First-token logits [n, V] of the last n rows of `cache` (just added, holding the
    prefix but its last token), computed from block k = `inv.trunk_layer` on: the shared
    residual and keys/values of blocks below k come from `primer`, blocks k.. run on the
    side with the rows' conditions. Their keys/values at that position go into `cache`."""
    bb = inv.backbone
    h, lower = primer
    k = len(lower)
    side = bb.prefix_cache(n)
    P = len(bb.prefix_ids)
    with bb.layers_from(k), inv.conditioned(cond):
        logits = bb.logits(side, inputs_embeds=h.expand(n, 1, -1), position_ids=torch.full((n, 1), P - 1))
    upper = [(layer.keys[:, :, -1], layer.values[:, :, -1]) for layer in side.layers[k:]]
    cache.write_last(n, lower + upper)
    return logits[:, -1, :]


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
        w = _weights(ds, eps, kernel)
        out.append(QueryResult(query=q, index=idx, samples=[
            Sample(text=t, distance=float(d), weight=wi, accepted=bool(d < eps), is_copy=t in train_texts)
            for t, d, wi in zip(ss, ds, w)
        ]))
    return out


def _weights(dists: Sequence[float], eps: float, kernel: Kernel) -> list[float]:
    """k(d) per sample; a sample that could not be verified (d = inf) weighs nothing."""
    if not len(dists):
        return []
    return [float(w) for w in kernel_weight(torch.nan_to_num(torch.tensor(dists), posinf=1e9), eps, kernel).tolist()]


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
    batch_size: int | None = None,
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


def with_eps(run: SampleRun, eps: EpsChoice) -> SampleRun:
    """The same samples judged at another ε: ε decides acceptance and weight only, so a run
    drawn once serves every ε (the generator never sees ε when sampling)."""
    queries = []
    for q in run.queries:
        w = _weights([s.distance for s in q.samples], eps.eps, run.kernel)  # type: ignore[arg-type]
        queries.append(q.model_copy(update={"samples": [s.model_copy(update={"accepted": bool(s.distance < eps.eps), "weight": wi})
                                                        for s, wi in zip(q.samples, w)]}))
    return run.model_copy(update={"queries": queries, "eps": eps})
