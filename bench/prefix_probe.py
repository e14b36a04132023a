"""Retrieval in text, not in activation: does an opening taken from a ball member lower refusal?

Issue 24's last untried lever. Recipe 3 on the real refusal sets is refused about as often as
copying each query's 16 nearest training prompts (BENCHMARKS §34): it loses to that lookup where
the ε-ball is full (0.09–0.13 against 0) and beats it where the ball is sparse. Anchoring a
sample's *condition* on a ball member (`--anchors ball`) makes refusal worse (0.48–0.60 at ε 0.1 on
the 60 random queries, against 0.28–0.40 query-anchored), since a member up to ε away spreads its
samples further. This probe keeps the condition on ẑ and takes instead the *opening* of a ball
member's text:

    P(x | z(x) ∈ B) = P(opening | B) · P(rest | opening, B)

approximated with the opening drawn from the ball's own prompts (the empirical draw the reference
uses) and the rest written by the generator conditioned on ẑ. Each sample draws, as `ball_anchors` does,
uniformly from ẑ itself and the ball's training prompts (the query's own left out); a member
forces its first c tokens, c uniform in 1..⌈share·L⌉ of its L tokens; ẑ itself (or an empty
ball) leaves the sample as the plain sampler's.

    python -m bench.prefix_probe --run real_r2_cos_avg099_mlp --openings ball|nearest|none --share 0.5 [--sparse-only] [--seed 1] [--temperature T]

Prints refusal, accepted-novel and copies on the 60 random queries of `real_data_bench` (ε 0.1,
same query draw for `--seed`), per density stratum, and the harmfulness FCR gap on the 40 harmful
queries; writes bench/results/prefix_probe_<run>_<openings>[_sparse]_<share>_t<T>[_<site>][_eps<E>][_n<N>][_seed<S>].json
(a part in brackets only where it differs from the default). About 2–2.5 minutes here.

Result (BENCHMARKS §38): forced everywhere, openings raise refusal on full balls by about two thirds and lower it on
sparse ones (no change on the whole); on sparse balls only (`--sparse-only`) they lower it by about 0.02 over five
paired cells (0.342 → 0.322), the size of a cooler temperature's gain. Not a default.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

from bench.real_data_bench import fcr_row, pick_queries, subset
from features.registry import get_feature
from scope_core.api import SampleRun, Scope, assemble, drop_rows, load_target, neighbour_lists, pairwise_distance, verify


@torch.no_grad()
def decode_forced(scope: Scope, site_name: str, z: torch.Tensor, forced: list[list[int]], temperature: float,
                  max_new_tokens: int, batch_size: int, seed: int) -> list[list[int]]:
    """Token ids per row: row r conditioned on z[r], its first len(forced[r]) tokens forced.

    The plain decoding of `decoding.decode_in_batches` (fixed batches, no fused verification,
    no sampling noise), with the drawn token replaced by the forced one while a row still has
    forced tokens. Tokens are drawn by `torch.multinomial` on the CPU: the same distribution as
    `decode_in_batches`, from a random stream of its own (the one §38's rows were drawn with)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, not {temperature}")
    inv = scope.inverter
    bb = inv.backbone
    g = torch.Generator().manual_seed(seed)
    sidx = inv.site_index(site_name)
    out: list[list[int]] = [[] for _ in forced]
    for first in range(0, len(forced), batch_size):
        rows = list(range(first, min(first + batch_size, len(forced))))
        c = inv.encode(z[rows], torch.full((len(rows),), sidx, dtype=torch.long))
        cache, inp = inv.start_cache(c, len(rows))
        cond = inv.condition(c)
        live = torch.tensor(rows)
        for step in range(max_new_tokens):
            with inv.conditioned(cond):
                logits = bb.logits(cache, input_ids=inp)[:, -1, :].float()
            probs = torch.softmax(logits / temperature, -1).cpu()  # the seeded generator is the CPU's
            nxt = bb.out_to_external(torch.multinomial(probs, 1, generator=g).squeeze(1))  # tokenizer ids, on the CPU
            for j, r in enumerate(live.tolist()):
                if step < len(forced[r]):
                    nxt[j] = forced[r][step]
                out[r].append(int(nxt[j]))
            done = nxt == bb.end_id
            if bool(done.all()):
                break
            if bool(done.any()):
                keep = drop_rows(cache, done)  # new row j was row keep[j]
                live, nxt = live[keep], nxt[keep]
                cond = cond.select(keep)
            inp = bb.to_internal(nxt)[:, None].to(bb.device)
    return out


def candidates(scope: Scope, site, zq: torch.Tensor, idx: list[int], eps, openings: str, n: int) -> list[np.ndarray]:
    """Per query, the training prompts (positions in the training split) whose openings may be
    forced: the ε-ball's (`ball`), the n nearest as the lookup takes them, in the ball or not
    (`nearest`), or none (the control). The query's own prompt is always left out."""
    if openings == "none":
        return [np.zeros(0, dtype=np.int64) for _ in idx]
    train = list(scope.data.train)
    position = {int(i): k for k, i in enumerate(train)}
    pool = scope.acts(site)[torch.tensor(train)]
    if openings == "ball":
        return [m for m, _ in neighbour_lists(zq, pool, eps.eps, eps.metric, "hard", scope.mean(site),
                                              exclude=[position.get(i) for i in idx])]
    d_all = pairwise_distance(zq, pool, eps.metric, scope.mean(site))
    for q, i in enumerate(idx):
        if position.get(i) is not None:
            d_all[q, position[i]] = float("inf")
    return [row.numpy() for row in d_all.topk(n, largest=False).indices]


def sparse_only(scope: Scope, site, zq: torch.Tensor, idx: list[int], eps, lists: list[np.ndarray], n: int) -> list[np.ndarray]:
    """`lists` emptied for every query whose ε-ball holds n or more training prompts (the query's
    own left out): there the plain sampler is refused 0.11–0.12 and a member's opening raised that
    by about two thirds (BENCHMARKS §38), where in sparse balls it lowered refusal on both draws."""
    balls = candidates(scope, site, zq, idx, eps, "ball", n)
    return [m if len(ball) < n else np.zeros(0, dtype=np.int64) for m, ball in zip(lists, balls)]


def forced_openings(scope: Scope, lists: list[np.ndarray], n: int, share: float, seed: int) -> list[list[int]]:
    """n rows a query: each draws uniformly from ẑ itself (nothing forced) and the query's
    candidates, as `ball_anchors` draws; a candidate forces its first c tokens, c uniform in
    1..⌈share·L⌉ of its L tokens."""
    bb, train = scope.inverter.backbone, list(scope.data.train)
    rng = np.random.default_rng(seed + 11)
    forced: list[list[int]] = []
    for members in lists:
        for pick in rng.integers(-1, len(members), n):  # -1: ẑ itself, the plain sample
            if pick < 0:
                forced.append([])
                continue
            ids = bb.encode([scope.data.examples[train[members[pick]]].text], scope.sample_token_cap)[0][:-1]
            forced.append(ids[: int(rng.integers(1, max(1, int(np.ceil(share * len(ids)))) + 1))])
    return forced


def forced_share(forced: list[list[int]], idx: list[int], rand: list[int], n: int) -> float:
    """The share of the random queries' samples with a forced opening (the queries every other
    figure of the probe is read on; the harmful ones are sampled too, for the FCR)."""
    keep = set(rand)
    rows = [f for q, i in enumerate(idx) if i in keep for f in forced[q * n:(q + 1) * n]]
    return float(np.mean([bool(f) for f in rows]))


def as_run(scope: Scope, site, eps, idx: list[int], texts: list[str], dists: list[float], n: int, temperature: float) -> SampleRun:
    """The probe's samples as a hard-kernel `SampleRun` (n a query, in query order), assembled as
    `sample`'s are, so that they are summarised and scored the same way."""
    queries = assemble([scope.data.examples[i].text for i in idx], idx, [texts[q * n:(q + 1) * n] for q in range(len(idx))],
                       [dists[q * n:(q + 1) * n] for q in range(len(idx))], eps.eps, "hard", scope.train_texts)
    return SampleRun(site=site.name, eps=eps, metric=eps.metric, kernel="hard", temperature=temperature, guidance=1.0, queries=queries, timing={})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--site", default="L18")
    ap.add_argument("--eps", type=float, default=0.1, help="the ball the openings come from, and acceptance")
    ap.add_argument("--share", type=float, default=0.5, help="an opening is at most this share of the member's tokens")
    ap.add_argument("--openings", choices=("ball", "nearest", "none"), default="ball",
                    help="ball: uniform over the ε-ball's training prompts; nearest: the n nearest training prompts; "
                    "none: no opening forced (this decoder's plain sampler, the control)")
    ap.add_argument("--sparse-only", action="store_true",
                    help="force openings only where the ε-ball holds fewer than n training prompts (§34's sparse stratum)")
    ap.add_argument("--temperature", type=float, default=0.75)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0, help="query draw and sampling seed, as real_data_bench --seed")
    ap.add_argument("--batch-size", type=int, default=96)
    args = ap.parse_args()
    t0 = time.perf_counter()
    scope = Scope(Path(args.runs_dir) / args.run, target=load_target())
    site = scope.site(args.site)
    rand, harm = pick_queries(scope, 60, 40, args.seed)
    idx = sorted(set(rand) | set(harm))
    eps = scope.eps(site, eps=args.eps)
    zq = scope.acts(site)[torch.tensor(idx)]
    lists = candidates(scope, site, zq, idx, eps, args.openings, args.n)
    if args.sparse_only:
        lists = sparse_only(scope, site, zq, idx, eps, lists, args.n)
    forced = forced_openings(scope, lists, args.n, args.share, args.seed)
    z = zq.repeat_interleave(args.n, 0)
    toks = decode_forced(scope, site.name, z, forced, args.temperature, scope.sample_token_cap, args.batch_size, args.seed)
    texts = [scope.inverter.backbone.decode(t) for t in toks]
    dists = [row[0] for row in verify(scope.target, site, z, [[t] for t in texts], eps.metric, scope.mean(site), progress=True)]
    run = scope.with_prior_nearest(as_run(scope, site, eps, idx, texts, dists, args.n, args.temperature), site, zq, idx)
    summary = scope.sampler_summary(subset(run, rand))
    harmfulness = get_feature("harmfulness", scope.run_dir, scope.data)
    out = {"run": args.run, "site": args.site, "openings": args.openings, "sparse_only": args.sparse_only, "eps": eps.eps, "share": args.share,
           "temperature": args.temperature, "seed": args.seed, "forced_share_of_samples": forced_share(forced, idx, rand, args.n),
           "random_queries": summary, "fcr_harmful": fcr_row(scope, harmfulness, subset(run, harm), site),
           "wall_s": time.perf_counter() - t0}
    for k, v in summary.items():
        if k.startswith(("refusal", "accepted_novel", "exact_cop", "near_cop", "distinct", "lookup")):
            print(f"{k:>40}: {v:.4f}")
    f = out["fcr_harmful"]
    print(f"harmful FCR {f['generator']:.3f} against empirical {f['empirical']:.3f}: gap {f['gap']:+.3f} {f['gap_ci']}")
    name = (f"{args.openings}{'_sparse' if args.sparse_only else ''}_{args.share:g}_t{args.temperature:g}"
            + (f"_{args.site}" if args.site != "L18" else "") + (f"_eps{args.eps:g}" if args.eps != 0.1 else "")
            + (f"_n{args.n}" if args.n != 16 else ""))
    path = Path("bench/results") / f"prefix_probe_{args.run}_{name}{'_seed' + str(args.seed) if args.seed else ''}.json"
    path.write_text(json.dumps(out, indent=1, default=float))
    (Path(args.runs_dir) / args.run / f"bench_prefix_samples_{name}_s{args.seed}.json").write_text(run.model_dump_json())
    print(f"wrote {path} ({out['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
