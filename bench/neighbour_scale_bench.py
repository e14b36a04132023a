"""Neighbour search against the number of prompts: time and peak memory (issue 22, item 3).

For N = 10k, 50k, 100k, 200k synthetic activations (d = 576, float32) are written as a real
activation cache (safetensors chunks of 1,024 prompts, `ActivationCache` layout, statistics
included) and read back memory-mapped, as training reads them. Then, each in a fresh process
so that its peak RSS is its own:

* **balls** — what neighbour-conditioned training builds at a site (`neighbour_balls` at the
  cache's own ε, the 0.05 pairwise quantile, cosine): whole lists from all pairs up to 20k
  prompts, at most 64 members a ball above. Checked on a seeded subsample of rows against
  their exact balls: every stored member within ε, exact sizes equal, estimated sizes' error,
  and the inverted file's recall on the small balls it searched.
* **reference** — the empirical reference's neighbour queries (`neighbour_lists`, hard kernel,
  256 query rows against every prompt, the query itself excluded) and the whole
  `empirical_fcr` on a label with 48 values (the clusters).

The activations: a shared direction (norm 28, as the target's residual stream has: the
normalised rows' mean has norm 0.87), 48 clusters with 24 sub-clusters each in a 64-dim
subspace (Dirichlet(0.3) cluster weights, Zipf sub-cluster sizes), a per-prompt spread drawn
log-normally, and isotropic noise. At 10k its ball sizes are 0.01 / 0.86 / 2.6 / 5.8 / 20% of
N at q05/q25/q50/q75/q95, against 0.06 / 0.65 / 2.4 / 7.3 / 18% for the real refusal prompts at
L18 — the real prior's spread of dense and isolated prompts, with slightly more isolated ones
(the expensive kind).

    nice -n 10 python -m bench.neighbour_scale_bench                      # 10k..200k, ~4 min
    python -m bench.neighbour_scale_bench --sizes 10000,50000 --keep      # develop on small N

Writes bench/results/neighbour_scale.json; BENCHMARKS.md §13 has the table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from scope_core.api import (
    SIZE_ESTIMATED, SIZE_EXACT, SIZE_FOUND, ActivationCache, choose_eps, empirical_fcr, neighbour_balls, neighbour_lists,
    pairwise_distance, parse_site,
)

D, CHUNK, SITE, METRIC = 576, 1024, "L18", "cosine"
N_TOP, N_SUB, RANK = 48, 24, 64


def _params(seed: int) -> dict[str, np.ndarray]:
    """The prior's cluster structure (shared by every shard)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((D, RANK)))[0].T.astype(np.float32)
    shared = rng.standard_normal(D).astype(np.float32)
    return {"basis": basis, "shared": shared * 28.0 / np.linalg.norm(shared),
            "top": rng.standard_normal((N_TOP, RANK)).astype(np.float32) * 1.6,
            "sub": rng.standard_normal((N_TOP, N_SUB, RANK)).astype(np.float32) * 0.88,
            "w_top": rng.dirichlet(np.full(N_TOP, 0.3))}


def synthetic_shard(p: dict[str, np.ndarray], rows: int, seed: int, shard: int) -> tuple[np.ndarray, np.ndarray]:
    """`rows` activations [rows, D] float32 and their top-cluster labels, seeded per shard."""
    rng = np.random.default_rng([seed, shard])
    k = rng.choice(N_TOP, rows, p=p["w_top"])
    j = np.minimum(rng.zipf(1.6, rows) - 1, N_SUB - 1)
    spread = np.exp(rng.normal(0, 0.9, rows)).astype(np.float32)[:, None]
    low = p["top"][k] + p["sub"][k, j] + rng.standard_normal((rows, RANK), dtype=np.float32) * 0.48 * spread
    z = p["shared"] + low @ p["basis"] + rng.standard_normal((rows, D), dtype=np.float32) * 0.08 * spread
    return z.astype(np.float32), k


def write_cache(root: Path, n: int, seed: int = 0) -> ActivationCache:
    """A synthetic activation cache of n prompts at one site, written shard by shard."""
    cache = ActivationCache(root)
    if cache.is_complete():
        return cache
    root.mkdir(parents=True, exist_ok=True)
    p = _params(seed)
    n_chunks = (n + CHUNK - 1) // CHUNK
    labels = []
    for i in range(n_chunks):
        z, k = synthetic_shard(p, min(CHUNK, n - i * CHUNK), seed, i)
        save_file({SITE: torch.from_numpy(z)}, str(cache.chunk_path(i)))
        labels.append(k)
    np.save(root / "labels.npy", np.concatenate(labels))
    cache.manifest_path.write_text(json.dumps({"n": n, "texts": f"synthetic-{seed}", "sites": [SITE], "chunk_size": CHUNK, "n_chunks": n_chunks,
                                               "target": "synthetic", "system_prompt": None, "d_model": D, "trunk_layer": None}))
    cache.compute_stats()
    return cache


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _open(root: Path) -> tuple[ActivationCache, float]:
    cache = ActivationCache(root)
    eps = choose_eps(cache.stats()[SITE], SITE, METRIC, 0.05, None)
    return cache, eps.eps


def phase_balls(root: Path, check: int, seed: int) -> dict:
    """Build the ball representation; then check a subsample of rows against exact balls."""
    cache, eps = _open(root)
    site = parse_site(SITE)
    z = cache.site(site)[np.arange(cache.manifest()["n"])]  # as train.py gathers the training rows
    mean = cache.mean_scale(site)[0]
    before = _rss_mb()
    t = time.perf_counter()
    balls = neighbour_balls(z, eps, METRIC, mean, seed=seed)
    seconds = time.perf_counter() - t
    peak = _peak_mb()
    sizes = balls.sizes()
    kind = balls.size_kind if balls.size_kind is not None else np.zeros(len(z), dtype=np.int8)
    rows = np.random.default_rng(seed + 1).choice(len(z), min(check, len(z)), replace=False)
    inside = stored = exact_ok = n_exact = found = true_found = 0
    rel_err = []
    for a in range(0, len(rows), 16):  # 16 rows × N distances at a time: the check must not set the peak
        block = rows[a: a + 16]
        d = pairwise_distance(z[torch.from_numpy(block)], z, METRIC, mean)
        d[torch.arange(len(block)), torch.from_numpy(block)] = 0.0
        for r, dr in zip(block, d):
            true = int((dr <= eps).sum())
            mem = balls.members[balls.start[r]: balls.start[r + 1]]
            inside += int((dr[torch.from_numpy(mem.astype(np.int64))] <= eps).sum())
            stored += len(mem)
            if kind[r] == SIZE_EXACT:
                n_exact += 1
                exact_ok += int(sizes[r] == true)
            elif kind[r] == SIZE_ESTIMATED:
                rel_err.append(abs(sizes[r] - true) / true)
            elif kind[r] == SIZE_FOUND:
                found, true_found = found + int(sizes[r]), true_found + true
    return {
        "n": len(z), "eps": eps, "seconds": seconds, "peak_rss_mb": peak, "rss_before_mb": before,
        "whole_lists": balls.whole, "members_stored": int(len(balls.members)), "members_bytes_mb": balls.members.nbytes / 2**20,
        "ball_size_pct": {q: float(np.quantile(sizes, float(q)) / len(z) * 100) for q in ("0.05", "0.25", "0.5", "0.75", "0.95")},
        "rows_by_size_kind": {name: float((kind == k).mean()) for name, k in (("exact", SIZE_EXACT), ("estimated", SIZE_ESTIMATED), ("found", SIZE_FOUND))},
        "check_rows": len(rows), "stored_within_eps": inside / max(stored, 1), "exact_sizes_equal": exact_ok / n_exact if n_exact else None,
        "estimated_size_rel_err_median": float(np.median(rel_err)) if rel_err else None,
        "found_recall": found / true_found if true_found else None,
    }


def phase_reference(root: Path, queries: int, seed: int) -> dict:
    """The empirical reference's neighbour queries, then the whole empirical FCR."""
    cache, eps = _open(root)
    site = parse_site(SITE)
    pool = cache.load(site)  # as Scope.acts holds a site
    mean = cache.mean_scale(site)[0]
    labels = np.load(root / "labels.npy").tolist()
    rows = np.random.default_rng(seed + 2).choice(len(pool), queries, replace=False)
    zq = pool[torch.from_numpy(rows)]
    before = _rss_mb()
    t = time.perf_counter()
    lists = neighbour_lists(zq, pool, eps, METRIC, "hard", mean, exclude=rows.tolist())
    seconds = time.perf_counter() - t
    t = time.perf_counter()
    res = empirical_fcr([labels[r] for r in rows], zq, pool, labels, eps, METRIC, "hard", mean, exclude=rows.tolist())
    fcr_seconds = time.perf_counter() - t
    return {"n": len(pool), "queries": queries, "seconds": seconds, "empirical_fcr_seconds": fcr_seconds, "peak_rss_mb": _peak_mb(),
            "rss_before_mb": before, "neighbours_median": float(np.median([len(i) for i, _ in lists])), "fcr": res.fcr}


def _child(args: argparse.Namespace, phase: str, root: Path) -> dict:
    cmd = [sys.executable, "-m", "bench.neighbour_scale_bench", "--phase", phase, "--root", str(root), "--check", str(args.check),
           "--queries", str(args.queries), "--seed", str(args.seed)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,50000,100000,200000")
    ap.add_argument("--workdir", default="/tmp/autoscope_neighbour_bench")
    ap.add_argument("--out", default="bench/results/neighbour_scale.json")
    ap.add_argument("--check", type=int, default=200, help="rows checked against their exact balls")
    ap.add_argument("--queries", type=int, default=256, help="empirical-reference queries")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the synthetic caches")
    ap.add_argument("--phase", choices=["balls", "reference"], help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        fn = phase_balls if args.phase == "balls" else phase_reference
        print(json.dumps(fn(Path(args.root), args.check if args.phase == "balls" else args.queries, args.seed)))
        return
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        root = Path(args.workdir) / f"n{n}"
        t = time.perf_counter()
        write_cache(root, n, args.seed)
        written = time.perf_counter() - t
        balls, ref = _child(args, "balls", root), _child(args, "reference", root)
        rows.append({"n": n, "cache_write_s": written, "balls": balls, "reference": ref})
        b = balls
        print(f"N={n:>7}  ε {b['eps']:.4f}  balls {'whole' if b['whole_lists'] else '≤64  '} {b['seconds']:7.1f} s  peak {b['peak_rss_mb']:6.0f} MB  "
              f"members {b['members_bytes_mb']:6.1f} MB  within ε {b['stored_within_eps']:.4f}  found-recall {b['found_recall'] or float('nan'):.3f}  |  "
              f"reference {ref['queries']} q {ref['seconds']:5.1f} s (FCR {ref['empirical_fcr_seconds']:5.1f} s)  peak {ref['peak_rss_mb']:6.0f} MB",
              flush=True)
        if not args.keep:
            shutil.rmtree(root)
    meta = {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg(), "seed": args.seed,
            "metric": METRIC, "eps_quantile": 0.05, "d": D}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
