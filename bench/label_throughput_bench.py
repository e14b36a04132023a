"""Batch labelling throughput on the embedded judge (issue: batch labelling, target ≥ 4×
the one-at-a-time rate), for both embedded engines, on fresh inputs.

For each built-in feature asked (`harmfulness`, `reason`), labels the same held-out
prompts of a trained run's prior:

* one at a time — one request in flight, one input per request — on llama.cpp (the
  engine `explore` uses) and on the batched engine;
* the batched engine with N requests in flight (`autoscope label`'s default is 32);
* llama.cpp's best batching before the batched engine existed: 8 inputs per request, 2 in
  flight;
* a rerun served from the judge cache.

Every mode starts from an empty judge cache. The batched engine's one-at-a-time and
32-in-flight modes alternate `--repeats` times and their medians are divided, since this
host's speed drifts by ±20% within minutes. Agreement with the one-at-a-time labels of the
same engine says whether batching changed any answer.

    python -m bench.label_throughput_bench --run default --labels 128 --repeats 2
    python -m bench.label_throughput_bench --run default --labels 64 --repeats 1 --features reason --method channel \
        --out bench/results/label_throughput_channel.json
    python -m bench.label_throughput_bench --task icl --labels 64 --repeats 2 --features task \
        --out bench/results/label_throughput_task.json

Writes bench/results/label_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from agent.judging.channel import channel_context, channel_label_many
from agent.judging.embedded_judge import EmbeddedJudge
from agent.judging.judge import JudgeClient, JudgeConfig
from agent.judging.llm_feature import label_many
from features.llm_specs import SPECS
from scope_core.api import PriorConfig, RunData, build_examples
from serving.launch import llamacpp_available


METHOD = "ask"  # set from --method


def run_mode(srv: EmbeddedJudge, feature: str, texts: list[str], concurrency: int, cache: str, batch: int = 1) -> tuple[float, list, JudgeClient]:
    """Labels/s and the labels, one fresh `JudgeClient` per mode."""
    spec = SPECS[feature]
    judge = JudgeClient(JudgeConfig(base_url=srv.url, model=srv.model, engine=srv.engine, concurrency=concurrency, cache_path=cache))  # type: ignore[arg-type]
    t = time.perf_counter()
    classes = spec.channel_classes() if METHOD == "channel" else None
    if classes:
        out = channel_label_many(judge, spec.name, classes, texts)
    else:
        out = label_many(judge, spec.name, spec.question, spec.labels, texts, spec.allow_null, spec.normaliser, batch)
    dt = time.perf_counter() - t
    return len(texts) / dt, [out[x].label for x in texts], judge


def run_prompt_by_prompt(srv: EmbeddedJudge, feature: str, texts: list[str], cache: str) -> tuple[float, list]:
    """The channel labeller with one prompt (one text under one class's context) per request,
    one request at a time: the naive way to score, for the batching comparison."""
    classes = SPECS[feature].channel_classes()
    assert classes is not None
    keys = list(classes)
    judge = JudgeClient(JudgeConfig(base_url=srv.url, model=srv.model, engine=srv.engine, concurrency=1, cache_path=cache))  # type: ignore[arg-type]
    t = time.perf_counter()
    labels = []
    for x in texts:
        scores = [judge.loglikelihoods([channel_context(classes[k])], " " + x.strip())[0] for k in keys]
        labels.append(keys[max(range(len(keys)), key=lambda i: scores[i])])
    return len(texts) / (time.perf_counter() - t), labels


def engine_log(path: Path, since: int) -> tuple[dict, int]:
    """Batch sizes and busy seconds the batched server logged after line `since`."""
    lines = [x for x in path.read_text().splitlines() if x.startswith("batch ")][since:] if path.exists() else []
    rows = [int(x.split("rows=")[1].split()[0]) for x in lines]
    busy = sum(float(x.split("seconds=")[1].split()[0]) for x in lines)
    return {"batches": len(rows), "mean_rows": sum(rows) / max(len(rows), 1), "engine_busy_s": busy}, since + len(lines)


def agree(a: list, b: list) -> float:
    return sum(x == y for x, y in zip(a, b)) / len(a)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="default")
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--task", choices=["refusal", "ioi", "icl"], default=None,
                    help="label prompts freshly drawn from this generated prior instead of a run's held-out prompts "
                         "(`task` labels need ICL prompts: --task icl)")
    ap.add_argument("--labels", type=int, default=128, help="held-out prompts labelled per mode")
    ap.add_argument("--features", default="harmfulness,reason")
    ap.add_argument("--concurrency", type=int, nargs="*", default=[8, 32], help="requests in flight for the batched engine")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-llamacpp", action="store_true")
    ap.add_argument("--method", choices=["ask", "channel"], default="ask",
                    help="ask the question, or score the classes (channel; reason only, batched engine only, and a "
                         "prompt-by-prompt mode is added)")
    ap.add_argument("--out", default="bench/results/label_throughput.json")
    args = ap.parse_args()
    global METHOD
    METHOD = args.method
    if args.method == "channel":
        args.skip_llamacpp = True  # llama.cpp's server returns no prompt log-probabilities
    if args.task:
        ex = build_examples(PriorConfig(task=args.task, n=args.labels, seed=1))[: args.labels]
    else:
        data = RunData.load(Path(args.runs_dir) / args.run / "data")
        ex = [data.examples[i] for i in data.heldout[: args.labels]]
    texts = [e.text for e in ex]
    res: dict = {"args": vars(args), "n": len(texts), "features": {}}
    features = [f.strip() for f in args.features.split(",") if f.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        fresh = iter(range(10_000))

        def cache() -> str:
            return f"{tmp}/c{next(fresh)}.sqlite"

        for feature in features:
            truth = [e.labels.get(feature) for e in ex]
            r: dict = {}
            log = Path(tmp) / f"batched-{feature}.log"
            with EmbeddedJudge(engine="batched", log_path=log) as srv:
                singles, fulls = [], []
                seen = engine_log(log, 0)[1]
                for _ in range(args.repeats):
                    s1, l1, _ = run_mode(srv, feature, texts, 1, cache())
                    seen = engine_log(log, seen)[1]
                    s32, l32, _ = run_mode(srv, feature, texts, max(args.concurrency), cache())
                    r["engine_log_last_full_run"], seen = engine_log(log, seen)
                    singles.append(s1)
                    fulls.append(s32)
                    print(f"[{feature}] batched engine: one at a time {s1:.2f}/s, {max(args.concurrency)} in flight {s32:.2f}/s", flush=True)
                r["batched_one_at_a_time"] = {"labels_per_s": statistics.median(singles), "runs": singles, "accuracy": agree(l1, truth)}
                r[f"batched_concurrency{max(args.concurrency)}"] = {"labels_per_s": statistics.median(fulls), "runs": fulls,
                                                                    "agreement_with_one_at_a_time": agree(l32, l1), "accuracy": agree(l32, truth)}
                for c in args.concurrency:
                    if c == max(args.concurrency):
                        continue
                    sc, lc, _ = run_mode(srv, feature, texts, c, cache())
                    r[f"batched_concurrency{c}"] = {"labels_per_s": sc, "agreement_with_one_at_a_time": agree(lc, l1)}
                    print(f"[{feature}] batched engine: {c} in flight {sc:.2f}/s", flush=True)
                if args.method == "channel":
                    sp, lp = run_prompt_by_prompt(srv, feature, texts, cache())
                    r["batched_one_prompt_at_a_time"] = {"labels_per_s": sp, "agreement_with_one_at_a_time": agree(lp, l1)}
                    print(f"[{feature}] batched engine: one prompt at a time {sp:.2f}/s", flush=True)
                c_rerun = cache()
                run_mode(srv, feature, texts, max(args.concurrency), c_rerun)
                sr, _, judge = run_mode(srv, feature, texts, max(args.concurrency), c_rerun)
                r["rerun_from_cache"] = {"labels_per_s": sr, "calls": judge.calls}
                batched_labels = l1
            if llamacpp_available() and not args.skip_llamacpp:
                with EmbeddedJudge(engine="llamacpp") as srv:
                    s1, ll1, _ = run_mode(srv, feature, texts, 1, cache())
                    sb, llb, _ = run_mode(srv, feature, texts, 2, cache(), batch=8)
                    r["llamacpp_one_at_a_time"] = {"labels_per_s": s1, "accuracy": agree(ll1, truth),
                                                   "agreement_with_batched_engine": agree(ll1, batched_labels)}
                    r["llamacpp_batch8_concurrency2"] = {"labels_per_s": sb, "agreement_with_one_at_a_time": agree(llb, ll1)}
                    print(f"[{feature}] llama.cpp: one at a time {s1:.2f}/s, 8 per request x 2 in flight {sb:.2f}/s", flush=True)
            top = r[f"batched_concurrency{max(args.concurrency)}"]["labels_per_s"]
            r["speedup_vs_batched_one_at_a_time"] = top / r["batched_one_at_a_time"]["labels_per_s"]
            if "batched_one_prompt_at_a_time" in r:
                r["speedup_vs_one_prompt_at_a_time"] = top / r["batched_one_prompt_at_a_time"]["labels_per_s"]
            if "llamacpp_one_at_a_time" in r:
                r["speedup_vs_llamacpp_one_at_a_time"] = top / r["llamacpp_one_at_a_time"]["labels_per_s"]
            res["features"][feature] = r
            print(json.dumps(r, indent=1), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
