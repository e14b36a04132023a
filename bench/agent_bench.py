"""Agent benchmarks (issue: the agent loop).

1. LLM-feature labelling throughput on the embedded judge: labels/s one at a time vs with
   concurrency, and the cache hit rate on a rerun (should be 100%).
2. `explore --site L18 --budget 20` wall time after training, with time per phase. The
   judge's "done" and the κ-patience stop are switched off so that all 20 hypotheses are
   scored (the small embedded judge says "done" at random).

    python bench/agent_bench.py --run default --labels 64 --budget 20

Writes bench/results/agent.json. Needs llama-cpp-python[server] (or AUTOSCOPE_JUDGE_URL).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from agent.judging.embedded_judge import EmbeddedJudge
from agent.judging.judge import JudgeClient, JudgeConfig
from agent.judging.llm_feature import llm_feature
from agent.loop import ExploreConfig, explore
from scope_core.api import RunData

QUESTION = "Is this instruction asking for something harmful?"


def label_rate(url: str, model: str, engine: str, texts: list[str], concurrency: int, cache: str,
               batch: int = 1) -> tuple[float, JudgeClient, list[str | None]]:
    judge = JudgeClient(JudgeConfig(base_url=url, model=model, engine=engine, concurrency=concurrency, cache_path=cache))
    feat = llm_feature(judge, "harmfulness", QUESTION, ["harmful", "harmless"], allow_null=False, batch=batch)
    t = time.perf_counter()
    labels = feat(texts)
    dt = time.perf_counter() - t
    assert len(labels) == len(texts)
    return len(texts) / dt, judge, labels


def _agree(a: list, b: list) -> float:
    return sum(x == y for x, y in zip(a, b)) / len(a)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="bench2")
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--labels", type=int, default=48)
    ap.add_argument("--budget", type=int, default=20)
    ap.add_argument("--out", default="bench/results/agent.json")
    ap.add_argument("--skip-explore", action="store_true")
    ap.add_argument("--skip-labelling", action="store_true")
    ap.add_argument("--batches", type=int, nargs="*", default=[8, 16], help="batch sizes to measure (inputs per request)")
    args = ap.parse_args()
    data = RunData.load(Path(args.runs_dir) / args.run / "data")
    texts = [data.examples[i].text for i in data.heldout[: args.labels]]
    res: dict = {"args": vars(args)}
    if not args.skip_labelling:
        with EmbeddedJudge(engine="llamacpp") as srv, tempfile.TemporaryDirectory() as tmp:
            truth = [data.examples[i].labels.get("harmfulness") for i in data.heldout[: args.labels]]
            r1, _, l1 = label_rate(srv.url, srv.model, srv.engine, texts, 1, f"{tmp}/c1.sqlite")
            r4, _, l4 = label_rate(srv.url, srv.model, srv.engine, texts, 4, f"{tmp}/c4.sqlite")
            rr, judge, _ = label_rate(srv.url, srv.model, srv.engine, texts, 4, f"{tmp}/c4.sqlite")
            res["labelling"] = {"n": len(texts), "one_at_a_time_labels_per_s": r1, "concurrency4_labels_per_s": r4, "speedup_concurrency4": r4 / r1,
                                "accuracy_one_at_a_time": _agree(l1, truth),
                                "rerun_labels_per_s": rr, "rerun_cache_hit_rate": judge.cache.hits / max(judge.cache.hits + judge.cache.misses, 1),
                                "rerun_calls": judge.calls}
            for b in args.batches:
                rb, _, lb = label_rate(srv.url, srv.model, srv.engine, texts, 2, f"{tmp}/b{b}.sqlite", batch=b)
                res["labelling"][f"batch{b}_concurrency2"] = {"labels_per_s": rb, "speedup": rb / r1, "agreement_with_one_at_a_time": _agree(lb, l1),
                                                               "accuracy": _agree(lb, truth)}
            print(json.dumps(res["labelling"], indent=1), flush=True)
    if not args.skip_explore:
        # As `autoscope explore` runs with no judge configured: it starts its own embedded
        # judges (llama.cpp to propose, the batched engine to label), inside the wall time.
        with tempfile.TemporaryDirectory() as tmp:
            cfg = ExploreConfig(run=args.run, runs_dir=args.runs_dir, site="L18", budget=args.budget, stop_when_done=False, patience=1000,
                                explore_id=f"bench-{int(time.time())}", judge=JudgeConfig(cache_path=f"{tmp}/explore.sqlite"))
            t = time.perf_counter()
            out = explore(cfg)
            res["explore"] = {"wall_s": time.perf_counter() - t, "timing": out.timing, "stopped": out.stopped,
                              "n_hypotheses": len(out.ranking), "n_scored": sum(h.status == "scored" for h in out.ranking),
                              "statuses": [h.status for h in out.ranking], "dir": out.explore_dir,
                              "top": [{"name": h.hypothesis.name, "kind": h.hypothesis.kind, "fcr": h.score.fcr if h.score else None,
                                       "kappa": h.score.kappa if h.score else None} for h in out.ranking[:5]]}
            print(json.dumps(res["explore"], indent=1), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
