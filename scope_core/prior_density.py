"""How densely the prior fills each query's ε-ball, and what copying its nearest prompts would score.

Why: a sampler's refusal rate mixes two things — how well the generator inverts, and how
isolated the query is in the prior. On the real refusal sets (L18, ε 0.1 cosine, 60 random
held-out queries × 16) queries whose ε-ball holds no training prompt were refused 88–100% of the
time by every recipe measured, queries with 16 or more in it 5–13%; the second draw of queries
holds 8 empty balls where the first holds 1, which is most of why it is refused 0.1 more; and
recipe 3 is refused as often as copying each query's 16 nearest training prompts would be
(BENCHMARKS §34). A refusal rate read without that says "the inverter is weak" where the prior
is sparse at that ε.

So every sampled query keeps the distances of the training prompts nearest to it (as many as
it has samples, its own prompt left out), and the sampler's figures are read beside two things
they give for free, at any ε: the *lookup* (those nearest prompts judged as if they were
samples: what copying the prior scores — the fewest refusals that many distinct training prompts
can give, with no novel sample) and the refusal within three strata of queries (ball empty,
partly filled, full)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .distances import Metric, prepare, prepared_distance

STRATA = ("empty", "sparse", "full")


def nearest_prior(zq: torch.Tensor, pool: torch.Tensor, metric: Metric, k: int, mean: torch.Tensor | None = None,
                  exclude: Sequence[int | None] | None = None, budget: int = 1 << 25, pool_prepared: bool = False) -> list[list[float]]:
    """For each query ẑ, the distances to its k nearest pool rows, ascending (row `exclude[q]`
    of the pool left out for query q: a prior prompt's own activation); fewer where the pool
    holds fewer. ẑ is the centre, as in verification (norm_euclidean divides by ‖ẑ‖).

    Exact, block by block: Q × N distances with at most `budget` of them held at once.
    `pool_prepared`: the pool is already `prepare`d for `metric` (a caller that asks often keeps it so)."""
    if len(zq) == 0 or len(pool) == 0 or k <= 0:
        return [[] for _ in range(len(zq))]
    xp = pool if pool_prepared else prepare(pool, metric, mean)
    take = min(k, len(pool))
    rows = max(1, budget // max(len(pool), 1))
    out: list[list[float]] = []
    for i in range(0, len(zq), rows):
        d = prepared_distance(prepare(zq[i: i + rows], metric, mean), xp, metric)
        if exclude is not None:
            for q in range(i, min(i + rows, len(zq))):
                if exclude[q] is not None:
                    d[q - i, exclude[q]] = math.inf
        for row in d.topk(take, dim=1, largest=False).values.tolist():
            out.append([x for x in row if x != math.inf])  # a left-out row of a pool no larger than k
    return out


def stratum(nearest: Sequence[float], eps: float, n: int) -> str:
    """'empty' (no training prompt within ε), 'full' (at least n of them) or 'sparse' (between)."""
    inside = sum(d < eps for d in nearest[:n])
    return "empty" if inside == 0 else "full" if inside >= n else "sparse"


def density_summary(queries: Sequence, eps: float) -> dict[str, float]:
    """The lookup's refusal and the sampler's refusal per stratum, from queries that carry
    `prior_nearest` (QueryResult); {} when any query lacks it (a run saved before it).

    Keys: `lookup_refusal_rate` — the share of each query's nearest training prompts (as many as
    it has samples) not within ε, over all queries; for each stratum s that holds a query,
    `queries_ball_<s>` — the share of queries in it (0 when none), `refusal_ball_<s>` — the
    sampler's refusal rate there and `lookup_refusal_ball_<s>` the lookup's (both absent when it
    holds none). A query without samples counts in no stratum."""
    if not queries or any(getattr(q, "prior_nearest", None) is None for q in queries):
        return {}
    lookup: list[bool] = []
    by = {s: [0, 0, 0, 0, 0] for s in STRATA}  # per stratum: queries, samples, refused, lookup candidates, lookup refused
    for q in queries:
        n = len(q.samples)
        if n == 0:
            continue
        near = q.prior_nearest[:n]
        out_of_ball = [not (d < eps) for d in near]  # as `Sample.accepted` reads d < ε
        lookup.extend(out_of_ball)
        cell = by[stratum(near, eps, n)]
        cell[0] += 1
        cell[1] += n
        cell[2] += sum(not s.accepted for s in q.samples)
        cell[3] += len(near)
        cell[4] += sum(out_of_ball)
    counted = sum(c[0] for c in by.values())
    if not counted:
        return {}
    out = {"lookup_refusal_rate": float(np.mean(lookup)) if lookup else 1.0}
    for s, (nq, ns, nr, nl, nlr) in by.items():
        out[f"queries_ball_{s}"] = nq / counted
        if nq:
            out[f"refusal_ball_{s}"] = nr / ns
            out[f"lookup_refusal_ball_{s}"] = nlr / nl if nl else 1.0
    return out


def describe_density(summary: dict[str, float], n_queries: int, n: int) -> str | None:
    """One plain sentence for `sample`'s output: how many queries sit where the prior is empty,
    sparse or full within ε, how often each kind was refused, and the lookup beside the sampler."""
    if "lookup_refusal_rate" not in summary:
        return None
    one = n_queries == 1
    parts = []
    sparse = "1 training prompt" if n == 2 else f"1–{n - 1} training prompts"
    for s, words in (("empty", "no training prompt"), ("sparse", sparse), ("full", f"{n} or more training prompts")):
        k = round(summary[f"queries_ball_{s}"] * n_queries)
        if k:
            who = "" if one else f"{k} {'has' if k == 1 else 'have'} "
            parts.append(f"{who}{words} within ε (refused {summary[f'refusal_ball_{s}']:.2f})")
    these, whose = ("this query", "its") if one else (f"these {n_queries} queries", "each query's")
    nearest = "nearest training prompt" if n == 1 else f"{n} nearest training prompts"
    said = (f"The prior near {these}: {'; '.join(parts)}. Copying {whose} {nearest} "
            f"would be refused {summary['lookup_refusal_rate']:.2f}, with no novel sample (this sampler: {summary['refusal_rate']:.2f}).")
    if summary.get("queries_ball_empty"):
        said += (" A query with no training prompt within ε is seldom accepted (on the real refusal sets at ε 0.1, 0–13% "
                 "of samples; BENCHMARKS §34): the generator must write closer to it than any prompt it learned from. A wider ε, or more "
                 "prompts in the prior itself near such queries, is what changes that.")
    return said
