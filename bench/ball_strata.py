"""Refusal read beside the prior's density: the lookup and the ε-ball strata of saved samples.

A query's refusal follows how many training prompts lie within ε of it (`scope_core.prior_density`).
This reads sample files a bench already saved (`bench_samples_*.json`, `sample_*.json`), gives each
query its nearest training prompts from the run's cache, and prints at each ε: the sampler's refusal
and accepted-novel, the lookup's refusal (each query's nearest training prompts, as many as it has
samples, judged as samples), and the share of queries and the refusal in each stratum (ball empty,
partly filled, holding at least n). No sampling, no training: seconds a file.

    python -m bench.ball_strata --run real_r2_cos_avg099_mlp \
        --samples runs/real_r2_cos_avg099_mlp/bench_samples_L18_t075.json --eps 0.05,0.10,0.15 --out bench/results/ball_strata_mlp.json

Several `--run R --samples F` pairs may be given (one `--run` per `--samples`, in order); the
rows go into one JSON file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.real_data_bench import pick_queries, subset
from scope_core.api import STRATA, EpsChoice, SampleRun, Scope, summarise, with_eps


def strata_rows(run_dir: str, samples: str, eps_grid: list[float], random_queries: int | None = None, seed: int = 0) -> list[dict]:
    """One row per ε for one saved sample file of one run; with `random_queries`, only the
    random held-out queries `real_data_bench` drew with `seed` (the ones its sampler rows read)."""
    scope = Scope(Path(run_dir))
    run = SampleRun.model_validate_json(Path(samples).read_text())
    if random_queries:
        rand, _ = pick_queries(scope, random_queries, 0, seed)
        run = subset(run, rand)
    site = scope.site(run.site)
    run = scope.with_prior_nearest(run, site)
    rows = []
    for e in eps_grid:
        s = summarise(with_eps(run, EpsChoice(site=site.name, metric=run.eps.metric, eps=e, quantile=None, source="absolute")))
        rows.append({"run": Path(run_dir).name, "samples": Path(samples).name, "site": site.name, "eps": e, "random_queries": random_queries,
                     "query_seed": seed if random_queries else None,
                     "queries": len(run.queries), "n": max(len(q.samples) for q in run.queries), **s})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="append", required=True, help="run directory (runs/NAME) or NAME, once per --samples")
    ap.add_argument("--samples", action="append", required=True, help="a saved SampleRun JSON of that run")
    ap.add_argument("--eps", default="0.05,0.10,0.15", help="ε values (the file's metric)")
    ap.add_argument("--random", type=int, default=None, help="only the N random held-out queries real_data_bench drew (its --queries)")
    ap.add_argument("--seed", action="append", type=int, default=None,
                    help="with --random: the draw (real_data_bench's --seed), once per --samples (default 0 for all)")
    ap.add_argument("--out", default=None, help="JSON file for the rows (default: bench/results/ball_strata.json)")
    args = ap.parse_args()
    if len(args.run) != len(args.samples):
        raise SystemExit(f"give one --run per --samples ({len(args.run)} runs, {len(args.samples)} sample files)")
    grid = [float(x) for x in args.eps.split(",")]
    seeds = args.seed or [0] * len(args.samples)
    if len(seeds) != len(args.samples):
        raise SystemExit(f"give one --seed per --samples, or none ({len(seeds)} seeds, {len(args.samples)} sample files)")
    rows = []
    for r, f, sd in zip(args.run, args.samples, seeds):
        rows.extend(strata_rows(r if Path(r).exists() else str(Path("runs") / r), f, grid, args.random, sd))
    head = ("ε", "refusal", "acc-novel", "lookup refusal", *(f"{s}: queries / refusal" for s in STRATA))
    print(" | ".join(("file",) + head))
    for row in rows:
        cells = [f"{row['eps']:.2f}", f"{row['refusal_rate']:.3f}", f"{row['accepted_novel_per_100']:.1f}", f"{row['lookup_refusal_rate']:.3f}"]
        cells += [f"{round(row[f'queries_ball_{s}'] * row['queries'])} / {row.get(f'refusal_ball_{s}', float('nan')):.3f}" for s in STRATA]  # no rate: none there
        print(" | ".join([f"{row['run']}:{row['samples']}"] + cells))
    out = Path(args.out or "bench/results/ball_strata.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
