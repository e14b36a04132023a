"""Sampler benchmark (issue: the InverseScope core, item 9).

One run, held-out queries, sites L6/L12/L18/L24, a stated ε per site. For our generator,
the InversionView baseline, the unconditional backbone, random prior prompts and a
nearest-training-prompt lookup: refusal rate, accepted-novel samples per 100, exact-copy
rate, distinct samples per query; held-out conditional loss against the unconditional;
harmfulness FCR by generator against the empirical-neighbour FCR; verified samples/s
against the target-forward bound; caching tokens/s against a raw truncated forward;
wall time of each training phase.

    python bench/sampler_bench.py --minutes 8 --queries 24 --n 8

Prints a table and writes bench/results/sampler.json. Everything is cached under
runs/<run> (rerunning skips finished training).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from features.registry import get_feature
from scope_core.api import (
    PriorConfig, QueryResult, Sample, SampleRun, Scope, TrainConfig, choose_eps, forward_suffixes, kernel_weight,
    length_buckets, load_target, pairwise_distance, parse_site, prepacked_linears, summarise, train,
)


def raw_truncated_forward_tps(target, texts: list[str], layer: int, batch_size: int = 32, prepacked: bool = False) -> float:
    """Tokens/s of the bare model forward through blocks 0..layer (no hooks, no recording);
    `prepacked`: with the oneDNN-prepacked linears the tool's own target forwards use
    (`scope_core.fast_linear`) — the stricter bound, since it is the faster forward."""
    base = target.model.model
    full = base.layers
    suffixes = target.suffix_ids(texts)
    batches = length_buckets([len(s) for s in suffixes], batch_size)
    from scope_core.api import pad_right

    target.prefix_cache(1)  # computed with the whole stack, before it is cut
    base.layers = torch.nn.ModuleList(list(full)[: layer + 1])
    try:
        t0, tok = time.perf_counter(), 0
        with torch.no_grad(), (prepacked_linears(target.model) if prepacked else nullcontext()):
            for idx in batches:
                ids, lengths = pad_right([suffixes[i] for i in idx], target.tokenizer.pad_token_id)
                base(input_ids=ids, past_key_values=target.prefix_cache(len(idx)), use_cache=True)
                tok += int(lengths.sum())
        return tok / (time.perf_counter() - t0)
    finally:
        base.layers = full


def extract_tps(target, texts: list[str], sites, batch_size: int = 32) -> float:
    suffixes = target.suffix_ids(texts)
    t0 = time.perf_counter()
    for idx in length_buckets([len(s) for s in suffixes], batch_size):
        forward_suffixes(target, [suffixes[i] for i in idx], sites)
    return sum(len(s) for s in suffixes) / (time.perf_counter() - t0)


def reference_run(scope: Scope, site, idx: list[int], eps, n: int, kind: str, seed: int) -> SampleRun:
    """Random prior prompts or the n nearest training prompts, scored like samples."""
    pool = scope.acts(site)
    train_idx = torch.tensor(scope.data.train)
    zq = pool[torch.tensor(idx)]
    mean = scope.mean(site)
    d_all = pairwise_distance(zq, pool[train_idx], eps.metric, mean)
    rng = random.Random(seed)
    out = []
    for q, i in enumerate(idx):
        if kind == "random":
            pick = [rng.randrange(len(train_idx)) for _ in range(n)]
        else:
            pick = torch.topk(-d_all[q], n).indices.tolist()
        samples = []
        for j in pick:
            d = float(d_all[q, j])
            samples.append(Sample(text=scope.data.examples[int(train_idx[j])].text, distance=d,
                                  weight=float(kernel_weight(torch.tensor(d), eps.eps, "hard")), accepted=d < eps.eps, is_copy=True))
        out.append(QueryResult(query=scope.data.examples[i].text, index=i, samples=samples))
    return SampleRun(site=site.name, eps=eps, metric=eps.metric, kernel="hard", temperature=0, queries=out, timing={})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="bench")
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--sites", default="L6,L12,L18,L24")
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--n-prompts", type=int, default=12000)
    ap.add_argument("--queries", type=int, default=24, help="held-out queries per site (half harmful)")
    ap.add_argument("--n", type=int, default=8, help="samples per query")
    ap.add_argument("--eps-l18", type=float, default=0.1, help="ε at L18; other sites use the same pairwise quantile")
    ap.add_argument("--out", default="bench/results/sampler.json")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t_all = time.perf_counter()
    target = load_target()
    common = dict(runs_dir=args.runs_dir, prior=PriorConfig(task="refusal", n=args.n_prompts, heldout=500), sites=args.sites,
                  minutes=args.minutes, seed=args.seed)
    results: dict = {"args": vars(args)}

    print("== training ours (InverseScope, frozen SmolLM2 backbone)", flush=True)
    ours = train(TrainConfig(run=args.run, **common), target=target)
    results["train_ours"] = ours.model_dump()
    # the baseline shares the prompts and the activation cache
    iv_dir = Path(args.runs_dir) / f"{args.run}_iv"
    iv_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("data", "acts"):
        link = iv_dir / sub
        if not link.exists():
            link.symlink_to((Path(args.runs_dir) / args.run / sub).resolve())
    print("== training baseline (InversionView: condition as one extra key/value per layer, no noise)", flush=True)
    base = train(TrainConfig(run=f"{args.run}_iv", arch="inversionview", **common), target=target)
    results["train_baseline"] = base.model_dump()

    scope = Scope(Path(args.runs_dir) / args.run, target=target)
    scope_iv = Scope(iv_dir, target=target)
    harm = get_feature("harmfulness", scope.run_dir, scope.data)
    results["harmfulness_labeller"] = harm.info
    stats = scope.cache.stats()
    q_star = choose_eps(stats["L18"], "L18", "cosine", eps=args.eps_l18).quantile if "L18" in stats else 0.02
    rng = random.Random(args.seed)
    harmful = [i for i in scope.data.heldout if scope.data.examples[i].labels.get("harmfulness") == "harmful"]
    harmless = [i for i in scope.data.heldout if scope.data.examples[i].labels.get("harmfulness") == "harmless"]
    idx = sorted(rng.sample(harmful, args.queries // 2) + rng.sample(harmless, args.queries - args.queries // 2))
    results["sites"] = {}
    all_texts = scope.data.texts
    for name in args.sites.split(","):
        site = parse_site(name)
        eps = scope.eps(site, eps=args.eps_l18) if name == "L18" else scope.eps(site, quantile=q_star)
        print(f"== {eps.describe()}", flush=True)
        runs = {
            "ours": scope.sample(site, indices=idx, n=args.n, eps=eps, seed=args.seed, progress=True),
            "baseline": scope_iv.sample(site, indices=idx, n=args.n, eps=eps, seed=args.seed, progress=True, sampling_noise=eps.eps),
            "unconditional": scope.sample(site, indices=idx, n=args.n, eps=eps, seed=args.seed, conditional=False, progress=True),
            "random_prior": reference_run(scope, site, idx, eps, args.n, "random", args.seed),
            "lookup_nearest": reference_run(scope, site, idx, eps, args.n, "nearest", args.seed),
        }
        site_res: dict = {"eps": eps.model_dump(),  # ours at the run's temperature for the site; the baseline and references at 1
                          "temperature": {k: r.temperature for k, r in runs.items() if hasattr(r, "temperature")}}
        for k, r in runs.items():
            summ = summarise(r)
            if r.timing:
                gen, ver = r.timing["generate_s"], r.timing["verify_s"]
                summ["verified_samples_per_s"] = r.timing["samples"] / (gen + ver)
                summ["generate_share"] = gen / (gen + ver)
                summ["verify_tokens_per_sample"] = r.timing["verify_tokens"] / r.timing["samples"]
            site_res[k] = summ
        # harmfulness FCR: generator vs empirical neighbours (all queries, and harmful only)
        for subset, qsel in (("all", idx), ("harmful", [i for i in idx if i in set(harmful)])):
            sub = [q for q in runs["ours"].queries if q.index in set(qsel)]
            sr = runs["ours"].model_copy(update={"queries": sub})
            rep = scope.score(harm, "harmfulness", sr, site)
            site_res[f"fcr_harmfulness_{subset}"] = {"generator": rep.generator.model_dump(exclude={"per_query"}),
                                                     "empirical": rep.empirical.model_dump(exclude={"per_query"}) if rep.empirical else None}
        # throughput bound: truncated target forward tokens/s over the samples themselves
        texts = [s.text for q in runs["ours"].queries for s in q.samples if s.text.strip()][:256]
        tps = raw_truncated_forward_tps(target, texts, site.layer)
        tok_per_sample = site_res["ours"]["verify_tokens_per_sample"]
        site_res["throughput"] = {"raw_truncated_forward_tokens_per_s": tps, "verification_bound_samples_per_s": tps / tok_per_sample,
                                  "ours_verified_samples_per_s": site_res["ours"]["verified_samples_per_s"]}
        site_res["throughput"]["ratio_to_verification_bound"] = (site_res["ours"]["verified_samples_per_s"]
                                                                 / site_res["throughput"]["verification_bound_samples_per_s"])
        gen_s, ver_s = runs["ours"].timing["generate_s"], runs["ours"].timing["verify_s"]
        n_s = runs["ours"].timing["samples"]
        site_res["throughput"]["generation_only_samples_per_s"] = n_s / gen_s
        results["sites"][name] = site_res
        print(json.dumps({k: v for k, v in site_res.items() if k in ("ours", "baseline", "unconditional", "random_prior", "lookup_nearest")},
                         indent=1), flush=True)

    # caching throughput against the raw truncated forward, on 1024 prior prompts through the deepest site
    deepest = max(parse_site(s).layer for s in args.sites.split(","))
    sample_texts = all_texts[:1024]
    sites = [parse_site(s) for s in args.sites.split(",")]
    results["caching"] = {"raw_truncated_forward_tokens_per_s": raw_truncated_forward_tps(target, sample_texts, deepest),
                          "extract_tokens_per_s": extract_tps(target, sample_texts, sites), "deepest_layer": deepest}
    results["caching"]["ratio"] = results["caching"]["extract_tokens_per_s"] / results["caching"]["raw_truncated_forward_tokens_per_s"]
    results["wall_s"] = time.perf_counter() - t_all
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1, default=float))
    print(json.dumps({"caching": results["caching"], "train_ours": ours.phases, "train_baseline": base.phases}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
