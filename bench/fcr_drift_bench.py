"""Why the generator's FCR drifts from the empirical-neighbour FCR beyond small ε, measured.

The generator is trained on conditions z(x) + noise that sit on a shell ~δ away from z(x);
a clean query activation ẑ is off that training distribution, and the samples it gets sit
much closer to ẑ than the typical member of the ε-ball. This script scores the same queries
(i) as usual, (ii) with the query condition perturbed at sampling time (isotropic, norm s·‖ẑ‖;
s = tan θ gives cosine distance 1 − cos θ), and reports, beside each, the empirical FCR over the
prior prompts in the ε-ball and over only the ball members as close to ẑ as the generator's
accepted samples (the distance-matched reference), so the drift can be split into "the
generator samples a smaller ball" and "the generator fills the ball with other content".

    python -m bench.fcr_drift_bench --run default --site L18 --eps 0.1 --queries 24 --n 8
    python -m bench.fcr_drift_bench --run default --site L18 --eps 0.1 --queries 96 --n 8 --noise 0 --seeds 0,1,2,3,4

With several `--seeds`, each row is repeated per sampling seed and the mean and spread of
the gap (generator − empirical) are printed: one seed's gap moves by a few hundredths with
nothing but the random draws changed, as much as the 0.05 the target allows.

Writes bench/results/fcr_drift_<run>_<site>.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

from features.registry import get_feature
from scope_core.api import Scope, distance, summarise


def distance_matched_empirical(scope: Scope, site, idx: list[int], labels: list[str | None], run, eps: float) -> float | None:
    """Empirical FCR where each query's ball is cut at the largest distance of its accepted samples."""
    acts = scope.acts(site)
    mean = scope.mean(site)
    rates = []
    for q, qi in zip(run.queries, idx):
        acc = [s.distance for s in q.samples if s.accepted]
        if not acc:
            continue
        radius = min(max(acc), eps)
        d = distance(acts, acts[qi][None].expand_as(acts), run.metric, mean).numpy()  # type: ignore[arg-type]
        ball = [j for j in np.nonzero(d < radius)[0].tolist() if j != qi and labels[j] is not None]
        if ball:
            rates.append(float(np.mean([labels[j] == labels[qi] for j in ball])))
    return float(np.mean(rates)) if rates else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="default")
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--site", default="L18")
    ap.add_argument("--feature", default="harmfulness")
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--queries", type=int, default=24)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--noise", default="0,0.2,0.29", help="sampling-noise scales s (0 = the clean query)")
    ap.add_argument("--seeds", default="0", help="sampling seeds, comma-separated; each row is repeated per seed")
    args = ap.parse_args()
    torch.manual_seed(0)
    scope = Scope(Path(args.runs_dir) / args.run)
    site = scope.site(args.site)
    ec = scope.eps(site, eps=args.eps)
    feat = get_feature(args.feature, scope.run_dir, scope.data)
    labels = feat([e.text for e in scope.data.examples])
    rows = []
    for only in (None, "harmful"):
        where = (lambda lab: lab.get("harmfulness") == "harmful") if only else None
        idx = scope.heldout_indices(where, args.queries)
        for s, seed in [(float(x), int(y)) for x in args.noise.split(",") for y in args.seeds.split(",")]:
            run = scope.sample(site, indices=idx, n=args.n, eps=ec, seed=seed, sampling_noise=s)
            rep = scope.score(feat, feat.name, run, site)
            row = {"queries": only or "all", "sampling_noise": s, "seed": seed, "temperature": run.temperature,
                   "noise_cosine_distance": float(1 - np.cos(np.arctan(s))),
                   "fcr": rep.generator.fcr, "ci": [rep.generator.ci_low, rep.generator.ci_high], "p0": rep.generator.p0,
                   "empirical": rep.empirical.fcr if rep.empirical else None,
                   "empirical_distance_matched": distance_matched_empirical(scope, site, idx, labels, run, ec.eps),
                   "sampler": summarise(run)}
            rows.append(row)
            print(json.dumps(row))
    gaps: dict[tuple[str, float], list[float]] = {}
    for r in rows:
        if r["empirical"] is not None:
            gaps.setdefault((r["queries"], r["sampling_noise"]), []).append(r["fcr"] - r["empirical"])
    summary = [{"queries": q, "sampling_noise": s, "seeds": len(g), "mean_gap": float(np.mean(g)), "sd_gap": float(np.std(g, ddof=1)) if len(g) > 1 else 0.0,
                "min_gap": min(g), "max_gap": max(g)} for (q, s), g in gaps.items()]
    for line in summary:
        print(json.dumps(line))
    out = Path(f"bench/results/fcr_drift_{args.run}_{site.name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"eps": ec.model_dump(), "feature": args.feature, "rows": rows, "gaps": summary}, indent=1))


if __name__ == "__main__":
    main()
