"""Can prompting lift the embedded judge's labels? Worked examples and calibrated scoring, measured.

    python -m bench.label_prompting_bench --limit 60

On stratified subsets of HarmBench and StrongREJECT (human categories, as in
`bench/agreement_bench.py`) the built-in `reason` question is asked of the embedded judge:
(1) as `autoscope label` asks it; (2) with worked examples from the project's generated prior
placed in the question — two per category, with or without three harmless ones answered null;
(3) by scoring instead of generating: the log-probability of each label's first token after
`{"label": "`, in-process llama.cpp on the same GGUF; (4) the same scores calibrated by the
mean scores of three content-free inputs (Zhao et al., 2021). `harmfulness` with and without
examples is scored on the refusal test splits. Examples never come from the scored sets.
Writes bench/results/label_prompting.json.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from agent.judging.embedded_judge import EmbeddedJudge
from agent.judging.judge import JudgeClient, JudgeConfig
from agent.judging.llm_feature import label_many
from agent.prompts import render
from bench.agreement_bench import DATA, load_set
from features.llm_specs import REASON_TO_HUMAN, SPECS
from scope_core.api import embedded_gguf_path, generate_refusal


def demos(feature: str, per_label: int, harmless: int, seed: int = 7) -> list[tuple[str, str | None]]:
    rng = random.Random(f"demos:{feature}:{seed}")
    pool = generate_refusal(3000, seed=10_000 + seed)
    by: dict[str | None, list[str]] = {}
    for e in pool:
        if feature == "harmfulness" or e.labels.get("harmfulness") == "harmful":
            by.setdefault(e.labels.get(feature), []).append(e.text)
    out = [(t, lab) for lab in sorted(k for k in by if k) for t in rng.sample(by[lab], per_label)]
    if harmless:
        out += [(e.text, None) for e in rng.sample([e for e in pool if e.labels.get("harmfulness") == "harmless"], harmless)]
    rng.shuffle(out)
    return out


def with_demos(question: str, ds: list[tuple[str, str | None]]) -> str:
    return question + "\nExamples:\n" + "".join(f'Text: "{t}"\nAnswer: {json.dumps({"label": lab})}\n' for t, lab in ds)


def accuracy(pred: list[str | None], truth: list[str]) -> float:
    return float(np.mean([p == t for p, t in zip(pred, truth)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=60, help="prompts per set")
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    spec, res = SPECS["reason"], {}
    sets = {name: load_set(name, args.data, args.limit)[:2] for name in ("harmbench", "strongreject")}
    variants = {"as_asked": spec.ask(), "examples": with_demos(spec.ask(), demos("reason", 2, 3)),
                "examples_harmful_only": with_demos(spec.ask(), demos("reason", 2, 0))}
    with EmbeddedJudge() as srv:
        cfg = JudgeConfig(base_url=srv.url, model=srv.model, engine=srv.engine, concurrency=1,
                          cache_path=str(Path(tempfile.mkdtemp()) / "judge.sqlite"))  # fresh: every answer asked now
        for name, (texts, human) in sets.items():
            for v, q in variants.items():
                out = label_many(JudgeClient(cfg), f"reason_{v}", q, spec.labels, texts, spec.allow_null)
                pred = [out[t].label for t in texts]
                res[f"{name}/{v}"] = {"accuracy": accuracy([REASON_TO_HUMAN[name].get(p) if p else None for p in pred], human),
                                      "majority": Counter(human).most_common(1)[0][1] / len(human),
                                      "top_labels": Counter(pred).most_common(3)}
                print(name, v, res[f"{name}/{v}"], flush=True)
        h = SPECS["harmfulness"]
        rows = {k: [r["instruction"] for r in json.loads((args.data / f"{k}_test.json").read_text())][:50] for k in ("harmful", "harmless")}
        texts, truth = rows["harmful"] + rows["harmless"], ["harmful"] * 50 + ["harmless"] * 50
        for v, q in (("as_asked", h.ask()), ("examples", with_demos(h.ask(), demos("harmfulness", 2, 0)))):
            out = label_many(JudgeClient(cfg), f"harmfulness_{v}", q, h.labels, texts, False)
            pred = [out[t].label for t in texts]
            res[f"harmfulness/{v}"] = {"accuracy": accuracy(pred, truth), "top_labels": Counter(pred).most_common(2)}
            print("harmfulness", v, res[f"harmfulness/{v}"], flush=True)

    from llama_cpp import Llama

    llm = Llama(model_path=str(embedded_gguf_path()), n_ctx=2048, n_threads=2, n_threads_batch=2, logits_all=True, verbose=False)
    labels = list(spec.labels)
    first = [llm.tokenize(lab.encode(), add_bos=False)[0] for lab in labels]
    assert len(set(first)) == len(labels), "label first tokens must differ"

    def scores(text: str) -> np.ndarray:
        user = render("label", question=spec.ask(), text=text, labels=labels, allow_null=True)
        prompt = (f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
                  '<|im_start|>assistant\n{"label": "')
        toks = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        llm.reset()
        llm.eval(toks)
        logits = np.array(llm.scores[len(toks) - 1])
        return (logits - np.logaddexp.reduce(logits))[first]

    content_free = np.mean([scores(t) for t in ("N/A", "", "[MASK]")], axis=0)
    for name, (texts, human) in sets.items():
        s = np.array([scores(t) for t in texts])
        for v, m in (("scored", s), ("scored_calibrated", s - content_free)):
            pred = [labels[i] for i in m.argmax(1)]
            res[f"{name}/{v}"] = {"accuracy": accuracy([REASON_TO_HUMAN[name][p] for p in pred], human),
                                  "majority": Counter(human).most_common(1)[0][1] / len(human), "top_labels": Counter(pred).most_common(3)}
            print(name, v, res[f"{name}/{v}"], flush=True)
    out = Path("bench/results/label_prompting.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
