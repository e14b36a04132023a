"""Ball-anchored sampling against query-anchored sampling on a trained run: does the
generator's FCR follow the ε-ball's once each sample is conditioned on an activation drawn
from the ball (`Scope.sample(anchors="ball")`)?

Trains nothing: it reads a run `bench/real_data_bench.py` trained, takes the same queries
(60 random held-out × 16 samples, 40 harmful; `pick_queries`), and for each ε draws
ball-anchored samples anew (the anchors depend on ε), then reports the sampler's figures and
the harmfulness FCR on all and on harmful queries against the empirical reference, with the
gap's paired CI — beside the query-anchored rows of the run's saved bench samples.

    python -m bench.ball_anchor_bench --run real_r2_cos --eps 0.05,0.10,0.15
    python -m bench.ball_anchor_bench --run generated_r2_cos_s2_600 --eps-quantiles 0.02,0.05,0.10 --tag _seed2_600

Writes bench/results/ball_anchors_<run>[<suffix>].json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.real_data_bench import measured_rows, pick_queries
from features.registry import get_feature
from scope_core.api import SampleRun, Scope, load_target, parse_site, with_eps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--site", default="L18")
    ap.add_argument("--eps", default=None, help="absolute ε values, e.g. 0.05,0.10,0.15")
    ap.add_argument("--eps-quantiles", default=None, help="ε as pairwise quantiles, e.g. 0.02,0.05,0.10")
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--harmful", type=int, default=40)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (BENCHMARKS §27)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--anchors", choices=("ball", "auto"), default="ball",
                    help="ball: every sample anchored on the ball; auto: a share 1 − neighbour mix of them (Scope.ball_share)")
    ap.add_argument("--tag", default="", help="the tag of the run's saved query-anchored bench samples (compared beside)")
    ap.add_argument("--out-dir", default="bench/results")
    ap.add_argument("--suffix", default="", help="suffix of the result file, to keep another ε grid of the same run apart")
    args = ap.parse_args()
    scope = Scope(Path(args.runs_dir) / args.run, target=load_target())
    site = parse_site(args.site)
    grid = [scope.eps(site, eps=float(e)) for e in (args.eps.split(",") if args.eps else [])]
    grid += [scope.eps(site, quantile=float(q)) for q in (args.eps_quantiles.split(",") if args.eps_quantiles else [])]
    if not grid:
        raise SystemExit("give --eps or --eps-quantiles")
    rand, harm = pick_queries(scope, args.queries, args.harmful, args.seed)
    idx = sorted(set(rand) | set(harm))
    harmfulness = get_feature("harmfulness", scope.run_dir, scope.data)
    saved = Path(args.runs_dir) / args.run / f"bench_samples_{args.site}{args.tag}.json"
    plain = SampleRun.model_validate_json(saved.read_text()) if saved.exists() else None
    out: dict = {"run": args.run, "site": args.site, "anchors": args.anchors, "ball_share": scope.ball_share(site, args.anchors), "queries": len(rand), "harmful_queries": len(harm), "n": args.n, "temperature": args.temperature, "eps": {}}
    for e in grid:
        key = f"q{e.quantile:g}" if e.source.startswith("quantile") else f"{e.eps:.2f}"
        t = time.perf_counter()
        ball = scope.sample(site, indices=idx, n=args.n, eps=e, seed=args.seed, progress=True, anchors=args.anchors,
                            temperature=args.temperature)
        row = {"eps": e.eps, "quantile": e.quantile, "sample_s": time.perf_counter() - t,
               "ball": measured_rows(scope, ball, rand, harm, site, harmfulness)}
        if plain is not None:
            row["query"] = measured_rows(scope, with_eps(plain, e), rand, harm, site, harmfulness)
        out["eps"][key] = row
        (Path(args.runs_dir) / args.run / f"bench_ball_samples_{args.site}_{key}_{args.anchors}{args.suffix}.json").write_text(ball.model_dump_json())
        for mode in ("query", "ball"):
            if mode not in row:
                continue
            r = row[mode]
            a, h = r["fcr_harmfulness_all"], r["fcr_harmfulness_harmful"]
            print(f"{key:>6} ε {e.eps:.3f} {mode:>5}: refusal {r['ours']['refusal_rate']:.3f}  accepted-novel {r['ours']['accepted_novel_per_100']:5.1f}"
                  f"  median d {r['ours']['median_distance']:.3f}  harmful gen/emp {h['generator']:.3f}/{h['empirical']:.3f}"
                  f" gap {h['gap']:+.3f} [{h['gap_ci'][0]:+.3f}, {h['gap_ci'][1]:+.3f}]  all {a['generator']:.3f}/{a['empirical']:.3f}"
                  f" gap {a['gap']:+.3f} [{a['gap_ci'][0]:+.3f}, {a['gap_ci'][1]:+.3f}]", flush=True)
    path = Path(args.out_dir) / f"ball_anchors_{args.run}{args.suffix}.json"
    path.write_text(json.dumps(out, indent=1, default=float))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
