"""Does `explore` find what a site encodes? Measured against known answers.

On a built-in prior every prompt's ground truth is known (refusal: harmfulness, reason,
method; ioi: subject, object; icl: task, input). For each site this runs `explore` (by
default `--judge none`), then scores every ground-truth feature the same way on the same
exploration/confirmation split and against the same search null. The *oracle* is the
ground-truth feature with the highest confirmation κ (confirmed ones first). Reported per
site: the oracle's κ, explore's best confirmed hypothesis and its κ, the ratio, how well the
two agree on prior prompts (adjusted mutual information), judge calls and wall time.

    python -m bench.explore_recovery_bench --run default --sites L18 --judge none

Writes bench/results/explore_recovery.json (one record per site and judge mode, appended).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from agent.confirm import search_null  # noqa: F401  (the null is read from the run)
from agent.hypotheses import Hypothesis, ScoredHypothesis, SearchNull, is_confirmed
from agent.loop import ExploreConfig, Explorer, explore
from agent.runlog import RunLog
from agent.sandbox import run_feature
from features.registry import get_feature
from scope_core.api import Scope

ORACLES = {"refusal": ["harmfulness", "reason", "method_any"], "ioi": ["subject", "object"], "icl": ["task", "input"]}


def ami(a: list, b: list) -> float | None:
    from sklearn.metrics import adjusted_mutual_info_score

    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if len(pairs) < 10:
        return None
    return float(adjusted_mutual_info_score([str(x) for x, _ in pairs], [str(y) for _, y in pairs]))


def run_site(args: argparse.Namespace, scope: Scope, site: str) -> dict:
    proposer = {"none": "evidence", "auto": "auto", "only": "judge"}[args.judge]
    told = "" if args.temperature is None else f"-t{args.temperature:g}"
    xid = f"recovery-{site}-{args.judge}-s{args.seed}{told}"
    cfg = ExploreConfig(run=args.run, runs_dir=args.runs_dir, site=site, budget=args.budget, queries=args.queries, samples=args.samples,
                        proposer=proposer, explore_id=xid, seed=args.seed, temperature=args.temperature)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    res = explore(cfg)
    wall = time.perf_counter() - t0
    log = RunLog(Path(res.explore_dir))
    saved = ExploreConfig.model_validate(log.read_json("config.json"))
    ex = Explorer(saved, None, log, scope=scope)
    ex.null = res.null or SearchNull(max_kappa=None)
    oracle = []
    for name in ORACLES[args.task]:
        feat = get_feature(name, scope.run_dir, scope.data)
        h = Hypothesis(name=name, statement=f"ground truth: {name}", kind="python")
        explo, _, _ = ex.score(h, feat, site, judge_labelled=False, part="explore")
        conf, _, _ = ex.score(h, feat, site, judge_labelled=False, part="confirm")
        sh = ScoredHypothesis(id=-1, round=-1, site=site, hypothesis=h, status="scored", score=explo, confirmation=conf)
        oracle.append((is_confirmed(sh, ex.null), conf.kappa if conf.kappa is not None else -1.0, name, conf, feat))
    oracle.sort(key=lambda o: (not o[0], -o[1]))
    o_conf, o_kappa, o_name, o_score, o_feat = oracle[0]
    best = next((h for h in res.ranking if is_confirmed(h, res.null)), None)
    rng = random.Random(args.seed)
    texts = [scope.data.examples[i].text for i in rng.sample(scope.data.train, min(1000, len(scope.data.train)))]
    agreement = None
    if best is not None and best.hypothesis.code:
        out = run_feature(best.hypothesis.code, texts)
        agreement = ami(out.labels, o_feat(texts)) if out.ok else None
    b = best.confirmation if best else None
    rec = {
        "run": args.run, "site": site, "task": args.task, "judge": args.judge, "seed": args.seed, "budget": args.budget,
        "queries": args.queries, "samples": args.samples, "stopped": res.stopped,
        "temperature": ex.sample_run(site).temperature,
        "search_null": ex.null.max_kappa,
        "oracle": {"feature": o_name, "confirmed": o_conf, "kappa": o_score.kappa, "kappa_ci": [o_score.kappa_ci_low, o_score.kappa_ci_high],
                   "empirical_kappa": o_score.empirical_kappa, "empirical_kappa_ci": [o_score.empirical_kappa_ci_low, o_score.empirical_kappa_ci_high]},
        "oracle_all": {name: {"confirmed": c, "kappa": s.kappa, "kappa_ci": [s.kappa_ci_low, s.kappa_ci_high], "empirical_kappa": s.empirical_kappa}
                       for c, _, name, s, _ in oracle},
        "best": None if best is None else {"name": best.hypothesis.name, "statement": best.hypothesis.statement, "source": best.source,
                                           "kappa": b.kappa if b else None, "kappa_ci": [b.kappa_ci_low, b.kappa_ci_high] if b else None,
                                           "empirical_kappa": b.empirical_kappa if b else None},
        "ratio_to_oracle": (b.kappa / o_score.kappa) if b and b.kappa is not None and o_score.kappa else None,
        "ami_with_oracle": agreement,
        "n_scored": sum(h.status == "scored" for h in res.ranking),
        "n_confirmed": sum(is_confirmed(h, res.null) for h in res.ranking),
        "judge_calls": res.timing.get("judge_calls", 0.0), "wall_s": wall, "timing": res.timing,
        "verdict": res.verdict,
    }
    return rec


def summarise(records: list[dict], run: str | None = None) -> None:
    """Per run, site and judge mode over the seeds recorded: the oracle's κ, explore's best
    confirmed κ, the ratio (only where the oracle itself is confirmed: a ratio to chance
    means nothing), AMI and wall time (mean and range), and whether the judge mode found
    anything the other did not on the same split (same seed)."""
    import statistics as st
    from collections import defaultdict

    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if run is None or r["run"] == run:
            groups[(r["run"], r["site"], r["judge"], r.get("temperature"))].append(r)

    def span(xs: list) -> str:
        xs = [x for x in xs if x is not None]
        if not xs:
            return "—"
        return f"{st.mean(xs):.2f} ({min(xs):.2f}–{max(xs):.2f})" if len(xs) > 1 else f"{xs[0]:.2f}"

    print("| run | site | judge | temperature | seeds | oracle κ | oracle empirical κ | best confirmed κ | its empirical κ | × oracle | AMI | judge calls | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (rn, site, judge, temp), rs in groups.items():
        print(f"| {rn} | {site} | {judge} | {'—' if temp is None else f'{temp:g}'} | {len(rs)} | {span([r['oracle']['kappa'] for r in rs])} | "
              f"{span([r['oracle'].get('empirical_kappa') for r in rs])} | {span([(r['best'] or {}).get('kappa') for r in rs])} | "
              f"{span([(r['best'] or {}).get('empirical_kappa') for r in rs])} | "
              f"{span([r['ratio_to_oracle'] if r['oracle']['confirmed'] else None for r in rs])} | "
              f"{span([r['ami_with_oracle'] for r in rs])} | {span([r['judge_calls'] for r in rs])} | {span([r['wall_s'] for r in rs])} |")
    by_split: dict[tuple, dict] = defaultdict(dict)
    for r in records:
        if run is None or r["run"] == run:
            by_split[(r["run"], r["site"], r["seed"], r.get("temperature"))][r["judge"]] = r
    for (rn, site, seed, _), modes in by_split.items():
        if "none" in modes and "auto" in modes:
            a, n = (modes[m]["best"] or {} for m in ("auto", "none"))
            ka, kn = a.get("kappa"), n.get("kappa")
            diff = None if ka is None or kn is None else ka - kn
            print(f"{rn} {site} seed {seed}: judge − none best κ {diff if diff is None else round(diff, 3)} "
                  f"({a.get('name', '—')} vs {n.get('name', '—')}); judge cost "
                  f"{modes['auto']['wall_s'] - modes['none']['wall_s']:.0f} s, {modes['auto']['judge_calls']:.0f} calls")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default=None, help="the trained run (default: default; with --summarise: all runs)")
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--task", default="refusal", choices=sorted(ORACLES))
    ap.add_argument("--sites", default="L18")
    ap.add_argument("--judge", default="none", choices=["none", "auto", "only"])
    ap.add_argument("--budget", type=int, default=20)
    ap.add_argument("--queries", type=int, default=48)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=None, help="sample every site at this temperature (default: each site's "
                    "own from training, Scope.sampling_temperature)")
    ap.add_argument("--out", default="bench/results/explore_recovery.json")
    ap.add_argument("--summarise", action="store_true", help="print the table of what --out holds (for --run, else all runs) and exit")
    args = ap.parse_args()
    if args.summarise:
        summarise(json.loads(Path(args.out).read_text()), args.run)
        return
    args.run = args.run or "default"
    scope = Scope(Path(args.runs_dir) / args.run)
    records = []
    for site in [s.strip() for s in args.sites.split(",") if s.strip()]:
        rec = run_site(args, scope, site)
        records.append(rec)
        best = rec["best"] or {}
        print(f"{site} [{args.judge}] oracle {rec['oracle']['feature']} κ {rec['oracle']['kappa']:.3f} "
              f"({'confirmed' if rec['oracle']['confirmed'] else 'not confirmed'}); best {best.get('name', '—')} "
              f"κ {best.get('kappa') if best.get('kappa') is None else round(best['kappa'], 3)}; ratio {rec['ratio_to_oracle']}; "
              f"AMI {rec['ami_with_oracle']}; null {rec['search_null']}; {rec['n_confirmed']}/{rec['n_scored']} confirmed; "
              f"{rec['wall_s']:.0f} s, {rec['judge_calls']:.0f} judge calls")
        print("  " + rec["verdict"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(out.read_text()) if out.exists() else []
    out.write_text(json.dumps(old + records, indent=1))


if __name__ == "__main__":
    main()
