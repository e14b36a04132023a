"""The inverter on real prompts (issue 24): one recipe trained and measured on the real
refusal sets in `../shared/data/refusal/`, beside the generated prior.

    python bench/real_data_bench.py --recipe default                      # today's default
    python bench/real_data_bench.py --recipe full_mix0 --set upper_blocks=0 --set neighbour_mix=0
    python bench/real_data_bench.py --recipe default --prior generated    # the generated prior
    python bench/real_data_bench.py --recipe default --temperature run --references   # as `sample` decodes, with the references

Every recipe of one prior shares the prompts, split and activation cache
(`runs/<prefix>_data`), so a recipe costs its training and its sampling only. Samples are
drawn once per query and thresholded at every ε (ε only decides acceptance), giving at
ε 0.05 / 0.10 / 0.15 and the site's default ε: refusal, accepted-novel per 100, exact and
near copies, distinct samples, median distance, queries with an accepted sample, and the
harmfulness FCR against the empirical-neighbour reference; `--references` adds the
unconditional backbone, random prior prompts and the nearest-training-prompt lookup.

Its samples are anchored on the query (the plain sampler, what `sample` shows), so its FCR rows
are the query-anchored ones. `fcr`'s default `--anchors auto` anchors a share 1 − m of samples on
the ε-ball (m the site's neighbour mix: all of them on the real sets, 30% on the generated prior);
`bench/ball_anchor_bench.py --anchors auto` gives the rows `fcr` itself reports, from the same run
and queries (BENCHMARKS §17, §21).

Prints a table and writes bench/results/real_data_<prior>_<recipe>.json (and merges its row
into bench/results/real_data.json).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

from agent.confirm import hash_feature
from bench.sampler_bench import reference_run
from features.registry import get_feature
from scope_core.api import PriorConfig, SampleRun, Scope, TrainConfig, load_target, parse_site, train, with_eps

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "refusal"
REAL_FILES = ("harmful_train.json:harmful", "harmful_val.json:harmful", "harmful_test.json:harmful", "harmless_val.json:harmless")
# `--prior real_plus`: the files and 18,793 more Alpaca prompts of the kind (`harmless_train.json`) in the
# prior itself. Its queries are still drawn only from the files, so the query population is the issue's.
PLUS_FILES = ("harmless_train.json:harmless",)
PLUS_SOURCES = {f.split(":")[0] for f in PLUS_FILES}
EPS_GRID = (0.05, 0.10, 0.15)


def prior_for(kind: str) -> PriorConfig:
    """The real sets of the issue (7,106 prompts, 11.9% harmful); the same with the Alpaca
    training split added (`real_plus`, 25.9k prompts; 2,000 held out, so that 525 of them, 54
    harmful, come from the issue's files); or the generated prior."""
    if kind in ("real", "real_plus"):
        files = REAL_FILES + (PLUS_FILES if kind == "real_plus" else ())
        missing = [f for f in files if not (REAL / f.split(":")[0]).exists()]
        if missing:
            raise SystemExit(f"real prompt sets not found under {REAL}: {', '.join(missing)}")
        return PriorConfig(task=None, data=[str(REAL / f) for f in files], heldout=500 if kind == "real" else 2000)
    return PriorConfig(task="refusal", n=10000, heldout=500)


def share_data(runs_dir: Path, shared: str, run: str) -> None:
    """Link the shared prompts and activation cache into a recipe's run directory."""
    (runs_dir / shared).mkdir(parents=True, exist_ok=True)
    (runs_dir / run).mkdir(parents=True, exist_ok=True)
    for sub in ("data", "acts"):
        (runs_dir / shared / sub).mkdir(exist_ok=True)
        link = runs_dir / run / sub
        if not link.exists():
            link.symlink_to((runs_dir / shared / sub).resolve())


def parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def pick_queries(scope: Scope, n_random: int, n_harmful: int, seed: int) -> tuple[list[int], list[int]]:
    """`n_random` held-out queries drawn uniformly (the population users bring), and
    `n_harmful` harmful held-out queries. The harmful ones are sorted before the cut, so they are
    the first `n_harmful` harmful held-out queries by index whatever `n_random` and `seed` are
    (kept as it is: the recorded results were drawn so; BENCHMARKS §21). Held-out prompts from
    `PLUS_FILES` are never queries: on `real_plus` the queries stay the issue's population, and no
    other prior holds them, so every earlier draw is unchanged."""
    rng = random.Random(seed)
    held = [i for i in scope.data.heldout if scope.data.examples[i].source not in PLUS_SOURCES]
    rand = sorted(rng.sample(held, min(n_random, len(held))))
    harmful = [i for i in held if scope.data.examples[i].labels.get("harmfulness") == "harmful"]
    extra = [i for i in harmful if i not in set(rand)]
    rng.shuffle(extra)
    harm = sorted([i for i in rand if i in set(harmful)] + extra)[:n_harmful]
    return rand, harm


def subset(run: SampleRun, keep: list[int]) -> SampleRun:
    want = set(keep)
    return run.model_copy(update={"queries": [q for q in run.queries if q.index in want]})


def fcr_row(scope: Scope, harm, run: SampleRun, site) -> dict:
    rep = scope.score(harm, "harmfulness", run, site)
    g, e = rep.generator, rep.empirical
    return {"generator": g.fcr, "generator_ci": [g.ci_low, g.ci_high], "n_queries_scored": g.n_queries,
            "empirical": e.fcr if e else None, "gap": rep.gap, "gap_ci": list(rep.gap_ci),
            "labeller_audit": rep.labeller_audit.model_dump() if rep.labeller_audit else None,
            "gap_within_label_noise": rep.labeller_audit.explains(rep.gap) if rep.labeller_audit else None}


def measured_rows(scope: Scope, run: SampleRun, rand: list[int], harm: list[int], site, harmfulness) -> dict:
    """What one ε of one sampled run is measured by: the sampler's figures on the random
    queries, the harmfulness FCR on random and on harmful ones, and the null checks."""
    return {"ours": scope.sampler_summary(subset(run, rand)),
            "fcr_harmfulness_all": fcr_row(scope, harmfulness, subset(run, rand), site),
            "fcr_harmfulness_harmful": fcr_row(scope, harmfulness, subset(run, harm), site),
            "content_free": content_free_rows(scope, subset(run, rand), site)}


N_SALTS = 32


def salt_calibration(scope: Scope, run: SampleRun, site, n_salts: int = N_SALTS) -> dict:
    """κ of the 4-bucket hash under `n_salts` salts on the same samples: the null check's
    calibration. One salt's CI excludes 0 in 5% of draws by design, so one cell that excludes
    it says little; over salts, κ must centre on 0 and about 5% of CIs may exclude it."""
    kappas, excl, half = [], 0, []
    for salt in range(n_salts):
        h = hash_feature(4, salt=1000 + salt)
        g = scope.score(lambda texts: [h(t) for t in texts], f"hash4_{salt}", run, site, empirical=False).generator
        if g.kappa is None or g.kappa_ci_low is None:
            continue
        kappas.append(g.kappa)
        excl += not (g.kappa_ci_low <= 0 <= g.kappa_ci_high)
        half.append((g.kappa_ci_high - g.kappa_ci_low) / 2)
    k = np.array(kappas)
    return {"n_salts": len(k), "kappa_mean": float(k.mean()) if len(k) else None, "kappa_sd": float(k.std()) if len(k) else None,
            "ci_excludes_0_share": excl / len(k) if len(k) else None, "mean_ci_halfwidth": float(np.mean(half)) if half else None}


def content_free_rows(scope: Scope, run: SampleRun, site) -> dict:
    """κ of a salted 4-bucket hash of the text (its CI should cover 0), the same over 32 salts
    (κ centred on 0, about 5% of CIs excluding it), and of a constant feature (must be reported
    degenerate): the FCR machinery's own null checks."""
    h = hash_feature(4, salt=17)
    out: dict = {"hash4_salts": salt_calibration(scope, run, site)}
    for name, fn in (("hash4", lambda texts: [h(t) for t in texts]), ("constant", lambda texts: ["same"] * len(texts))):
        g = scope.score(fn, name, run, site, empirical=False).generator
        out[name] = {"fcr": g.fcr, "p0": g.p0, "kappa": g.kappa, "kappa_ci": [g.kappa_ci_low, g.kappa_ci_high], "degenerate": g.degenerate,
                     "kappa_ci_covers_0": None if g.kappa_ci_low is None else g.kappa_ci_low <= 0 <= g.kappa_ci_high}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prior", choices=("real", "real_plus", "generated"), default="real")
    ap.add_argument("--recipe", default="default", help="a name for the recipe (the run is <prior>_<recipe>)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="TrainConfig override (JSON value), repeatable")
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--site", default="L18", help="the site measured")
    ap.add_argument("--train-sites", default=None, help="the sites the run is trained on (default: --site), e.g. L12,L18,L24 "
                    "to measure an earlier and a later site of one run (rerun with --run and another --site)")
    ap.add_argument("--queries", type=int, default=60, help="random held-out queries")
    ap.add_argument("--harmful", type=int, default=40, help="harmful held-out queries for the harmfulness FCR")
    ap.add_argument("--n", type=int, default=16, help="samples per query")
    ap.add_argument("--temperature", type=lambda v: None if v == "run" else float(v), default=1.0,
                    help="sampling temperature; 'run': the run's own for the site (what `sample` uses by default)")
    ap.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance w (1: plain sampling)")
    ap.add_argument("--references", action="store_true", help="also the unconditional backbone, random prior prompts and the lookup")
    ap.add_argument("--seed", type=int, default=0, help="sampling and query seed (the training seed is --set seed=N)")
    ap.add_argument("--eps-quantiles", default=None, help="ε grid as pairwise quantiles instead, e.g. 0.02,0.05,0.10")
    ap.add_argument("--run", default=None, help="run name (default <prior>_<recipe>; one per training seed)")
    ap.add_argument("--tag", default="", help="suffix of the result file (e.g. the training seed)")
    ap.add_argument("--out-dir", default="bench/results")
    args = ap.parse_args()
    t_all = time.perf_counter()
    runs_dir = Path(args.runs_dir)
    run = args.run or f"{args.prior}_{args.recipe}"
    # one activation cache per set of sites (a cache holds the sites it was built for)
    share_data(runs_dir, f"{args.prior}_data" + (f"_{args.train_sites.replace(',', '_')}" if args.train_sites else ""), run)
    target = load_target()
    cfg = TrainConfig(run=run, runs_dir=str(runs_dir), prior=prior_for(args.prior), sites=args.train_sites or args.site, **parse_sets(args.set))
    print(f"== training {run}: {json.dumps(parse_sets(args.set))}", flush=True)
    res = train(cfg, target=target)
    scope = Scope(runs_dir / run, target=target)
    site = parse_site(args.site)
    rand, harm = pick_queries(scope, args.queries, args.harmful, args.seed)
    idx = sorted(set(rand) | set(harm))
    default_eps = scope.eps(site)
    grid = [scope.eps(site, eps=e) for e in EPS_GRID]  # absolute ε, then pairwise quantiles, then the site's default
    if args.eps_quantiles:
        grid += [scope.eps(site, quantile=float(q)) for q in args.eps_quantiles.split(",")]
    grid.append(default_eps)
    t = time.perf_counter()
    ours = scope.sample(site, indices=idx, n=args.n, eps=default_eps, seed=args.seed, progress=True, temperature=args.temperature,
                        guidance=args.guidance)
    sample_s = time.perf_counter() - t
    (runs_dir / run / f"bench_samples_{args.site}{args.tag}.json").write_text(ours.model_dump_json())  # for later analyses without resampling
    harmfulness = get_feature("harmfulness", scope.run_dir, scope.data)
    out: dict = {"prior": args.prior, "recipe": args.recipe, "overrides": parse_sets(args.set), "site": args.site,
                 "n_train": res.n_train, "n_heldout": res.n_heldout, "generator": res.generator, "steps": res.steps,
                 "train_tokens": res.train_tokens, "stopped": res.stopped, "phases": res.phases,
                 "heldout_loss": res.heldout_loss, "heldout_loss_unconditional": res.heldout_loss_unconditional,
                 "loss_gain_nats": (res.heldout_loss_unconditional or 0) - (res.heldout_loss or 0), "heldout_oov_rate": res.heldout_oov_rate,
                 "queries": len(rand), "harmful_queries": len(harm), "n": args.n, "temperature": ours.temperature, "guidance": args.guidance,
                 "sample_s": sample_s, "samples_per_s": len(idx) * args.n / sample_s, "labeller": harmfulness.info, "eps": {}}
    refs: dict[str, SampleRun] = {}
    if args.references:
        refs = {"unconditional": scope.sample(site, indices=rand, n=args.n, eps=default_eps, seed=args.seed, conditional=False, progress=True),
                "random_prior": reference_run(scope, site, rand, default_eps, args.n, "random", args.seed),
                "lookup_nearest": reference_run(scope, site, rand, default_eps, args.n, "nearest", args.seed)}
    for e in grid:
        key = "default" if e is default_eps else (f"q{e.quantile:g}" if e.source.startswith("quantile") else f"{e.eps:.2f}")
        row = {"eps": e.eps, "quantile": e.quantile, **measured_rows(scope, with_eps(ours, e), rand, harm, site, harmfulness)}
        for name, ref in refs.items():
            row[name] = scope.sampler_summary(with_eps(ref, e))
        out["eps"][key] = row
    out["wall_s"] = time.perf_counter() - t_all
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    site_tag = "" if args.site == "L18" else f"_{args.site}"
    path = out_dir / f"real_data_{args.prior}_{args.recipe}{site_tag}{args.tag}.json"
    path.write_text(json.dumps(out, indent=1, default=float))
    print_table(out)
    print(f"wrote {path}")


def print_table(out: dict) -> None:
    print(f"{out['prior']} / {out['recipe']}: {out['generator']}")
    print(f"held-out loss {out['heldout_loss']:.3f} vs unconditional {out['heldout_loss_unconditional']:.3f} "
          f"(gain {out['loss_gain_nats']:.2f} nats), {out['steps']} steps, oov {out['heldout_oov_rate']:.2%}, {out['samples_per_s']:.1f} samples/s")
    cols = ("refusal_rate", "accepted_novel_per_100", "exact_copy_rate", "near_copy_rate", "query_copy_rate", "distinct_per_query",
            "median_distance", "queries_with_accepted", "lookup_refusal_rate", "queries_ball_empty")
    print(f"{'eps':>14} {'who':>14} " + " ".join(f"{c[:12]:>12}" for c in cols) + "  FCR harmful gen/emp   FCR all gen/emp  hash4 κ [CI]")
    for key, row in out["eps"].items():
        for who in ("ours", "unconditional", "random_prior", "lookup_nearest"):
            if who not in row:
                continue
            f = row[who]
            tail = ""
            if who == "ours":
                h, a = row["fcr_harmfulness_harmful"], row["fcr_harmfulness_all"]
                c = row["content_free"]["hash4"]
                tail = (f"  {_f(h['generator'])}/{_f(h['empirical'])}   {_f(a['generator'])}/{_f(a['empirical'])}"
                        f"  {_f(c['kappa'])} [{_f(c['kappa_ci'][0])}, {_f(c['kappa_ci'][1])}]")
            print(f"{key + ' ' + format(row['eps'], '.3f'):>14} {who:>14} " + " ".join(f"{f.get(c, float('nan')):12.3f}" for c in cols) + tail)


def _f(x: float | None) -> str:
    return "  –  " if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


if __name__ == "__main__":
    main()
