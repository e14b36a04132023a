"""Issue 24's one table: the default recipe's sampler figures on each prior and site, beside the references.

Reads result files of `bench/real_data_bench.py` (one per prior × site; `--references` adds the
unconditional backbone, random prior prompts and the nearest-training-prompt lookup) and prints
one markdown table: held-out loss against unconditional, then per ε (0.05 / 0.10 / 0.15 cosine
and the site's default) refusal, accepted-novel, exact and near copies, distinct samples, median
distance, queries with an accepted sample, and the share of queries whose ε-ball holds no training
prompt, with the references' refusal and accepted-novel beside them. No sampling: it only reads.

    python -m bench.default_table --row "real L12=bench/results/real_data_real_r3_L12.json" \
        --row "real L18=bench/results/real_data_real_r3_refs.json" --out bench/results/default_table.json

Rows whose file lacks references print "—" there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REFS = ("unconditional", "random_prior", "lookup_nearest")
EPS_KEYS = ("0.05", "0.10", "0.15", "default")


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, p: int = 3) -> str:
    return "—" if x is None else f"{x:.{p}f}"


def table_rows(label: str, result: dict) -> list[dict]:
    """One row per ε of one result file: what the table prints, as numbers."""
    rows = []
    for key in EPS_KEYS:
        cell = result["eps"].get(key)
        if cell is None:
            continue
        ours = cell["ours"]
        row = {"label": label, "eps_key": key, "eps": cell["eps"], "quantile": cell.get("quantile"),
               "heldout_loss": result.get("heldout_loss"), "unconditional_loss": result.get("heldout_loss_unconditional"),
               "steps": result.get("steps"), "temperature": result.get("temperature"), "queries": result.get("queries"),
               **{k: ours.get(k) for k in ("refusal_rate", "accepted_novel_per_100", "exact_copy_rate", "near_copy_rate",
                                            "distinct_per_query", "median_distance", "queries_with_accepted",
                                            "lookup_refusal_rate", "queries_ball_empty")}}
        for ref in REFS:
            r = cell.get(ref)
            row[f"{ref}_refusal"] = r["refusal_rate"] if r else None
            row[f"{ref}_accepted_novel"] = r["accepted_novel_per_100"] if r else None
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    head = ("| prior, site (held-out loss vs unconditional; steps; T) | ε | refusal | accepted-novel /100 | exact / near copies | "
            "distinct /16 | median d | queries with accepted | queries with an empty ball | lookup refusal / novel | "
            "unconditional refusal | random prompts refusal |")
    out = [head, "|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|"]
    last = None
    for r in rows:
        loss = (f"{r['heldout_loss']:.3f} vs {r['unconditional_loss']:.3f}" if r["heldout_loss"] is not None else "—")
        who = f"{r['label']} ({loss}; {r['steps']}; {r['temperature']:g})" if r["label"] != last else ""
        last = r["label"]
        eps = f"{r['eps']:.3f}" + (" (default" + (f", q {r['quantile']:g})" if r["quantile"] else ")") if r["eps_key"] == "default" else "")
        lookup = r["lookup_nearest_refusal"] if r["lookup_nearest_refusal"] is not None else r["lookup_refusal_rate"]
        out.append(f"| {who} | {eps} | {_num(r['refusal_rate'])} | {_num(r['accepted_novel_per_100'], 1)} | "
                   f"{_pct(r['exact_copy_rate'])} / {_pct(r['near_copy_rate'])} | {_num(r['distinct_per_query'], 1)} | "
                   f"{_num(r['median_distance'])} | {_num(r['queries_with_accepted'], 2)} | {_num(r['queries_ball_empty'], 2)} | "
                   f"{_num(lookup)} / {'—' if lookup is None else '0'} | {_num(r['unconditional_refusal'])} | {_num(r['random_prior_refusal'])} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--row", action="append", required=True, metavar="LABEL=PATH", help="a real_data_bench result file and its label")
    ap.add_argument("--out", default="bench/results/default_table.json")
    args = ap.parse_args()
    rows = []
    for spec in args.row:
        label, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"--row needs LABEL=PATH, got {spec!r}")
        if not Path(path).exists():
            raise SystemExit(f"--row {label}: no result file {path}; run bench/real_data_bench.py for it first")
        rows.extend(table_rows(label, json.loads(Path(path).read_text())))
    print(markdown(rows))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
