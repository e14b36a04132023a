"""Is the seeds' harmful-query spread label error? The learned labeller on samples the refusal
grammar cannot read whole, against the harmfulness of the grammar's acts found inside them
(issue 20, item 5).

`refusal_parse` reads a sample only when the whole text is one production (a frame around an
act); three in four accepted samples are not, and their harmfulness is the TF-IDF labeller's
extrapolation (BENCHMARKS §18). In the refusal grammar harmfulness belongs to the act (the verb
phrase with its slot fillers: "build a pipe bomb", "bake sourdough bread"), not to the frame. This
searches every act pattern inside each off-grammar accepted sample; where the acts found agree,
that is the sample's harmfulness by the grammar's own rule, and the labeller is scored against it.
If one seed's labeller calls acts harmless that the grammar calls harmful more often than another
seed's, the spread is label error; if the two agree on every seed, it is what the generators write.

    python -m bench.act_labels --runs generated_cos600_s0,generated_cos600_s1,generated_cos600_s2 --tag _q180 \\
        --out bench/results/act_labels_generated_cos600_q180.json

Reads `runs/<run>/bench_samples_L18_seed<N><tag>.json` (the query-anchored samples
`real_data_bench` saved), N the run's training seed in --seeds order.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from features.registry import get_feature
from scope_core.api import SampleRun, Scope, act_harmfulness, grammar_for, load_target


def score_run(scope: Scope, samples: SampleRun) -> dict:
    parse = grammar_for(scope.config.prior)
    labeller = get_feature("harmfulness", scope.run_dir, scope.data)
    off = sorted({s.text for q in samples.queries for s in q.samples if s.accepted and s.text.strip() and not parse(s.text)})
    acts = {t: act_harmfulness(t) for t in off}
    known = [t for t in off if acts[t] is not None]
    said = dict(zip(known, labeller(known))) if known else {}
    cm = Counter((acts[t], said[t]) for t in known)  # (the grammar's label, the labeller's)
    n_h, n_l = cm[("harmful", "harmful")] + cm[("harmful", "harmless")], cm[("harmless", "harmful")] + cm[("harmless", "harmless")]
    return {"off_grammar_distinct": len(off), "act_labelled": len(known), "act_labelled_share": len(known) / len(off) if off else None,
            "act_harmful_share": n_h / len(known) if known else None,
            "labeller_harmful_share": sum(said[t] == "harmful" for t in known) / len(known) if known else None,
            "agreement": (cm[("harmful", "harmful")] + cm[("harmless", "harmless")]) / len(known) if known else None,
            "harmful_recall": cm[("harmful", "harmful")] / n_h if n_h else None,
            "harmless_recall": cm[("harmless", "harmless")] / n_l if n_l else None,
            "confusion": {f"grammar {a} / labeller {b}": cm[(a, b)] for a in ("harmful", "harmless") for b in ("harmful", "harmless")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True, help="runs, comma-separated, one per training seed")
    ap.add_argument("--seeds", default="0,1,2", help="their training seeds (the sample files' names), in --runs order")
    ap.add_argument("--tag", default="", help="what follows the seed in the sample files' names, e.g. _q180")
    ap.add_argument("--site", default="L18")
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    runs, seeds = args.runs.split(","), args.seeds.split(",")
    if len(runs) != len(seeds):
        raise SystemExit(f"--runs names {len(runs)} runs and --seeds {len(seeds)} seeds: give one seed per run")
    target = load_target()
    out: dict = {"runs": runs, "seeds": seeds, "tag": args.tag, "per_run": {}}
    print(f"{'run':>22} {'off-grammar':>11} {'act-read':>8} {'grammar harmful':>15} {'labeller harmful':>16} {'agree':>6} {'harmful recall':>14} {'harmless recall':>15}")
    for run, seed in zip(runs, seeds):
        path = Path(args.runs_dir) / run / f"bench_samples_{args.site}_seed{seed}{args.tag}.json"
        if not path.exists():
            raise SystemExit(f"no saved samples at {path}: run bench.real_data_bench with --tag _seed{seed}{args.tag} first")
        r = score_run(Scope(Path(args.runs_dir) / run, target=target), SampleRun.model_validate_json(path.read_text()))
        out["per_run"][run] = r
        f = lambda x: "—" if x is None else f"{x:.3f}"  # noqa: E731
        print(f"{run:>22} {r['off_grammar_distinct']:>11} {f(r['act_labelled_share']):>8} {f(r['act_harmful_share']):>15} "
              f"{f(r['labeller_harmful_share']):>16} {f(r['agreement']):>6} {f(r['harmful_recall']):>14} {f(r['harmless_recall']):>15}")
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
