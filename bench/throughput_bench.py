"""Throughput of a trained run, measured alone on the machine: verified samples/s against
the target-forward bounds, and activation caching against a raw truncated forward.

    python -m bench.throughput_bench --run default --site L18 --queries 24 --n 8 [--verify full] [--fixed-batches]

Writes bench/results/throughput_<run>_<site>_<queries>x<n>[_full][_fixed].json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.sampler_bench import extract_tps, raw_truncated_forward_tps
from scope_core.api import Scope, summarise


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="default")
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--site", default="L18")
    ap.add_argument("--queries", type=int, default=24)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--verify", choices=["auto", "full"], default="auto",
                    help="auto: read the site from the decoder's cache where exact (fused); full: re-run the target on every sample")
    ap.add_argument("--repeats", type=int, default=3, help="alternate sampler and bound measurements this many times (medians)")
    ap.add_argument("--fixed-batches", action="store_true", help="decode in fixed batches instead of continuous batching (for comparison)")
    args = ap.parse_args()
    scope = Scope(Path(args.runs_dir) / args.run)
    site = scope.site(args.site)
    idx = scope.heldout_indices(limit=args.queries)
    scope.inverter  # load before timing
    # The host's speed drifts by ±20% over minutes, so the sampler and the bound it is divided
    # by are measured alternately, `--repeats` times each, and the medians are used.
    gens, vers, tpss, plain = [], [], [], []
    for _ in range(args.repeats):
        run = scope.sample(site, indices=idx, n=args.n, eps=scope.eps(site, eps=args.eps), seed=0, verify_mode=args.verify,
                           continuous=not args.fixed_batches)
        texts = [s.text for q in run.queries for s in q.samples if s.text.strip()]
        gens.append(run.timing["generate_s"])
        vers.append(run.timing["verify_s"])
        tpss.append(raw_truncated_forward_tps(scope.target, texts, site.layer, prepacked=True))
        plain.append(raw_truncated_forward_tps(scope.target, texts, site.layer))
    gen, ver, tps, tps_plain = (float(np.median(x)) for x in (gens, vers, tpss, plain))
    n = run.timing["samples"]
    tok_per_sample = run.timing["verify_tokens"] / n
    full_tps = raw_truncated_forward_tps(scope.target, texts, scope.target.n_layers - 1, prepacked=True)
    prior = scope.data.texts[:1024]
    res = {
        "site": site.name, "samples": n, "temperature": run.temperature, "verify_mode": args.verify, "continuous": not args.fixed_batches,
        "generator_blocks": len(scope.inverter.backbone.arch.layers), "sampler": summarise(run),
        "fused_verified_share": run.timing.get("fused_verified", 0.0) / n,
        "verified_samples_per_s": n / (gen + ver), "generation_samples_per_s": n / gen, "verification_samples_per_s": n / ver,
        "generate_share": gen / (gen + ver), "tokens_per_sample": tok_per_sample,
        # the bound: the bare truncated forward with the prepacked linears the tool's own target
        # forwards use (the faster, so stricter, bound); beside it the plain transformers forward
        "raw_truncated_forward_tokens_per_s": tps, "raw_truncated_forward_plain_tokens_per_s": tps_plain,
        "repeats": {"generate_s": gens, "verify_s": vers, "raw_tokens_per_s": tpss, "raw_plain_tokens_per_s": plain},
        "verification_bound_samples_per_s": tps / tok_per_sample, "plain_verification_bound_samples_per_s": tps_plain / tok_per_sample,
        # combined bound: decoding each sample costs at least a full forward over its tokens
        "combined_bound_samples_per_s": 1 / (tok_per_sample / full_tps + tok_per_sample / tps),
        "caching_raw_tokens_per_s": raw_truncated_forward_tps(scope.target, prior, max(s.layer for s in scope.sites), prepacked=True),
        "caching_raw_plain_tokens_per_s": raw_truncated_forward_tps(scope.target, prior, max(s.layer for s in scope.sites)),
        "caching_extract_tokens_per_s": extract_tps(scope.target, prior, scope.sites),
    }
    res["ratio_to_verification_bound"] = res["verified_samples_per_s"] / res["verification_bound_samples_per_s"]
    res["ratio_to_plain_verification_bound"] = res["verified_samples_per_s"] / res["plain_verification_bound_samples_per_s"]
    res["ratio_to_combined_bound"] = res["verified_samples_per_s"] / res["combined_bound_samples_per_s"]
    res["caching_ratio"] = res["caching_extract_tokens_per_s"] / res["caching_raw_tokens_per_s"]
    res["caching_ratio_to_plain"] = res["caching_extract_tokens_per_s"] / res["caching_raw_plain_tokens_per_s"]
    print(json.dumps(res, indent=1))
    suffix = ("" if args.verify == "auto" else f"_{args.verify}") + ("_fixed" if args.fixed_batches else "")
    out = Path(f"bench/results/throughput_{args.run}_{site.name}_{args.queries}x{args.n}{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
