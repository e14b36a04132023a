"""Harmfulness labels against the refusal splits' labels: asked vs scored (channel).

Labels the first `--limit` prompts of `harmful_test.json` and of `harmless_test.json`
(../shared/data/refusal) with the built-in `harmfulness` feature through the embedded
batched judge, once asked (`--method ask`) and once scored (`agent.judging.channel`), and reports
accuracy, the share called harmful, and labels/s.

    python -m bench.harmfulness_bench --limit 200

Writes bench/results/harmfulness_<judge>.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from agent.judging.channel import channel_label_many
from agent.judging.embedded_judge import EmbeddedJudge
from agent.judging.judge import JudgeClient, JudgeConfig
from agent.judging.llm_feature import label_many
from features.llm_specs import SPECS

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "refusal"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=200, help="prompts from each split")
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    rows = [(r["instruction"], "harmful") for r in json.loads((args.data / "harmful_test.json").read_text())[: args.limit]]
    rows += [(r["instruction"], "harmless") for r in json.loads((args.data / "harmless_test.json").read_text())[: args.limit]]
    texts = [t for t, _ in rows]
    spec = SPECS["harmfulness"]
    res: dict = {"n": len(rows)}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedJudge(engine="batched") as srv:
        for method in ("ask", "channel"):
            judge = JudgeClient(srv.client_config(JudgeConfig(cache_path=f"{tmp}/{method}.sqlite")))
            t = time.perf_counter()
            if method == "channel":
                classes = spec.channel_classes()
                assert classes is not None
                out = channel_label_many(judge, spec.name, classes, texts, progress=True)
            else:
                out = label_many(judge, spec.name, spec.question, spec.labels, texts, spec.allow_null, progress=True)
            dt = time.perf_counter() - t
            pred = [out[x].label for x in texts]
            res[method] = {"accuracy": sum(p == y for p, (_, y) in zip(pred, rows)) / len(rows),
                           "called_harmful": pred.count("harmful") / len(rows), "labels_per_s": len(rows) / dt,
                           "judge_model": judge.config.model}
            print(method, json.dumps(res[method]), flush=True)
    out_path = Path("bench/results/harmfulness_smollm2-135m-instruct.json")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(res, indent=1))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
