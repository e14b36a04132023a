"""Sample inputs x ~ G(x | ẑ) and verify them by re-running the target (the paper's sampler).

`generate` draws n samples per query (`decoding.py`); `verify` runs every sample through the
target to the same site and measures its distance to ẑ; `assemble` accepts a sample within ε
(hard kernel) or weights it by the kernel (gaussian). `sample_and_verify` is the three in order.

The CPU speed-ups — continuous batching with priming (`continuous.py`), prepacked linears,
fused verification from the decoder's own cache — sit in their own modules and give the same
results; `speedups.py` lists them and the one switch that turns them all off.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel

from .distances import Kernel, Metric, distance, kernel_weight
from .eps import EpsChoice
from .prior_density import density_summary
from .continuous import decode_continuous
from .decoding import check_guidance, decode_in_batches
from .devices import memory_budget
from .extract import extract
from .fast_linear import prepacked_linears
from .fused_verify import FusedVerifier, fused_ineligible
from .generator import Inverter
from .sites import Site
from .speedups import speedups_on
from .targets import Target


VerifyMode = Literal["auto", "full"]

MAX_DECODE_ROWS = 512
MAX_DECODE_ROWS_GPU = 4096  # a GPU stays compute-bound far beyond the CPU's 512; memory is its bound
DECODE_KV_BUDGET = 1 << 30  # bytes of decoding KV cache the default batch may take on the CPU (on a GPU: `devices.memory_budget`)


def decode_rows(inv: Inverter, max_new_tokens: int, n_rows: int, budget: int | None = None) -> int:
    """Rows decoded at once by default: as many as the job has, up to MAX_DECODE_ROWS (on a GPU
    MAX_DECODE_ROWS_GPU), and no more than a KV cache of `budget` bytes holds (None: 1 GiB on the
    CPU, half the GPU's free memory on a GPU).

    Why 512: a decoding step is compute-bound from ~256 rows on (1.2 ms per row-step for
    SmolLM2 at L18), but each step also pays a fixed cost (Python, weight reads) and a job's
    last steps run on a thinning batch; doubling the batch from 256 took 5–15% off a
    640-sample job (NOTES §28). The memory cap keeps a large model's cache bounded (8B fp32: ~40 rows)."""
    bb = inv.backbone
    ref = next(bb.model.parameters())
    if budget is None:
        budget = memory_budget(ref.device, DECODE_KV_BUDGET)
    per_row = 2 * bb.arch.n_layers * bb.n_kv_heads * bb.arch.head_dim * (len(bb.prefix_ids) + max_new_tokens) * ref.element_size()
    cap = MAX_DECODE_ROWS if ref.device.type == "cpu" else MAX_DECODE_ROWS_GPU
    return max(1, min(cap, n_rows, budget // per_row))


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
    # distances from ẑ of the training prompts nearest to it (as many as it has samples, its own
    # prompt left out), ascending: how densely the prior fills its ε-ball (`prior_density`)
    prior_nearest: list[float] | None = None

    @property
    def n_accepted(self) -> int:
        return sum(s.accepted for s in self.samples)


class SampleRun(BaseModel):
    site: str
    eps: EpsChoice
    metric: str
    kernel: str
    temperature: float
    guidance: float = 1.0
    # what the samples were conditioned on: "query" (ẑ itself) or "ball" (a share `anchor_share`
    # of them on an activation drawn from ẑ's ε-ball in the prior, ẑ included, the rest on ẑ;
    # `Scope.ball_anchors`), and that ball's ε
    anchors: Literal["query", "ball"] = "query"
    anchor_eps: float | None = None
    anchor_share: float | None = None  # of a "ball" run, the share of samples drawn from the ball (the rest: ẑ)
    queries: list[QueryResult]
    timing: dict[str, float]


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
    guidance: float = 1.0,
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
    `batch_size` None: `decode_rows`. With the speed-ups off (`AUTOSCOPE_SPEEDUPS=0`) rows
    decode the plain way whatever `continuous` and `preallocate` say (`speedups.py`).
    `guidance` w ≠ 1: classifier-free guidance against the unconditioned backbone
    (`decoding.guided`; fixed batches, about twice the decoding cost)."""
    if guidance != 1 and z is not None:
        check_guidance(inv, guidance)
    fast = speedups_on()
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
        if fast and continuous and preallocate and inv.kv_condition is None and (guidance == 1 or z is None):
            tokens = decode_continuous(inv, sidx, z, rows, temperature, max_new_tokens, batch_size, g, sampling_noise, fused, bar)
        else:
            tokens = decode_in_batches(inv, sidx, z, rows, temperature, max_new_tokens, batch_size, g, sampling_noise, fused,
                                       preallocate and fast, bar, guidance=guidance)
    if bar:
        bar.close()
    out: list[list[str]] = [[] for _ in range(n_queries)]
    for r, toks in enumerate(tokens):
        out[rows[r]].append(inv.backbone.decode(toks))
    return out


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
    guidance: float = 1.0,
    anchors: torch.Tensor | None = None,
    anchor_eps: float | None = None,
    anchor_share: float | None = None,
) -> SampleRun:
    """The full sampler: generate, verify, weight. Timing per phase goes into the result.

    `verify_mode` "auto" reads the site from the decoder's own cache where that is exact
    (`fused_verify`), "full" re-runs the target on every sample, as every mode does with the
    speed-ups off (`AUTOSCOPE_SPEEDUPS=0`). `anchors` [Q, n, d]: sample k of query q is
    conditioned on anchors[q, k] instead of ẑ_q (and still verified against ẑ_q) — the
    ball-anchored sampler of `Scope.sample(anchors="ball")`, drawn from ball `anchor_eps`."""
    t0 = time.perf_counter()
    assert inv is not None
    fast = verify_mode == "auto" and speedups_on()
    fused = FusedVerifier(target, site) if fast and fused_ineligible(inv, target, site, conditional) is None else None
    if anchors is not None and conditional:
        if anchors.shape[:2] != (len(queries), n):
            raise ValueError(f"anchors must be [queries={len(queries)}, n={n}, d], got {tuple(anchors.shape)}")
        # one row per sample, in the order q·n + k that the fused verifier and the regrouping below read
        rows = generate(inv, site.name, anchors.reshape(len(queries) * n, -1), len(queries) * n, 1, temperature, max_new_tokens,
                        batch_size, seed, progress, sampling_noise, fused=fused, continuous=continuous, guidance=guidance)
        gen = [[rows[q * n + k][0] for k in range(n)] for q in range(len(queries))]
    else:
        gen = generate(inv, site.name if conditional else None, zq if conditional else None, len(queries), n,
                       temperature, max_new_tokens, batch_size, seed, progress, sampling_noise, fused=fused, continuous=continuous,
                       guidance=guidance)
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
    ball = anchors is not None and conditional
    return SampleRun(site=site.name, eps=eps, metric=eps.metric, kernel=kernel, temperature=temperature, guidance=guidance, queries=res,
                     anchors="ball" if ball else "query", anchor_eps=anchor_eps if ball else None,
                     anchor_share=(1.0 if anchor_share is None else anchor_share) if ball else None,
                     timing={"generate_s": t1 - t0, "verify_s": t2 - t1, "samples": float(len(queries) * n), "verify_tokens": float(n_tok),
                             "fused_verified": float(len(known))})


def summarise(run: SampleRun) -> dict[str, float]:
    """The sampler's figures: refusal rate, exact-copy rate, accepted-novel per 100, distinct per query;
    where the queries carry their nearest training prompts, the lookup's refusal and the refusal
    per ε-ball stratum beside them (`prior_density.density_summary`)."""
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
    } | density_summary(run.queries, run.eps.eps)


def with_eps(run: SampleRun, eps: EpsChoice) -> SampleRun:
    """The same samples judged at another ε: ε decides acceptance and weight only, so a run
    drawn once serves every ε (the generator never sees ε when sampling). A ball-anchored run
    keeps the ball its anchors came from (`anchor_eps`), whatever ε judges it."""
    queries = []
    for q in run.queries:
        w = _weights([s.distance for s in q.samples], eps.eps, run.kernel)  # type: ignore[arg-type]
        queries.append(q.model_copy(update={"samples": [s.model_copy(update={"accepted": bool(s.distance < eps.eps), "weight": wi})
                                                        for s, wi in zip(q.samples, w)]}))
    return run.model_copy(update={"queries": queries, "eps": eps})
