"""Calibration of the content-free null check (issue 20): κ of a 4-bucket text hash under many
salts on one set of verified samples.

A 95% CI excludes 0 in 5% of draws by design, so one hash whose CI misses 0 in one cell says
little. Over salts on the same samples, κ must centre on 0 and about 5% of CIs may exclude it;
a mean far from 0 or a much larger share would mean the FCR machinery is biased.

    python -m bench.null_calibration --run generated_r2_s1 --salts 64
    python -m bench.null_calibration --run real_r2_3s --site L24 --samples runs/real_r2_3s/bench_samples_L24.json --salts 256

`--samples` re-scores a sampled run that `real_data_bench` saved (its ε, its first `--queries`
random queries) instead of drawing new samples.

Writes bench/results/null_calibration_<run>.json.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from bench.real_data_bench import pick_queries, salt_calibration
from scope_core.api import SampleRun, Scope, parse_site


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--site", default="L18")
    ap.add_argument("--quantile", type=float, default=0.10, help="ε as this pairwise quantile at the site")
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--salts", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", default=None, help="a saved SampleRun (bench_samples_*.json) to re-score instead of sampling")
    ap.add_argument("--out-dir", default="bench/results")
    args = ap.parse_args()
    scope = Scope(Path(args.runs_dir) / args.run)
    site = parse_site(args.site)
    queries, _ = pick_queries(scope, args.queries, 0, args.seed)
    if args.samples:
        saved = SampleRun.model_validate_json(Path(args.samples).read_text())
        keep = set(queries)
        run = saved.model_copy(update={"queries": [q for q in saved.queries if q.index in keep]})
        eps = saved.eps
        args.quantile = eps.quantile
    else:
        eps = scope.eps(site, quantile=args.quantile)
        run = scope.sample(site, indices=queries, n=args.n, eps=eps, seed=args.seed, progress=True)
    cal = salt_calibration(scope, run, site, n_salts=args.salts)
    accepted = Counter(s.text for q in run.queries for s in q.samples if s.accepted)
    out = {"run": args.run, "site": args.site, "eps": eps.eps, "quantile": args.quantile, "queries": len(queries), "n": args.n,
           "temperature": run.temperature, "seed": args.seed, "samples": args.samples, "counted_queries": sum(any(s.accepted for s in q.samples) for q in run.queries),
           "accepted": sum(accepted.values()), "distinct_accepted": len(accepted), **cal}
    print(f"{args.run} {args.site} ε {eps.eps:.4f} (q {args.quantile}): hash-4 κ over {cal['n_salts']} salts mean {cal['kappa_mean']:+.4f}"
          f" sd {cal['kappa_sd']:.4f}; CI half-width {cal['mean_ci_halfwidth']:.4f}; CIs excluding 0: {cal['ci_excludes_0_share']:.3f}")
    path = Path(args.out_dir) / f"null_calibration_{args.run}{'_' + args.site if args.samples else ''}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
