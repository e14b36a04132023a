"""How much batching can lift labelling throughput on this machine: the compute bound.

Why: the batch-labelling target asks for ≥ 4× the one-at-a-time rate. Batching can only
win back what one label at a time wastes; it cannot make the label's own arithmetic any
cheaper. So this benchmark measures, for each way of labelling, inside the judge's engine
(no HTTP, no client):

* the matmul work of one label (FLOPs of the linears and the head, counted by torch's
  `FlopCounterMode` over real labels, one at a time and in a batch of `--batch`);
* the rate one label at a time and in batches, alternated `--repeats` times (this host's
  speed drifts by ±20% within minutes), on oneDNN-prepacked weights as the engine runs;
* the ceiling: the same model's forward over a large block of tokens (`--ceiling-rows` ×
  `--ceiling-tokens`), the fastest this CPU runs its matmuls in a forward.

The largest speed-up any batching could give is ceiling ÷ (batched FLOPs per label) ÷
(one-at-a-time labels/s), and that is printed beside the measured speed-up. Prefix caches
are warmed first, one text alone and one batch of other texts, as a running server has them;
the one-at-a-time FLOPs are counted over the same texts that are timed. A scored label (the
channel labeller) is a forward of the text under each of K class contexts: one label at a
time is already a K-row forward, so its bound is low; an asked label is one row of ~25
tokens and two decoding steps, which one at a time use the CPU poorly.

    python -m bench.label_bound --labels 32 --batch 32 --repeats 2 --compare-plain
    python -m bench.label_bound --only reason:scored,task:scored

Writes bench/results/label_bound.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from agent.judging.channel import channel_context
from agent.judging.llm_feature import answer_models
from agent.prompts import messages
from features.llm_specs import SPECS
from scope_core.api import PriorConfig, build_examples, prepacked_linears
from serving.batch_engine import GenRequest
from serving.batch_server import build_service
from serving.prompt_scoring import PromptScorer


@contextmanager
def plain_linears():
    """Count FLOPs on plain `F.linear` (the counter does not see oneDNN's packed op)."""
    old = os.environ.get("AUTOSCOPE_PREPACK")
    os.environ["AUTOSCOPE_PREPACK"] = "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["AUTOSCOPE_PREPACK"]
        else:
            os.environ["AUTOSCOPE_PREPACK"] = old


def counted_flops(fn: Callable[[], object]) -> int:
    with plain_linears(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def labeller(svc, scorer: PromptScorer, feature: str, method: str) -> Callable[[list[str]], list]:
    """Label a list of texts in one engine call, exactly as the server would serve them."""
    spec = SPECS[feature]
    tok = svc.engine.tokenizer
    if method == "scored":
        classes = spec.channel_classes()
        assert classes is not None, f"{feature} has no channel classes"
        contexts = [channel_context(d) for d in classes.values()]
        n_context = [len(tok(c, add_special_tokens=False).input_ids) for c in contexts]

        def scored(texts: list[str]) -> list:
            """Each text's log-likelihood under every class context (the text's tokens only)."""
            prompts = [tok(c + " " + t.strip(), add_special_tokens=False).input_ids for t in texts for c in contexts]
            res = scorer.score(prompts, with_next=True)
            K = len(contexts)
            return [[sum(lp[n_context[k]:]) for k, (lp, _) in enumerate(res[i * K:(i + 1) * K])] for i in range(len(texts))]
        return scored
    labels = tuple(spec.labels) if spec.labels else None
    schema = answer_models(labels, spec.allow_null, 1)[0].model_json_schema()
    grammar = svc.grammar_for({"type": "json_schema", "json_schema": {"name": "label", "schema": schema, "strict": False}})

    def asked(texts: list[str]) -> list:
        reqs = [GenRequest(svc.prompt_ids(messages("label", question=spec.question, text=t, labels=list(labels) if labels else None,
                                                   allow_null=spec.allow_null)), 64, 0.0, grammar) for t in texts]
        return [r.text for r in svc.engine.generate(reqs)]
    return asked


def label_of(answer, method: str):
    """An asked answer is its text; a scored one is the index of the best class."""
    return answer if method == "asked" else max(range(len(answer)), key=answer.__getitem__)


def rate(fn: Callable[[list[str]], list], texts: list[str], batch: int, plain: bool = False) -> tuple[float, list]:
    """Labels/s labelling `texts` in engine calls of `batch` texts, on prepacked weights as
    the engine runs (`plain`: on MKL's `F.linear`, as before NOTES §31)."""
    out: list = []
    with plain_linears() if plain else nullcontext():
        t0 = time.perf_counter()
        for a in range(0, len(texts), batch):
            out += fn(texts[a: a + batch])
        return len(texts) / (time.perf_counter() - t0), out


def ceiling(svc, rows: int, tokens: int, repeats: int) -> float:
    """GFLOP/s of the model's forward (blocks and head) over rows × tokens random tokens."""
    model = svc.engine.model
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 40000, (rows, tokens), generator=g)

    def forward() -> None:
        hidden = model.base_model(input_ids=ids).last_hidden_state
        model.get_output_embeddings()(hidden)

    flops = counted_flops(forward)
    times = []
    with torch.no_grad(), prepacked_linears(model):
        forward()
        for _ in range(repeats):
            t0 = time.perf_counter()
            forward()
            times.append(time.perf_counter() - t0)
    return flops / min(times) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labels", type=int, default=32, help="texts per mode for the rates")
    ap.add_argument("--batch", type=int, default=32, help="labels per engine call in the batched mode")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--ceiling-rows", type=int, default=16)
    ap.add_argument("--ceiling-tokens", type=int, default=128)
    ap.add_argument("--compare-plain", action="store_true",
                    help="also time each mode on plain float32 linears (AUTOSCOPE_PREPACK=0), alternated with the prepacked ones")
    ap.add_argument("--only", default="", help="comma-separated feature:method pairs to run (default: all), e.g. reason:scored")
    ap.add_argument("--out", default="bench/results/label_bound.json")
    args = ap.parse_args()
    known = [f"{f}:{m}" for f in ("harmfulness", "reason", "task") for m in ("asked", "scored")]
    wanted = {w.strip() for w in args.only.split(",") if w.strip()} if args.only else set(known)
    if not wanted or wanted - set(known):  # before the model loads
        ap.error(f"--only {args.only!r}: unknown pair(s) {sorted(wanted - set(known)) or '(none given)'}; "
                 f"choose from {', '.join(known)}")
    torch.manual_seed(0)

    svc = build_service("embedded", "smollm2-135m-instruct", None, args.batch, 0.0)
    scorer = PromptScorer(svc.engine)
    need = args.labels + 4 * args.batch  # timed alone, timed batched (2), counted batched, warm-up
    refusal = [e.text for e in build_examples(PriorConfig(task="refusal", n=need, seed=1))][:need]
    icl = [e.text for e in build_examples(PriorConfig(task="icl", n=need, seed=1))][:need]
    cases = [("harmfulness", "asked", refusal), ("harmfulness", "scored", refusal), ("reason", "asked", refusal), ("reason", "scored", refusal),
             ("task", "asked", icl), ("task", "scored", icl)]
    cases = [c for c in cases if f"{c[0]}:{c[1]}" in wanted]

    top = max(ceiling(svc, args.ceiling_rows, args.ceiling_tokens, 3), ceiling(svc, 4 * args.ceiling_rows, args.ceiling_tokens // 4, 3))
    print(f"ceiling: the forward over {args.ceiling_rows} × {args.ceiling_tokens} or {4 * args.ceiling_rows} × "
          f"{args.ceiling_tokens // 4} tokens runs at {top:.0f} GFLOP/s at best", flush=True)
    results = []
    for feature, method, pool in cases:
        fn = labeller(svc, scorer, feature, method)
        L, B = args.labels, args.batch
        texts, timed_batched, counted_batched, warm = pool[:L], pool[L: L + 2 * B], pool[L + 2 * B: L + 3 * B], pool[L + 3 * B:]
        assert len(warm) >= 2, "the prior gave too few prompts"
        fn(warm[:1])  # warm the prefix caches as a running server has them: one request alone, one batch
        fn(warm[1: 1 + B])
        per_single = counted_flops(lambda: [fn([t]) for t in texts]) / len(texts)
        per_batch = counted_flops(lambda: fn(counted_batched)) / len(counted_batched)
        singles, batches, agree = [], [], []
        plain_singles, plain_batches, plain_agree = [], [], []
        for _ in range(args.repeats):
            with torch.no_grad():
                r1, a1 = rate(fn, texts, 1)
                rb, _ = rate(fn, timed_batched, args.batch)
                _, a2 = rate(fn, texts, args.batch)
                if args.compare_plain:
                    p1, b1 = rate(fn, texts, 1, plain=True)
                    pb, _ = rate(fn, timed_batched, args.batch, plain=True)
                    plain_singles.append(p1)
                    plain_batches.append(pb)
                    plain_agree.append(sum(label_of(x, method) == label_of(y, method) for x, y in zip(a1, b1)) / len(a1))
            singles.append(r1)
            batches.append(rb)
            agree.append(sum(label_of(x, method) == label_of(y, method) for x, y in zip(a1, a2)) / len(a1))
        s, b = statistics.median(singles), statistics.median(batches)
        row = {"feature": feature, "method": method, "single_labels_per_s": round(s, 3), "batched_labels_per_s": round(b, 3),
               "speedup": round(b / s, 2), "gflop_per_label_single": round(per_single / 1e9, 2),
               "gflop_per_label_batched": round(per_batch / 1e9, 2),
               "single_gflop_s": round(s * per_single / 1e9, 1), "batched_gflop_s": round(b * per_batch / 1e9, 1),
               "max_speedup": round(top * 1e9 / per_batch / s, 2), "batching_agreement": min(agree),
               "runs": {"single": [round(x, 3) for x in singles], "batched": [round(x, 3) for x in batches]}}
        print(f"{feature:11s} {method:6s}  one at a time {s:5.2f}/s  batched {b:5.2f}/s  = {b / s:4.2f}×   "
              f"work {per_single / 1e9:5.1f} → {per_batch / 1e9:5.1f} GFLOP/label   "
              f"{row['single_gflop_s']:5.0f} → {row['batched_gflop_s']:5.0f} GFLOP/s   "
              f"bound {row['max_speedup']:4.2f}×   labels equal {min(agree):.2f}", flush=True)
        if args.compare_plain:
            ps, pb = statistics.median(plain_singles), statistics.median(plain_batches)
            row["plain"] = {"single_labels_per_s": round(ps, 3), "batched_labels_per_s": round(pb, 3), "speedup": round(pb / ps, 2),
                            "labels_equal_to_prepacked": min(plain_agree),
                            "runs": {"single": [round(x, 3) for x in plain_singles], "batched": [round(x, 3) for x in plain_batches]}}
            print(f"{'':18s}  plain linears: one at a time {ps:5.2f}/s  batched {pb:5.2f}/s  = {pb / ps:4.2f}×   "
                  f"prepacked is {s / ps:4.2f}× / {b / pb:4.2f}× faster   labels equal {min(plain_agree):.2f}", flush=True)
        results.append(row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"ceiling_gflop_s": round(top, 1), "args": vars(args), "results": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
