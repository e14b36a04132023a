"""The paired figures of BENCHMARKS §38, read from the samples `bench/prefix_probe.py` and
`bench/real_data_bench.py` saved: no sampling, seconds.

    python -m bench.prefix_table

For each cell (training run × query draw) on the 60 random queries of that draw, at ε 0.1:
- the probe's control against `real_data_bench`'s recorded sampler at 0.75 (the control's own
  random stream, the same distribution);
- sparse-ball openings against the control, with the mean change over the five cells and its 95%
  interval from a paired bootstrap over queries within each cell (10,000 draws, seed 0);
- the recorded sampler at 0.65 against sparse-ball openings at 0.65 (the stacked rows);
- ball-anchored samples (`bench/ball_anchor_bench.py`, `--anchors auto` at ε 0.10) against the
  recorded query-anchored ones.
Writes bench/results/prefix_probe_table.json. The samples live under runs/ (git-ignored).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.real_data_bench import pick_queries
from scope_core.api import SampleRun, Scope

EPS = 0.1
RUNS = {"real_r2_cos_avg099_mlp": "", "real_r2_cos_avg099_mlp_s1": "_seed1"}  # run -> real_data_bench's tag
CELLS = [("real_r2_cos_avg099_mlp", 0), ("real_r2_cos_avg099_mlp", 1), ("real_r2_cos_avg099_mlp", 2),
         ("real_r2_cos_avg099_mlp_s1", 0), ("real_r2_cos_avg099_mlp_s1", 1)]


def per_query(run_dir: Path, name: str, rand: list[int]) -> dict[int, dict[str, float]] | None:
    """Refusal, accepted-novel share and exact copies per random query of a saved samples file."""
    path = run_dir / name
    if not path.exists():
        return None
    keep = set(rand)
    out = {}
    for q in SampleRun.model_validate_json(path.read_text()).queries:
        if q.index in keep:
            d = np.array([s.distance for s in q.samples])
            novel = np.array([s.distance < EPS and not s.is_copy for s in q.samples])
            out[q.index] = {"refusal": float(np.mean(d >= EPS)), "novel": float(np.mean(novel)),
                            "copies": float(np.mean([s.is_copy for s in q.samples]))}
    return out


def mean_of(rows: dict[int, dict[str, float]] | None) -> dict[str, float] | None:
    """Figures over all samples of the cell (every query has the same number of samples)."""
    if rows is None:
        return None
    return {k: float(np.mean([r[k] for r in rows.values()])) for k in ("refusal", "novel", "copies")}


def main() -> None:
    runs_dir = Path("runs")
    out: dict = {"eps": EPS, "cells": []}
    diffs = []
    for run, draw in CELLS:
        run_dir = runs_dir / run
        rand, _ = pick_queries(Scope(run_dir), 60, 40, draw)
        q1 = "_q1" if draw == 1 else ""
        recorded = f"bench_samples_L18{RUNS[run]}{q1}" if draw < 2 else None
        files = {"control": f"bench_prefix_samples_none_0.5_t0.75_s{draw}.json",
                 "sparse": f"bench_prefix_samples_ball_sparse_0.5_t0.75_s{draw}.json",
                 "sparse_t065": f"bench_prefix_samples_ball_sparse_0.5_t0.65_s{draw}.json",
                 "recorded_t075": f"{recorded}_t075.json" if recorded else "",
                 "recorded_t065": f"{recorded}_t065.json" if recorded else "",
                 "ball_anchored_t075": f"bench_ball_samples_L18_0.10_auto_auto{q1}_t075.json" if draw < 2 else ""}
        rows = {k: per_query(run_dir, f, rand) if f else None for k, f in files.items()}
        cell = {"run": run, "draw": draw, **{k: mean_of(v) for k, v in rows.items()}}
        if rows["control"] and rows["sparse"]:
            diffs.append(np.array([rows["sparse"][i]["refusal"] - rows["control"][i]["refusal"] for i in sorted(rows["control"])]))
        out["cells"].append(cell)
        print(f"{run} draw {draw}: " + "  ".join(f"{k} {v['refusal']:.4f}/{100 * v['novel']:.2f}/{100 * v['copies']:.1f}%"
                                               for k, v in cell.items() if isinstance(v, dict)))
    rng = np.random.default_rng(0)
    boots = [np.mean([d[rng.integers(0, len(d), len(d))].mean() for d in diffs]) for _ in range(10000)]
    mean = float(np.mean([d.mean() for d in diffs]))
    out["sparse_minus_control"] = {"mean": mean, "ci95": [float(x) for x in np.percentile(boots, [2.5, 97.5])], "cells": len(diffs)}
    lo, hi = out["sparse_minus_control"]["ci95"]
    print(f"sparse-ball openings − control, refusal over {len(diffs)} cells: {mean:+.4f} [{lo:+.4f}, {hi:+.4f}] "
          "(paired bootstrap over queries)")
    print("(each cell: refusal / accepted-novel per 100 / exact copies, on the 60 random queries at ε 0.1)")
    path = Path("bench/results/prefix_probe_table.json")
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
