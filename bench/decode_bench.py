"""Generation-only decoding speed: transformers' concatenating KV cache vs the preallocated one.

    python -m bench.decode_bench --run default --site L18 --queries 24 --n 8 [--profile]

Same inverter, queries, seed and sample cap for both. The preallocated cache reorders rows
when some finish (the holes are filled from the end), so at temperature 1 each row draws
different random numbers; greedy decoding (temperature 0) must give identical samples, and
the script checks that. `--profile` also runs each cache once under torch.profiler and
reports the share of CPU time in matmuls, `cat` and copies.
Writes bench/results/decode_<run>_<site>.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from scope_core.api import Scope, generate


def op_shares(fn) -> dict[str, float]:
    """Share of self CPU time of the ops that matter for the cache comparison."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    times = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(times.values())
    return {op: times.get(op, 0.0) / total for op in ("aten::mm", "aten::cat", "aten::copy_", "aten::_scaled_dot_product_flash_attention_for_cpu")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", default="default")
    ap.add_argument("--site", default="L18")
    ap.add_argument("--queries", type=int, default=24)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2, help="alternate the two caches this many times each")
    ap.add_argument("--profile", action="store_true", help="op shares of one profiled run per cache")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    sc = Scope(Path("runs") / args.run)
    site = sc.site(args.site)
    idx = sc.heldout_indices(limit=args.queries)
    z = sc.acts(site)[torch.tensor(idx)]
    cap = sc.sample_token_cap
    n_samples = len(idx) * args.n
    generate(sc.inverter, site.name, z[:2], 2, 2, max_new_tokens=cap, seed=1)  # warm-up
    res: dict[str, list[float]] = {"dynamic": [], "preallocated": []}
    for _ in range(args.repeats):
        for name in ("dynamic", "preallocated"):
            t = time.perf_counter()
            generate(sc.inverter, site.name, z, len(idx), args.n, max_new_tokens=cap, seed=0,
                                  preallocate=name == "preallocated")
            res[name].append(n_samples / (time.perf_counter() - t))
            print(f"{name:13s} {res[name][-1]:.2f} samples/s", flush=True)
    greedy = [generate(sc.inverter, site.name, z, len(idx), 2, temperature=0.0, max_new_tokens=cap, preallocate=p) for p in (False, True)]
    same = greedy[0] == greedy[1]
    best = {k: max(v) for k, v in res.items()}
    summary = {"run": args.run, "site": site.name, "samples": n_samples, "cap": cap, "samples_per_s": res, "best": best,
               "speedup": best["preallocated"] / best["dynamic"], "identical_greedy_samples": same}
    if args.profile:
        summary["op_share"] = {name: op_shares(lambda: generate(sc.inverter, site.name, z, len(idx), args.n, max_new_tokens=cap, seed=0,
                                                                preallocate=name == "preallocated"))
                               for name in ("dynamic", "preallocated")}
    print(json.dumps(summary, indent=1))
    out = Path("bench/results") / f"decode_{args.run}_{site.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
