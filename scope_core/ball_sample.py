"""ε-balls of many prompts, kept as at most K members each: a random-order scan that stops a
row as soon as it has K members, and an inverted file for the rows whose balls are small.

Why: at the default ε (the 5% quantile of pairwise distances) a ball holds 5% of the prior.
At 200k prompts whole lists are 2·10⁹ entries a site, and finding them is 4·10¹⁰ distances —
about half an hour on two cores. Training needs only a uniform draw from a prompt's ball, and a
uniformly chosen K-subset of the ball serves that as well while a ball is drawn from fewer than
K times: a 700-step run makes about 15,000 draws (0.7 × 32 a step), under one per ball at 200k.

How, with members that are always true members:
1. Scan the rows in one random order, in tiles (1024 rows, then doubling). A row stops after
   the first tile that brings it to K members. Its members in the scanned prefix are a
   uniformly random subset of its ball (the order is random and independent of the data), so
   its first K are a uniform K-subset; its ball size is estimated as count × N / prefix.
   Large balls stop after a few thousand rows, so their cost does not grow with N.
2. Rows still short of K after `exact_prefix` rows have small balls (fewer than about
   K·N/exact_prefix members). Small balls are local, which is what an inverted file finds
   well: the rest of the rows are searched through `ivf.range_pairs` (recall 0.9998–1.000 on
   the synthetic prior of BENCHMARKS §13, 50k–200k prompts). Their stored members are a uniform
   K-subset of what was found and their size is the count found, a lower bound.
Rows that reached the end of the scan in step 1 have their exact ball, whole.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .distances import Metric, prepare, prepared_distance
from .ivf import build_ivf, range_pairs

SIZE_EXACT, SIZE_ESTIMATED, SIZE_FOUND = 0, 1, 2  # how a row's ball size is known (`BallLists.size_kind`)


def _tiles(n: int, first: int, largest: int) -> list[tuple[int, int]]:
    """[a, b) ranges over n rows: `first`, `first`, then doubling up to `largest` rows a tile."""
    out, a, size = [], 0, first
    while a < n:
        out.append((a, min(n, a + size)))
        a, size = a + size, min(largest, size * 2 if a > 0 else size)
    return out


class _Scan:
    """Step 1's state: per row, members found so far (first K kept) and their count."""

    def __init__(self, n: int, k: int):
        self.k = k
        self.count = np.zeros(n, dtype=np.int64)
        self.kept = np.full((n, k), -1, dtype=np.int64)
        self.scanned = np.full(n, n, dtype=np.int64)  # prefix length after which a row stopped

    def add(self, rows: np.ndarray, hit_row: np.ndarray, hit_member: np.ndarray) -> None:
        """Record members `hit_member` of `rows[hit_row]` (row-major: each row's hits in scan order)."""
        per = np.bincount(hit_row, minlength=len(rows))
        rank = np.arange(len(hit_row)) - (np.cumsum(per) - per)[hit_row] + self.count[rows][hit_row]
        keep = rank < self.k
        self.kept[rows[hit_row[keep]], rank[keep]] = hit_member[keep]
        self.count[rows] += per


def sampled_balls(
    z: torch.Tensor,
    eps: float,
    metric: Metric,
    mean: torch.Tensor | None = None,
    max_members: int = 64,
    seed: int = 0,
    first_tile: int = 1024,
    largest_tile: int = 16384,
    exact_prefix: int = 16384,
    nprobe: int = 16,
    budget: int = 1 << 24,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row of z: up to `max_members` members of its ε-ball (itself included) as a CSR
    (start, members), its ball size, and how that size is known (SIZE_*). Seeded; distance
    blocks hold at most `budget` entries (64 MB at the default)."""
    n, k = len(z), max_members
    x = prepare(z, metric, mean)  # normalised once, compared in blocks
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n)
    scan = _Scan(n, k)
    active = np.arange(n)
    scanned_to = 0
    for a, b in _tiles(n, first_tile, largest_tile):
        if len(active) == 0 or (a >= exact_prefix and b < n):
            break
        cols = order[a:b]
        xc = x[torch.from_numpy(cols)]
        step = max(1, budget // (b - a))
        for s in range(0, len(active), step):
            rows = active[s: s + step]
            d = prepared_distance(x[torch.from_numpy(rows)], xc, metric)
            own = pos[rows]
            mine = np.flatnonzero((own >= a) & (own < b))
            d[torch.from_numpy(mine), torch.from_numpy(own[mine] - a)] = 0.0  # itself, whatever rounding says
            hit_row, hit_col = (d <= eps).nonzero(as_tuple=True)
            scan.add(rows, hit_row.numpy(), cols[hit_col.numpy()])
        scanned_to = b
        done = scan.count[active] >= k
        scan.scanned[active[done]] = b
        active = active[~done]
    kind = np.where(scan.scanned < n, SIZE_ESTIMATED, SIZE_EXACT).astype(np.int8)
    size = np.where(kind == SIZE_EXACT, scan.count, np.round(scan.count * n / np.maximum(scan.scanned, 1))).astype(np.int64)
    stored = [scan.kept[i, : min(k, scan.count[i])] for i in range(n)]
    if len(active) and scanned_to < n:  # step 2: small balls, through an inverted file over the rest
        found = _search_rest(x, eps, metric, active, order[scanned_to:], pos, scanned_to, nprobe, seed, budget)
        for row, extra in zip(active, found):
            allm = np.concatenate([stored[row], extra])
            size[row], kind[row] = len(allm), SIZE_FOUND
            stored[row] = allm if len(allm) <= k else rng.choice(allm, k, replace=False)
    for i in range(n):
        stored[i] = np.sort(stored[i])
    start = np.concatenate([[0], np.cumsum([len(m) for m in stored])]).astype(np.int64)
    members = np.concatenate(stored).astype(np.int32) if n else np.zeros(0, dtype=np.int32)
    return start, members, size, kind


def _search_rest(x: torch.Tensor, eps: float, metric: Metric, queries: np.ndarray, rest: np.ndarray,
                 pos: np.ndarray, prefix: int, nprobe: int, seed: int, budget: int) -> list[np.ndarray]:
    """Step 2: for each query row, its ball members among the `rest` rows (itself included when
    it is one of them), found through an inverted file with about 2·√len(rest) lists (x: the
    `prepare`d rows)."""
    ivf = build_ivf(x, rest, n_lists=int(2 * math.sqrt(len(rest))), seed=seed)
    hit_q, members = range_pairs(x[torch.from_numpy(queries)], x, ivf, eps, metric, nprobe, budget)
    keep = members != queries[hit_q]  # itself is added below, whatever the search found
    hit_q, members = hit_q[keep], members[keep]
    by_q = np.argsort(hit_q, kind="stable")
    split = np.cumsum(np.bincount(hit_q, minlength=len(queries)))[:-1]
    found = np.split(members[by_q], split)
    return [np.append(f, q) if pos[q] >= prefix else f for f, q in zip(found, queries)]
