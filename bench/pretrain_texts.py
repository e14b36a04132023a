"""Texts a trained run writes itself, as a pre-training prior for `train --init-from` (issue 24,
NOTES §43): would pairs the generator or its backbone make stand in for more real prompts?

    python -m bench.pretrain_texts --run real_r2 --source backbone --n 6000 --out runs/aux/backbone_texts_6k.json
    python -m bench.pretrain_texts --run real_r2 --source self --out runs/aux/self_texts_r2.json
    python -m bench.pretrain_texts --run real_r2_cos_avg099 --source truncations --out runs/aux/trunc_texts.json
    python -m bench.pretrain_texts --run real_r2_cos_avg099_mlp --source edits --out runs/aux/edit_texts.json

`backbone`: `--n` user turns from the run's unconditioned backbone (its output vocabulary).
`self`: one conditional sample per training prompt, conditioned on that prompt's activation.
`truncations`: each training prompt of four words or more cut at a random word boundary, keeping
at least half its words: real text the target is re-run on, so each pair is exact, and near
each prompt of the prior without being it. Only the training split is cut, never the
validation or held-out prompts the benchmarks query.
`edits`: three per training prompt of four words or more — a truncation as above (drawn with
seed + 1), the prompt with one word deleted, and with a span of two or three words deleted — so
the pre-training prior is nearly three times the user's (edits that coincide are dropped: 18,718
of 19,239 on the real sets) and every pair still exact (NOTES §61). Words are split on
whitespace and joined with single spaces, so a multi-line prompt's edits are on one line.
Empty samples, repeats and copies of prior prompts are dropped; the rest is written as a prompt
file (`instruction` fields) that `autoscope train --data` reads.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from scope_core.api import Scope, generate, parse_site


def truncations(texts: list[str], seed: int) -> list[str]:
    """One cut per text of four words or more, at a word boundary chosen uniformly from half its
    words to all but the last: shorter real requests whose activations the target gives exactly."""
    rng = random.Random(seed)
    out = []
    for t in texts:
        words = t.split()
        if len(words) >= 4:
            out.append(" ".join(words[: rng.randint((len(words) + 1) // 2, len(words) - 1)]))
    return out


def edits(texts: list[str], seed: int) -> list[str]:
    """Three exact-pair neighbours of each text of four words or more: a truncation (as
    `truncations`), one word deleted, and a span of two or three words deleted (at least three
    words kept, so a four-word prompt loses one). Why: NOTES §57's one truncation a prompt bought
    a little; three edits a prompt test whether more pairs near the prior's own prompts buy what
    18.8k unrelated Alpaca prompts did (they do not: NOTES §61)."""
    rng = random.Random(seed)
    out = truncations(texts, seed + 1)
    for t in texts:
        words = t.split()
        if len(words) < 4:
            continue
        i = rng.randrange(len(words))
        out.append(" ".join(words[:i] + words[i + 1:]))
        span = min(rng.choice((2, 3)), len(words) - 3)
        j = rng.randrange(len(words) - span + 1)
        out.append(" ".join(words[:j] + words[j + span:]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, help="a trained run (its prior and generator)")
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--source", choices=("backbone", "self", "truncations", "edits"), required=True)
    ap.add_argument("--site", default="L18", help="the site whose activations condition `self` samples")
    ap.add_argument("--n", type=int, default=6000, help="texts from the backbone (`self`: one per training prompt)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    scope = Scope(Path(args.runs_dir) / args.run)
    t = time.perf_counter()
    cap = scope.sample_token_cap
    train = [scope.data.examples[i].text for i in scope.data.train]
    if args.source in ("truncations", "edits"):
        texts = (truncations if args.source == "truncations" else edits)(train, args.seed)
    elif args.source == "backbone":
        texts = generate(scope.unconditional_generator, None, None, 1, args.n, max_new_tokens=cap, seed=args.seed, progress=True)[0]
    else:
        idx = list(scope.data.train)
        z = scope.acts(parse_site(args.site))[torch.tensor(idx)]
        texts = [q[0] for q in generate(scope.inverter, args.site, z, len(idx), 1, max_new_tokens=cap, seed=args.seed, progress=True)]
    prior = {e.text for e in scope.data.examples}
    keep = sorted({x.strip() for x in texts if x.strip()} - prior)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps([{"instruction": x} for x in keep]))
    print(f"{args.source}: {len(texts)} sampled in {time.perf_counter() - t:.0f} s, {len(keep)} kept -> {args.out}")


if __name__ == "__main__":
    main()
