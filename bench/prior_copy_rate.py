"""How often a *faithful* sampler of the generated refusal prior writes a training prompt.

The generator's exact and near copies (`bench/real_data_bench.py`) read as memorisation only
against this reference: the refusal grammar gives some frames few fillers, so independent
draws of the very distribution the prior's prompts came from (`draw_refusal`) land on
prompts that are already in the training split. A perfect inverter samples that
distribution (conditioned on ẑ), so its copy rate is of this order, not zero.

    python -m bench.prior_copy_rate --run generated_r2_cos_s0 --draws 20000

Reads the run's prompts and split (`runs/<run>/data`, a run trained on the default generated
prior); writes bench/results/prior_copy_rate_<run>.json. CPU only, a few seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scope_core.api import NearCopyIndex, RunData, draw_refusal, wilson


def _rate(hits: int, n: int) -> dict:
    """A share with its 95% Wilson interval: the draws are a sample, the reference has an error."""
    return {"rate": hits / n if n else float("nan"), "ci": list(wilson(hits, n)), "n": n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a run on the default generated refusal prior (its split is read)")
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--draws", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--results", default="bench/results")
    args = ap.parse_args()

    data = RunData.load(Path(args.runs_dir) / args.run / "data")
    train = data.train_texts()
    harmful_share = sum(e.labels.get("harmfulness") == "harmful" for e in data.examples) / len(data.examples)
    index = NearCopyIndex(train)
    draws = draw_refusal(args.draws, seed=args.seed, harmful_fraction=harmful_share)
    out: dict = {"run": args.run, "draws": args.draws, "seed": args.seed, "train_prompts": len(train),
                 "harmful_fraction": harmful_share, "by_label": {}}
    for label in ("all", "harmful", "harmless"):
        rows = [e for e in draws if label == "all" or e.labels.get("harmfulness") == label]
        exact = sum(e.text in train for e in rows)
        near = sum(index.is_near_copy(e.text) for e in rows)
        out["by_label"][label] = {"exact": _rate(exact, len(rows)), "near": _rate(near, len(rows))}
        r = out["by_label"][label]
        print(f"{label:>9}: {len(rows):6d} draws   exact copies {r['exact']['rate']:.3f} "
              f"[{r['exact']['ci'][0]:.3f}, {r['exact']['ci'][1]:.3f}]   within one word edit "
              f"{r['near']['rate']:.3f} [{r['near']['ci'][0]:.3f}, {r['near']['ci'][1]:.3f}]")
    path = Path(args.results) / f"prior_copy_rate_{args.run}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
