"""How often κ's 95% CI misses 0 for a content-free feature (issue 20): a simulated null with the
accepted-sample counts of a few counted queries, under the plain percentile interval and the
expanded one that `scope_core.fcr` reads (`expanded_tails`).

    python -m bench.kappa_ci_coverage --draws 1000

The default counts are the L24 cell of BENCHMARKS §14 (22 queries of 60 random ones with an
accepted sample, 1–12 each). Writes bench/results/kappa_ci_coverage.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from scope_core.api import kappa_bootstrap

L24_COUNTS = [7, 4, 5, 12, 4, 2, 1, 6, 6, 4, 10, 12, 1, 9, 11, 4, 12, 10, 9, 2, 3, 5]


def miss_share(counts: list[int], draws: int, prior_size: int, expanded: bool) -> float:
    """Share of `draws` null draws (labels uniform over 4 values, independent of everything)
    whose κ CI excludes 0: each query's rate is its samples' share with the query's label, and
    κ's CI comes from the bootstrap `fcr` runs (`kappa_bootstrap`)."""
    rng = np.random.default_rng(0)
    miss = 0
    for t in range(draws):
        q = [int(x) for x in rng.integers(0, 4, len(counts))]
        rates = np.array([float(np.mean(rng.integers(0, 4, c) == lab)) for lab, c in zip(q, counts)])
        prior = [int(x) for x in rng.integers(0, 4, prior_size)]
        lo, hi = kappa_bootstrap(rates, q, prior, n_boot=1000, seed=t, expanded=expanded)
        miss += not (lo <= 0 <= hi)
    return miss / draws


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--prior-size", type=int, default=400)
    ap.add_argument("--out", default="bench/results/kappa_ci_coverage.json")
    args = ap.parse_args()
    out = {"counts": L24_COUNTS, "draws": args.draws, "prior_size": args.prior_size,
           "miss_plain": miss_share(L24_COUNTS, args.draws, args.prior_size, expanded=False),
           "miss_expanded": miss_share(L24_COUNTS, args.draws, args.prior_size, expanded=True)}
    print(f"{len(L24_COUNTS)} counted queries, {args.draws} null draws: κ CI misses 0 in {out['miss_plain']:.3f} (plain percentile), "
          f"{out['miss_expanded']:.3f} (expanded)")
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
