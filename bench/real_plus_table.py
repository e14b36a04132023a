"""BENCHMARKS §39 read back from what `bench/real_data_bench.py --prior real_plus` and
`bench/ball_anchor_bench.py` saved: no training, no sampling, seconds.

    python -m bench.real_plus_table

For each run (the issue's files with the Alpaca training split in the prior; 393 or 786 steps;
training seed; and for scale the issue's prior alone) and query draw, at ε 0.1: refusal, accepted-novel per 100, exact copies, median
sample distance and the 16-nearest lookup's refusal (query-anchored, as `sample` draws), refusal
split by the query's ε-ball (sparse: fewer than 16 training prompts within ε, §34), the final
fit `train` measures (held-out against training-prompt loss of the last weights), and where
`ball_anchor_bench` ran, `fcr`'s own harmfulness gap on harmful queries at ε 0.10 and 0.15.
Writes bench/results/real_plus_table.json. The samples live under runs/ (git-ignored).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from bench.prefix_probe import candidates
from bench.prefix_table import per_query
from bench.real_data_bench import pick_queries
from scope_core.api import Scope, parse_site

EPS = 0.1
N_FULL = 16
RUNS = {  # run -> (training seed, real_data_bench's --prior and --recipe, the tag it gave the training seed)
    "real_plus_default": (0, "real_plus", "default", ""),
    "real_plus_default_786": (0, "real_plus", "default_786", ""),
    "real_plus_default_786_s1": (1, "real_plus", "default_786", "_seed1"),
    # for scale: the prior alone, recipe 3 at 393 steps (§31, §33), on its own query draws
    "real_r2_cos_avg099_mlp": (0, "real", "r2_cos_avg099_mlp", ""),
    "real_r2_cos_avg099_mlp_s1": (1, "real", "r2_cos_avg099_mlp", "_seed1"),
}


def strata(scope: Scope, samples: str, draw: int) -> dict[str, float | int] | None:
    """Refusal on the draw's random queries whose ε-ball holds fewer than N_FULL training prompts, and on the rest."""
    site = parse_site("L18")
    rand, _ = pick_queries(scope, 60, 40, draw)
    rows = per_query(scope.run_dir, samples, rand)
    if rows is None:
        return None
    balls = candidates(scope, site, scope.acts(site)[torch.tensor(rand)], rand, scope.eps(site, eps=EPS), "ball", N_FULL)
    sparse = [i for i, b in zip(rand, balls) if len(b) < N_FULL]
    full = [i for i in rand if i not in set(sparse)]
    return {"sparse_queries": len(sparse), "sparse_refusal": float(np.mean([rows[i]["refusal"] for i in sparse])),
            "full_refusal": float(np.mean([rows[i]["refusal"] for i in full]))}


def _f(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def main() -> None:
    out: dict = {"eps": EPS, "rows": []}
    for run, (seed, prior, recipe, tag) in RUNS.items():
        run_dir = Path("runs") / run
        if not (run_dir / "inverter" / "train_summary.json").exists():
            print(f"{run}: not trained here; skipped")
            continue
        scope = Scope(run_dir)
        summary = json.loads((run_dir / "inverter" / "train_summary.json").read_text())
        ball = next((f for f in (Path(f"bench/results/ball_anchors_{run}_t075.json"), Path(f"bench/results/ball_anchors_{run}_auto_t075.json"))
                     if f.exists()), None)  # the second: how the issue's-prior runs' files were named (§33)
        gaps = None
        if ball is not None:
            b = json.loads(ball.read_text())["eps"]
            gaps = {e: b[e]["ball"]["fcr_harmfulness_harmful"]["gap"] for e in ("0.10", "0.15")}
        for draw, q in ((0, ""), (1, "_q1")):
            path = Path(f"bench/results/real_data_{prior}_{recipe}{tag}{q}_t075.json")
            if not path.exists():
                print(f"{run} draw {draw}: {path} not written yet; skipped")
                continue
            res = json.loads(path.read_text())
            ours, e = res["eps"]["0.10"]["ours"], res["eps"]["0.10"]
            row = {"run": run, "seed": seed, "draw": draw, "steps": res["steps"], "control_training_s": res["phases"]["control_training_s"],
                   "heldout_loss": res["heldout_loss"], "unconditional": res["heldout_loss_unconditional"],
                   "final_heldout_loss": summary.get("final_heldout_loss"), "final_train_loss": summary.get("final_train_loss"),
                   "refusal": ours["refusal_rate"], "accepted_novel_per_100": ours["accepted_novel_per_100"],
                   "exact_copy_rate": ours["exact_copy_rate"], "median_distance": ours["median_distance"],
                   "lookup_refusal": ours.get("lookup_refusal_rate"),
                   "harmful_fcr_query_anchored": [e["fcr_harmfulness_harmful"]["generator"], e["fcr_harmfulness_harmful"]["empirical"]],
                   "fcr_harmful_gap_ball_anchored": gaps if draw == 0 else None,
                   **(strata(scope, f"bench_samples_L18{tag}{q}_t075.json", draw) or {})}
            out["rows"].append(row)
            print(f"{run} draw {draw}: {row['steps']} steps, held-out {row['heldout_loss']:.3f} / {row['unconditional']:.3f}, final fit "
                  f"{_f(row['final_heldout_loss'])} vs {_f(row['final_train_loss'])}; refusal {row['refusal']:.3f} (sparse "
                  f"{_f(row.get('sparse_refusal'))} on {row.get('sparse_queries')}, full {_f(row.get('full_refusal'))}), accepted-novel "
                  f"{row['accepted_novel_per_100']:.1f}, copies {100 * row['exact_copy_rate']:.1f}%, lookup {_f(row['lookup_refusal'])}"
                  + (f", fcr harmful gap {gaps['0.10']:+.3f} / {gaps['0.15']:+.3f}" if gaps and draw == 0 else ""))
    for run in RUNS:
        rows = [r for r in out["rows"] if r["run"] == run]
        if rows:
            print(f"{run}, both draws: refusal {np.mean([r['refusal'] for r in rows]):.4f}, accepted-novel "
                  f"{np.mean([r['accepted_novel_per_100'] for r in rows]):.2f}")
    path = Path("bench/results/real_plus_table.json")
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
