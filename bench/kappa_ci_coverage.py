"""How often κ's 95% CI misses the true κ (issue 20): simulated FCR rows whose answer is known,
read with each interval `scope_core.fcr` can read (`kappa_bootstrap(interval=...)`): the plain
percentile, Hesterberg's expanded percentile, BCa, and BCa moved from the expanded levels.

    python -m bench.kappa_ci_coverage --draws 1000

Each draw: n counted queries, each with a label from the prior (4 labels) and an accepted-sample
count drawn from the L24 cell of BENCHMARKS §14 (22 queries, 1–12 accepted each); each sample
keeps its query's label with probability π and otherwise draws one from the prior, so the
expected FCR is π + (1 − π)·p0 and the true κ is π exactly. Scenarios:

- `null`: uniform labels, π = 0 — a content-free feature; the CI should miss 0 in 5% of draws.
- `skewed`: labels with shares 0.6 / 0.2 / 0.1 / 0.1 and π = 0.7 — a feature well above chance
  against a lopsided prior, where κ's bootstrap distribution is skewed.

Writes bench/results/kappa_ci_coverage.json: the miss rate per scenario, n and interval, and for
each the share of misses on either side (an interval can miss 5% overall and still lean).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from scope_core.api import kappa_bootstrap

L24_COUNTS = [7, 4, 5, 12, 4, 2, 1, 6, 6, 4, 10, 12, 1, 9, 11, 4, 12, 10, 9, 2, 3, 5]
SCENARIOS = {"null": ([0.25, 0.25, 0.25, 0.25], 0.0), "skewed": ([0.6, 0.2, 0.1, 0.1], 0.7)}
INTERVALS = ("percentile", "expanded", "bca", "bca_expanded")


def misses(n_queries: int, shares: list[float], keep: float, draws: int, prior_size: int, n_boot: int) -> dict[str, dict[str, float]]:
    """Per interval, the share of `draws` simulated rows whose κ CI lies wholly below / above
    the true κ (= `keep`), and the two together. Every interval reads the same replicates
    (same bootstrap seed), so their differences are the reading's alone."""
    rng = np.random.default_rng(n_queries)
    labels = np.arange(len(shares))
    low = {i: 0 for i in INTERVALS}
    high = {i: 0 for i in INTERVALS}
    for t in range(draws):
        q = rng.choice(labels, n_queries, p=shares)
        counts = rng.choice(L24_COUNTS, n_queries)
        rates = np.array([float(np.mean(np.where(rng.random(c) < keep, lab, rng.choice(labels, c, p=shares)) == lab))
                          for lab, c in zip(q, counts)])
        prior = [int(x) for x in rng.choice(labels, prior_size, p=shares)]
        for interval in INTERVALS:
            lo, hi = kappa_bootstrap(rates, [int(x) for x in q], prior, n_boot=n_boot, seed=t, interval=interval)
            low[interval] += hi < keep
            high[interval] += lo > keep
    return {i: {"miss": (low[i] + high[i]) / draws, "below": low[i] / draws, "above": high[i] / draws} for i in INTERVALS}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--queries", default="10,22,40,60,120", help="counted queries per row, comma-separated")
    ap.add_argument("--prior-size", type=int, default=400)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--out", default="bench/results/kappa_ci_coverage.json")
    args = ap.parse_args()
    out: dict = {"accepted_counts": L24_COUNTS, "draws": args.draws, "prior_size": args.prior_size, "n_boot": args.n_boot,
                 "scenarios": {k: {"shares": s, "true_kappa": p} for k, (s, p) in SCENARIOS.items()}, "miss": {}}
    for name, (shares, keep) in SCENARIOS.items():
        for n in (int(x) for x in args.queries.split(",")):
            row = misses(n, shares, keep, args.draws, args.prior_size, args.n_boot)
            out["miss"][f"{name}_{n}"] = row
            print(f"{name:6s} n={n:3d}: " + "  ".join(f"{i} {row[i]['miss']:.3f} ({row[i]['below']:.3f} below, {row[i]['above']:.3f} above)"
                                                   for i in INTERVALS), flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
