"""Where a seed's generator-minus-empirical FCR gap comes from: the samples the prior's
grammar can read back, or the ones it cannot (issue 20, item 5).

The empirical reference counts prior prompts, whose labels are the grammar's; the generator
FCR counts accepted samples, which the learned labeller labels. Most accepted samples are not
productions of the grammar (new combinations of frames and slots), so their label is the
labeller's extrapolation. This splits each run's generator FCR into grammar-read and
off-grammar samples, scored by `Scope.score` exactly as the full FCR, on the same queries and
ε as the `real_data_bench` result — so a spread between training seeds can be placed: in what
the generators write off the grammar, or in the samples whose labels are known.

    python -m bench.gap_sources --runs generated_r2_cos_s0,generated_r2_cos_s1,generated_r2_cos_s2_600 \\
        --results bench/results/real_data_generated_r2_cos_seed0.json,bench/results/real_data_generated_r2_cos_seed1.json,bench/results/real_data_generated_r2_cos_seed2_600.json \\
        --out bench/results/gap_sources_generated_r2_cos600.json

Needs the saved samples (`runs/<run>/bench_samples_<site><tag>.json`) and a prior the grammar
knows (the generated refusal prior).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.real_data_bench import fcr_row, pick_queries, subset
from features.registry import get_feature
from scope_core.api import SampleRun, Scope, grammar_for, load_target, parse_site, with_eps


def keep_samples(run: SampleRun, keep) -> SampleRun:
    """The run with each query's samples filtered by `keep(text)`; a query left with none
    is not counted, as a query without accepted samples never is."""
    queries = [q.model_copy(update={"samples": [s for s in q.samples if keep(s.text)]}) for q in run.queries]
    return run.model_copy(update={"queries": queries})


def accepted_share(run: SampleRun, keep) -> tuple[int, int]:
    acc = [s.text for q in run.queries for s in q.samples if s.accepted]
    return sum(1 for t in acc if keep(t)), len(acc)


def sources_of(scope: Scope, result: dict, samples: SampleRun, seed: int) -> dict:
    site = parse_site(result["site"])
    parse = grammar_for(scope.config.prior)
    if parse is None:
        raise SystemExit(f"{scope.run_dir}: its prior has no grammar that reads samples back (only the generated refusal prior does)")
    rand, harm = pick_queries(scope, result["queries"], result["harmful_queries"], seed)
    harmfulness = get_feature("harmfulness", scope.run_dir, scope.data)
    parsed = {t for q in samples.queries for s in q.samples if (t := s.text) and parse(t)}
    read, off = (lambda t: t in parsed), (lambda t: t not in parsed)
    out: dict = {}
    for key, row in result["eps"].items():
        r = with_eps(samples, scope.eps(site, eps=row["eps"]))
        cell: dict = {"eps": row["eps"]}
        for name, queries in (("all", rand), ("harmful", harm)):
            sub = subset(r, queries)
            whole = fcr_row(scope, harmfulness, sub, site)
            n_read, n_acc = accepted_share(sub, read)
            parts = {part: fcr_row(scope, harmfulness, keep_samples(sub, keep), site) for part, keep in (("grammar_read", read), ("off_grammar", off))}
            cell[name] = {"gap": whole["gap"], "gap_ci": whole["gap_ci"], "empirical": whole["empirical"], "generator": whole["generator"],
                          "accepted": n_acc, "grammar_read_share": n_read / n_acc if n_acc else None,
                          **{f"{part}_generator": p["generator"] for part, p in parts.items()},
                          **{f"{part}_generator_ci": p["generator_ci"] for part, p in parts.items()},
                          **{f"{part}_gap": p["gap"] for part, p in parts.items()},
                          "labeller_audit": whole["labeller_audit"]}
        out[key] = cell
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True, help="runs, comma-separated, one per training seed")
    ap.add_argument("--results", required=True, help="their real_data_bench result files, in the same order")
    ap.add_argument("--tags", default=None, help="the tags their samples were saved with (default: each result name's suffix after the recipe)")
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--seed", type=int, default=0, help="the sampling seed the bench ran with")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    runs, results = args.runs.split(","), [Path(p) for p in args.results.split(",")]
    if len(runs) != len(results):
        raise SystemExit(f"--runs names {len(runs)} runs and --results {len(results)} files: give one result per run, in order")
    tags = args.tags.split(",") if args.tags else [None] * len(runs)
    target = load_target()
    table: dict = {"runs": runs, "results": [str(p) for p in results], "cells": {}}
    print(f"{'run':>26} {'ε':>8} {'queries':>8} {'gap':>7} {'read':>6} {'FCR read':>9} {'FCR off':>8} {'empirical':>9} {'gap read':>9} {'gap off':>8}")
    for run, path, tag in zip(runs, results, tags):
        result = json.loads(path.read_text())
        tag = tag if tag is not None else path.stem.removeprefix(f"real_data_{result['prior']}_{result['recipe']}")
        spath = Path(args.runs_dir) / run / f"bench_samples_{result['site']}{tag}.json"
        if not spath.exists():
            raise SystemExit(f"no saved samples at {spath}: pass --tags with the tag the bench of {path} used")
        scope = Scope(Path(args.runs_dir) / run, target=target)
        cells = sources_of(scope, result, SampleRun.model_validate_json(spath.read_text()), args.seed)
        table["cells"][run] = cells
        for key, cell in cells.items():
            for name in ("all", "harmful"):
                c = cell[name]
                print(f"{run:>26} {cell['eps']:>8.4f} {name:>8} {c['gap']:>+7.3f} {c['grammar_read_share']:>6.2f} {c['grammar_read_generator']:>9.3f} "
                      f"{c['off_grammar_generator']:>8.3f} {c['empirical']:>9.3f} {c['grammar_read_gap']:>+9.3f} {c['off_grammar_gap']:>+8.3f}")
    Path(args.out).write_text(json.dumps(table, indent=1, default=float))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
