"""Add the paired CI of the generator-minus-empirical gap to a `real_data_bench` result,
from the samples that bench saved — no training, no sampling.

Results written before `fcr.gap_ci` existed carry the gap alone; whether a seed's gap of
−0.057 is a miss or noise needs its interval. This re-scores the saved samples
(`runs/<run>/bench_samples_<site><tag>.json`) at every ε of the result file, on the same
queries (`pick_queries` with the result's sampling seed), checks that the gap it finds is the
one the file holds, and writes `gap_ci` beside it in place.

    python -m bench.rescore_gaps --result bench/results/real_data_generated_r2_cos_seed0.json --run generated_r2_cos_s0
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.real_data_bench import fcr_row, pick_queries, subset
from features.registry import get_feature
from scope_core.api import SampleRun, Scope, load_target, parse_site, with_eps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--result", required=True, help="a real_data_bench result file")
    ap.add_argument("--run", required=True, help="the run it measured (its saved samples are read)")
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--tag", default=None, help="the tag its samples were saved with (default: the result name's suffix after the recipe)")
    ap.add_argument("--seed", type=int, default=0, help="the sampling seed the bench ran with")
    args = ap.parse_args()
    path = Path(args.result)
    out = json.loads(path.read_text())
    site = parse_site(out["site"])
    tag = args.tag if args.tag is not None else path.stem.removeprefix(f"real_data_{out['prior']}_{out['recipe']}")
    samples = Path(args.runs_dir) / args.run / f"bench_samples_{out['site']}{tag}.json"
    if not samples.exists():
        raise SystemExit(f"no saved samples at {samples}: pass --run and --tag of the bench run that wrote {path}")
    scope = Scope(Path(args.runs_dir) / args.run, target=load_target())
    ours = SampleRun.model_validate_json(samples.read_text())
    rand, harm = pick_queries(scope, out["queries"], out["harmful_queries"], args.seed)
    harmfulness = get_feature("harmfulness", scope.run_dir, scope.data)
    for key, row in out["eps"].items():
        e = scope.eps(site, eps=row["eps"])  # the same threshold whichever way the row chose it
        r = with_eps(ours, e)
        for name, keep in (("fcr_harmfulness_all", rand), ("fcr_harmfulness_harmful", harm)):
            new = fcr_row(scope, harmfulness, subset(r, keep), site)
            old = row[name]["gap"]
            if old is not None and abs(new["gap"] - old) > 1e-6:
                raise SystemExit(f"{key} {name}: re-scored gap {new['gap']:+.4f} is not the file's {old:+.4f}; wrong --run, --tag or --seed?")
            row[name]["gap_ci"] = new["gap_ci"]
            lo, hi = new["gap_ci"]
            print(f"{key:>8} {name.removeprefix('fcr_harmfulness_'):>8}  gap {new['gap']:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    path.write_text(json.dumps(out, indent=1, default=float))
    print(f"updated {path}")


if __name__ == "__main__":
    main()
