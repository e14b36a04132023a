"""Issue 20's item 5 with the sampling noise averaged out: the harmfulness gap (generator minus
empirical FCR) of several saved samplings of one run, pooled query by query.

One sampling of 16 samples a query moves a harmful cell by up to 0.065 against another sampling of
the same generator on the same queries (BENCHMARKS §21, `bench/sampling_repeat.py`), as much as two
training seeds differ. Whether a seed's gap is within the target is a property of the generator, not
of one draw, so this pools the samplings: a query sampled in k of them gets all k × 16 samples, and
the "all" set is the union of each sampling's random picks (`pick_queries` with that sampling's
count and seed). The gap's CI is the FCR report's own (queries resampled, paired).

    python -m bench.pooled_gap --run generated_cos600_s2 --eps-quantiles 0.02,0.05,0.10 \
        --sampling '{key}:180:0' --sampling '{key}_auto_auto_draw1:60:1' --sampling '{key}_auto_auto_draw2:60:2'

Each --sampling is FILE_PART:N_RANDOM:SEED; FILE_PART names `runs/<run>/bench_ball_samples_<site>_<FILE_PART>.json`
with `{key}` standing for the ε's key (q0.02 …). Every pooled file must hold samples of one anchoring at
one ε. Writes bench/results/pooled_gap_<run><suffix>.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.real_data_bench import fcr_row, pick_queries, subset
from features.registry import get_feature
from scope_core.api import SampleRun, Scope, load_target, parse_site


def _design(r: SampleRun) -> tuple:
    """What makes two samplings' samples comparable: site, ε, metric, kernel, temperature, guidance, anchoring and its share."""
    return (r.site, r.eps.eps, r.metric, r.kernel, r.temperature, r.guidance, r.anchors, r.anchor_share)


def pooled(runs: list[SampleRun]) -> SampleRun:
    """One SampleRun whose queries hold every sampling's samples of that query (first-seen order).
    Refuses samplings that differ in what makes their samples comparable."""
    first = runs[0]
    for r in runs[1:]:
        if _design(r) != _design(first):
            raise SystemExit(f"samplings differ (site, ε, metric, kernel, temperature, guidance, anchors, share): {_design(r)} against "
                             f"{_design(first)}")
    merged: dict[int, object] = {}
    for r in runs:
        for q in r.queries:
            if q.index in merged:
                merged[q.index] = merged[q.index].model_copy(update={"samples": merged[q.index].samples + q.samples})
            else:
                merged[q.index] = q
    return first.model_copy(update={"queries": list(merged.values()), "timing": {}})


def parse_sampling(spec: str) -> tuple[str, int, int]:
    try:
        part, n, seed = spec.rsplit(":", 2)
        return part, int(n), int(seed)
    except ValueError:
        raise SystemExit(f"--sampling {spec!r}: write FILE_PART:N_RANDOM:SEED, e.g. '{{key}}_auto_auto_draw1:60:1'") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--site", default="L18")
    ap.add_argument("--eps-quantiles", default="0.02,0.05,0.10")
    ap.add_argument("--sampling", action="append", required=True, help="FILE_PART:N_RANDOM:SEED (repeat for each sampling)")
    ap.add_argument("--harmful", type=int, default=120)
    ap.add_argument("--out-dir", default="bench/results")
    ap.add_argument("--suffix", default="")
    args = ap.parse_args()
    scope = Scope(Path(args.runs_dir) / args.run, target=load_target())
    site = parse_site(args.site)
    harmfulness = get_feature("harmfulness", scope.run_dir, scope.data)
    specs = [parse_sampling(s) for s in args.sampling]
    rand: set[int] = set()
    harm: set[int] = set()
    for _, n, seed in specs:
        r, h = pick_queries(scope, n, args.harmful, seed)
        rand |= set(r)
        harm |= set(h)
    out: dict = {"run": args.run, "site": args.site, "samplings": args.sampling, "harmful": args.harmful, "eps": {}}
    for q in args.eps_quantiles.split(","):
        e = scope.eps(site, quantile=float(q))
        key = f"q{e.quantile:g}"
        paths = [Path(args.runs_dir) / args.run / f"bench_ball_samples_{args.site}_{part.format(key=key)}.json" for part, _, _ in specs]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise SystemExit(f"no saved samples at {', '.join(missing)}: run bench.ball_anchor_bench on {args.run} with the matching --seed/--suffix")
        runs = [SampleRun.model_validate_json(p.read_text()) for p in paths]
        if any(abs(r.eps.eps - e.eps) > 1e-9 for r in runs):
            raise SystemExit(f"a sampling of {key} was thresholded at another ε than {e.eps:.4f}")
        run = pooled(runs)
        held = {x.index for x in run.queries}
        row = {"eps": e.eps, "quantile": e.quantile, "anchor_share": run.anchor_share,
               "samples_per_query": {"all": _mean_n(subset(run, sorted(rand & held))), "harmful": _mean_n(subset(run, sorted(harm & held)))},
               "all": fcr_row(scope, harmfulness, subset(run, sorted(rand & held)), site),
               "harmful": fcr_row(scope, harmfulness, subset(run, sorted(harm & held)), site)}
        out["eps"][key] = row
        for part in ("all", "harmful"):
            r = row[part]
            print(f"{key:>6} ε {e.eps:.3f} {part:>7} ({r['n_queries_scored']} queries, {row['samples_per_query'][part]:.1f} samples each): "
                  f"gen {r['generator']:.3f} emp {r['empirical']:.3f} gap {r['gap']:+.3f} [{r['gap_ci'][0]:+.3f}, {r['gap_ci'][1]:+.3f}]", flush=True)
    path = Path(args.out_dir) / f"pooled_gap_{args.run}{args.suffix}.json"
    path.write_text(json.dumps(out, indent=1, default=float))
    print(f"wrote {path}")


def _mean_n(run: SampleRun) -> float:
    return sum(len(q.samples) for q in run.queries) / max(1, len(run.queries))


if __name__ == "__main__":
    main()
