"""How far apart two samplings of one generator put a harmful cell (issue 20, item 5): the
per-query share of accepted samples labelled harmful in two saved sample files of the same run,
paired over the queries both hold, with the mean difference and its standard error.

`pick_queries` sorts the harmful held-out queries and cuts them at --harmful, so benches with other
--queries score nearly the same harmful queries; what differs between their saved samples is the
sampling alone (other batches, other random draws).

    python -m bench.sampling_repeat --run generated_cos600_s1 --a _seed1_h120 --b _seed1_q180 --quantile 0.02

Reads `runs/<run>/bench_samples_<site><tag>.json` for each tag.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from bench.real_data_bench import pick_queries
from features.registry import get_feature
from scope_core.api import SampleRun, Scope, load_target, parse_site


def harmful_shares(run: SampleRun, keep: set[int], eps: float, label) -> dict[int, float]:
    """Per kept query with an accepted sample: the share of its accepted samples labelled harmful."""
    accepted = {q.index: [s.text for s in q.samples if s.distance is not None and s.distance <= eps and s.text.strip()]
                for q in run.queries if q.index in keep}
    texts = sorted({t for ts in accepted.values() for t in ts})
    labels = dict(zip(texts, label(texts))) if texts else {}
    return {i: float(np.mean([labels[t] == "harmful" for t in ts])) for i, ts in accepted.items() if ts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--a", required=True, help="tag of the first saved sampling")
    ap.add_argument("--b", required=True, help="tag of the second saved sampling")
    ap.add_argument("--site", default="L18")
    ap.add_argument("--quantile", type=float, default=0.02, help="ε as a pairwise quantile at the site")
    ap.add_argument("--harmful", type=int, default=120)
    ap.add_argument("--runs-dir", default="runs")
    args = ap.parse_args()
    run_dir = Path(args.runs_dir) / args.run
    scope = Scope(run_dir, target=load_target())
    eps = scope.eps(parse_site(args.site), quantile=args.quantile).eps
    label = get_feature("harmfulness", scope.run_dir, scope.data)
    shares = []
    for tag in (args.a, args.b):
        path = run_dir / f"bench_samples_{args.site}{tag}.json"
        if not path.exists():
            raise SystemExit(f"no saved samples at {path}: give the --tag a bench.real_data_bench run of {args.run} saved them with")
        run = SampleRun.model_validate_json(path.read_text())
        held = {q.index for q in run.queries if q.index is not None}
        keep = set(pick_queries(scope, len(held), args.harmful, 0)[1]) & held  # the harmful cut ignores the random count
        shares.append(harmful_shares(run, keep, eps, label))
    a, b = shares
    both = sorted(set(a) & set(b))
    d = np.array([a[i] - b[i] for i in both])
    print(f"ε {eps:.4f} (q {args.quantile:g}), {len(both)} queries in both: harmful share {np.mean([a[i] for i in both]):.3f} ({args.a}) "
          f"vs {np.mean([b[i] for i in both]):.3f} ({args.b}); paired difference {d.mean():+.3f} (se {d.std() / np.sqrt(len(d)):.3f})")


if __name__ == "__main__":
    main()
