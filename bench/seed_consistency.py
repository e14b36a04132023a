"""Consistency of FCR across *training* seeds (issue 20, item 5).

Trains nothing itself: run `bench/real_data_bench.py` once per training seed, then this
gathers the rows. For each ε it prints the harmfulness generator-minus-empirical gap on
all and on harmful queries for every seed, their spread, and whether the content-free
hash feature's κ CI covers 0 and the constant feature is degenerate in every run.

    for s in 0 1 2; do python -m bench.real_data_bench --prior generated --recipe r2 --run generated_r2_s$s \\
        --set seed=$s --tag _seed$s --eps-quantiles 0.02,0.05,0.10; done
    python -m bench.seed_consistency --prior generated --recipe r2 --seeds 0,1,2

Writes bench/results/seed_consistency_<prior>_<recipe>.json. `--files` names the result files
one per seed when a seed's run was written under another recipe name.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


TARGET = 0.05  # issue 20: |generator FCR − empirical FCR| ≤ 0.05 for every training seed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prior", default="generated")
    ap.add_argument("--recipe", default="r2")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--results", default="bench/results")
    ap.add_argument("--files", default=None,
                    help="result files, one per seed in --seeds order, where a seed's run was written under another recipe "
                         "name (default: real_data_<prior>_<recipe>_seed<N>.json in --results)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    files = ([Path(f) for f in args.files.split(",")] if args.files
             else [Path(args.results) / f"real_data_{args.prior}_{args.recipe}_seed{s}.json" for s in seeds])
    if len(files) != len(seeds):
        raise SystemExit(f"--files names {len(files)} files for {len(seeds)} seeds: give one per seed, in --seeds order")
    runs = {s: json.loads(f.read_text()) for s, f in zip(seeds, files)}
    out: dict = {"prior": args.prior, "recipe": args.recipe, "seeds": seeds, "files": [str(f) for f in files], "eps": {}}
    keys = list(next(iter(runs.values()))["eps"])
    print(f"{'ε':>16} {'queries':>8} " + " ".join(f"{'seed ' + str(s):>8}" for s in seeds)
          + f" {'spread':>8} {'max |gap|':>9}  hash4 κ CI ∋ 0  constant degenerate")
    for key in keys:
        row: dict = {"eps": {s: runs[s]["eps"][key]["eps"] for s in seeds}}
        for subset in ("all", "harmful"):
            gaps = [runs[s]["eps"][key][f"fcr_harmfulness_{subset}"]["gap"] for s in seeds]
            gap_cis = [runs[s]["eps"][key][f"fcr_harmfulness_{subset}"].get("gap_ci") for s in seeds]  # bench.rescore_gaps adds it to older files
            ok = [g for g in gaps if g is not None]
            cis = [runs[s]["eps"][key][f"fcr_harmfulness_{subset}"]["generator_ci"] for s in seeds]
            half = [(hi - lo) / 2 for lo, hi in cis if lo is not None and hi is not None]
            row[subset] = {"gaps": gaps, "gap_cis": gap_cis, "spread": (max(ok) - min(ok)) if ok else None, "max_abs_gap": max(map(abs, ok)) if ok else None,
                           "within_target": [g is not None and abs(g) <= TARGET for g in gaps],
                           # a miss the CI resolves: the whole interval outside ±TARGET
                           "resolved_outside_target": [bool(c and c[0] is not None and (c[0] > TARGET or c[1] < -TARGET)) for c in gap_cis],
                           "mean_generator_ci_halfwidth": sum(half) / len(half) if half else None}
            covers = all(runs[s]["eps"][key]["content_free"]["hash4"]["kappa_ci_covers_0"] for s in seeds)
            degenerate = all(runs[s]["eps"][key]["content_free"]["constant"]["degenerate"] for s in seeds)
            row["hash4_ci_covers_0_every_seed"], row["constant_degenerate_every_seed"] = covers, degenerate
            row["hash4_salts"] = {s: runs[s]["eps"][key]["content_free"].get("hash4_salts") for s in seeds}
            eps_txt = f"{key} ({sum(row['eps'].values()) / len(seeds):.3f})"
            print(f"{eps_txt:>16} {subset:>8} " + " ".join(f"{g:+8.3f}" if g is not None else f"{'–':>8}" for g in gaps)
                  + f" {row[subset]['spread'] or 0:8.3f} {row[subset]['max_abs_gap'] or 0:9.3f}  {str(covers):>14}  {degenerate}"
                  + f"  (generator FCR CI ±{row[subset]['mean_generator_ci_halfwidth'] or 0:.3f})")
            if any(c and c[0] is not None for c in gap_cis):
                print(f"{'':>16} {'95% CI':>8} " + " ".join(f"[{c[0]:+.2f},{c[1]:+.2f}]" if c and c[0] is not None else "–" for c in gap_cis)
                      + "  (paired over queries; a miss is resolved when the whole interval lies outside ±" + f"{TARGET})")
        cal = [c for c in row["hash4_salts"].values() if c]
        if cal:  # the null check's calibration over salts (runs made before it have none)
            print(f"{'':>16} {'null':>8} hash4 over {cal[0]['n_salts']} salts: κ mean " + " ".join(f"{c['kappa_mean']:+.3f}" for c in cal)
                  + ", share of CIs excluding 0 " + " ".join(f"{c['ci_excludes_0_share']:.2f}" for c in cal))
        out["eps"][key] = row
    path = Path(args.results) / f"seed_consistency_{args.prior}_{args.recipe}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
