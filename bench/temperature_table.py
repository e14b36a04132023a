"""One table of sampling temperatures across training seeds, from result files already written.

`bench/real_data_bench.py` samples the query-anchored sampler (what `sample` draws) and
`bench/ball_anchor_bench.py --anchors auto` the FCR sampler (what `fcr` draws); this script
reads both for each (training seed, temperature) and prints, at each ε, refusal, accepted-novel
and copies of the first, and the harmfulness gap (generator minus empirical FCR, with its CI) of
both, with the means over seeds — so a default temperature is chosen on seeds, not on one run
(BENCHMARKS §28).

    python -m bench.temperature_table \\
        --seed 0:bench/results/real_data_real_r2_cos_avg099{t}.json:bench/results/ball_anchors_real_r2_cos_avg099_auto{b}.json \\
        --seed 1:bench/results/real_data_real_r2_cos_avg099_seed1{t}.json:bench/results/ball_anchors_real_r2_cos_avg099_s1_auto{b}.json \\
        --temperature 1::_t1 --temperature 0.8:_t08:_t08 --out bench/results/temperature_real_r2_cos_avg099.json

`{t}` is replaced by a temperature's query-file tag and `{b}` by its ball-file tag.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _row(path: Path, key: str) -> dict | None:
    """The ε row `key` of a result file, or None when the file or row is missing."""
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return data.get("eps", {}).get(key)


def cell(query: dict | None, ball: dict | None) -> dict:
    """The figures of one (seed, temperature, ε)."""
    out: dict = {}
    if query is not None:
        o = query["ours"]
        out |= {"refusal": o["refusal_rate"], "accepted_novel_per_100": o["accepted_novel_per_100"], "exact_copy_rate": o["exact_copy_rate"],
                "near_copy_rate": o.get("near_copy_rate"), "median_distance": o["median_distance"],
                "query_harmful_gap": query["fcr_harmfulness_harmful"]["gap"], "query_harmful_gap_ci": query["fcr_harmfulness_harmful"]["gap_ci"],
                "query_all_gap": query["fcr_harmfulness_all"]["gap"]}
    if ball is not None:
        b = ball["ball"]
        out |= {"fcr_sampler_refusal": b["ours"]["refusal_rate"], "fcr_harmful_gap": b["fcr_harmfulness_harmful"]["gap"],
                "fcr_harmful_gap_ci": b["fcr_harmfulness_harmful"]["gap_ci"], "fcr_all_gap": b["fcr_harmfulness_all"]["gap"],
                "fcr_all_gap_ci": b["fcr_harmfulness_all"]["gap_ci"],
                "hash4_ci_excludes_0_share": b.get("content_free", {}).get("hash4_salts", {}).get("ci_excludes_0_share")}
    return out


def fmt(c: dict, f: str, spec: str) -> str:
    return format(c[f], spec) if c.get(f) is not None else "—"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", action="append", required=True, metavar="SEED:QUERY_PATTERN:BALL_PATTERN")
    ap.add_argument("--temperature", action="append", required=True, metavar="T:QUERY_TAG:BALL_TAG")
    ap.add_argument("--eps", default="0.10,0.15", help="ε keys of the result files")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    seeds = [s.split(":", 2) for s in args.seed]
    temps = [t.split(":", 2) for t in args.temperature]
    keys = args.eps.split(",")
    table: dict = {}
    for t, qtag, btag in temps:
        for key in keys:
            cells = {}
            for seed, qpat, bpat in seeds:
                cells[seed] = cell(_row(Path(qpat.replace("{t}", qtag)), key), _row(Path(bpat.replace("{b}", btag)), key))
            figures = sorted({f for c in cells.values() for f, v in c.items() if isinstance(v, float)})
            mean = {f: float(np.mean([c[f] for c in cells.values() if c.get(f) is not None])) for f in figures
                    if any(c.get(f) is not None for c in cells.values())}
            table[f"T{t} ε{key}"] = {"seeds": cells, "mean": mean}
            print(f"T {t:>4} ε {key}: " + " | ".join(
                f"s{s}: refusal {fmt(c, 'refusal', '.3f')} novel {fmt(c, 'accepted_novel_per_100', '.1f')} "
                f"copies {fmt(c, 'exact_copy_rate', '.1%')} gap q {fmt(c, 'query_harmful_gap', '+.3f')} fcr {fmt(c, 'fcr_harmful_gap', '+.3f')} "
                f"all {fmt(c, 'fcr_all_gap', '+.3f')}" for s, c in cells.items()))
            print(f"          mean: refusal {fmt(mean, 'refusal', '.3f')} novel {fmt(mean, 'accepted_novel_per_100', '.1f')} "
                  f"copies {fmt(mean, 'exact_copy_rate', '.1%')} gap q {fmt(mean, 'query_harmful_gap', '+.3f')} "
                  f"fcr {fmt(mean, 'fcr_harmful_gap', '+.3f')} all {fmt(mean, 'fcr_all_gap', '+.3f')}")
    Path(args.out).write_text(json.dumps(table, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
