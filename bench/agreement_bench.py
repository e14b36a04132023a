"""How far can `reason` labels be trusted? (issue: batch labelling and the refusal study)

Labels the HarmBench behaviours (human `SemanticCategory`) and the StrongREJECT prompts
(human `category`) with the built-in `reason` feature through a judge, maps each built-in
label onto the set's human categories (`features.llm_specs.REASON_TO_HUMAN`, many-to-one),
and reports accuracy, macro-F1 and the confusion matrix against the people, beside the
majority-class baseline. Then labels every prompt a second time with the paraphrased
question and reports self-consistency (agreement and Cohen's κ between the two wordings).

    python -m bench.agreement_bench                       # embedded judge (SmolLM2-135M), batched engine, scored (channel)
    python -m bench.agreement_bench --method ask          # the same judge asked to name the category
    python -m bench.agreement_bench --engine llamacpp --method ask   # the same weights behind llama.cpp
    AUTOSCOPE_JUDGE_URL=... AUTOSCOPE_JUDGE_MODEL=... python bench/agreement_bench.py --judge env
    python -m bench.agreement_bench --judge none --learned-run runs/default   # the learned labeller

The learned labeller (`fcr --labeller learned`: TF-IDF + logistic regression fitted on a
run's generated prior) is measured the same way, so users see how far the fast labeller
transfers from generated prompts to people's prompts.

Human categories with no built-in counterpart (HarmBench `copyright`, StrongREJECT
`Sexual content`) are left out and counted. A null answer ("not harmful") or a failed
label counts as wrong. Writes bench/results/agreement_<judge>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from sklearn.metrics import cohen_kappa_score, confusion_matrix, f1_score

from agent.judging.judge import JudgeClient, JudgeConfig
from agent.judging.channel import channel_label_many
from agent.judging.llm_feature import label_many
from features.llm_specs import REASON_TO_HUMAN, SPECS

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "refusal"
SETS = {
    "harmbench": ("harmbench_behaviors_text_all.csv", "Behavior", "SemanticCategory", {"copyright"}),
    "strongreject": ("strongreject_dataset.csv", "forbidden_prompt", "category", {"Sexual content"}),
}
NONE = "(none)"  # the judge said "not harmful" or could not label


def load_set(name: str, data_dir: Path, limit: int | None) -> tuple[list[str], list[str], Counter]:
    fname, text_col, cat_col, excluded = SETS[name]
    with (data_dir / fname).open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    left_out = Counter(r[cat_col] for r in rows if r[cat_col] in excluded)
    rows = [r for r in rows if r[cat_col] not in excluded and r[text_col].strip()]
    if limit:
        rows = rows[:: max(1, len(rows) // limit)][:limit]  # stratified by file order, deterministic
    return [r[text_col] for r in rows], [r[cat_col] for r in rows], left_out


def agreement(human: list[str], predicted: list[str]) -> dict:
    cats = sorted(set(human))
    majority, n_major = Counter(human).most_common(1)[0]
    labels = cats + ([NONE] if NONE in predicted else []) + sorted(set(predicted) - set(cats) - {NONE})
    cm = confusion_matrix(human, predicted, labels=labels)
    return {
        "n": len(human),
        "accuracy": sum(h == p for h, p in zip(human, predicted)) / len(human),
        "macro_f1": f1_score(human, predicted, labels=cats, average="macro", zero_division=0),
        "majority_class": majority, "majority_accuracy": n_major / len(human),
        "majority_macro_f1": f1_score(human, [majority] * len(human), labels=cats, average="macro", zero_division=0),
        "none_rate": predicted.count(NONE) / len(predicted),
        "confusion": {"rows_human": cats, "cols_predicted": labels, "matrix": cm[: len(cats)].tolist()},
    }


def run_judge(judge: JudgeClient, texts: list[str], paraphrased: bool, batch: int, method: str) -> tuple[list[str | None], float]:
    spec = SPECS["reason"]
    t = time.perf_counter()
    name = "reason" + ("_para" if paraphrased else "")
    if method == "channel":
        classes = spec.channel_classes()
        assert classes is not None
        out = channel_label_many(judge, name, classes, texts, progress=True, paraphrased=paraphrased)
    else:
        out = label_many(judge, name, spec.ask(paraphrased=paraphrased), spec.labels, texts,
                         spec.allow_null, spec.normaliser, batch=batch, progress=True)
    return [out[x].label for x in texts], time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--judge", choices=["embedded", "env", "none"], default="embedded", help="embedded SmolLM2, $AUTOSCOPE_JUDGE_*, or none")
    ap.add_argument("--learned-run", type=Path, default=None, help="also measure the learned reason labeller of this run")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--limit", type=int, default=None, help="prompts per set (default: all)")
    ap.add_argument("--batch", type=int, default=1, help="prompts per judge request")
    ap.add_argument("--concurrency", type=int, default=None, help="requests in flight (default: 32 on the batched engine, else 4)")
    ap.add_argument("--engine", choices=["batched", "llamacpp"], default="batched",
                    help="the embedded judge's engine (batched is what `autoscope label` starts)")
    ap.add_argument("--method", choices=["ask", "channel"], default="channel",
                    help="ask the question, or score each category's description (what `autoscope label` does on "
                         "judges that return prompt log-probabilities)")
    ap.add_argument("--cache", default=None, help="judge cache sqlite (default: the user cache)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    res: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "mapping": REASON_TO_HUMAN}
    if args.learned_run is not None:
        from features.learned import learned_feature
        from scope_core.api import RunData

        clf = learned_feature("reason", "harm category", RunData.load(args.learned_run / "data"), args.learned_run / "features")
        res["learned"] = {"run": str(args.learned_run), "info": clf.info}
        for name in SETS:
            texts, human, left_out = load_set(name, args.data, args.limit)
            pred = [REASON_TO_HUMAN[name].get(x, NONE) if x else NONE for x in clf(texts)]
            a = agreement(human, pred)
            a["left_out"] = dict(left_out)
            res["learned"][name] = a
            print(json.dumps({f"learned/{name}": {k: v for k, v in a.items() if k != "confusion"}}, indent=1), flush=True)
    with contextlib.ExitStack() as stack:
        cfg = JudgeConfig.from_env(concurrency=args.concurrency, cache_path=args.cache)
        if args.judge == "embedded":
            from agent.judging.embedded_judge import EmbeddedJudge

            srv = stack.enter_context(EmbeddedJudge(engine=args.engine))
            cfg = srv.client_config(cfg)
        elif args.judge == "env" and not cfg.base_url:
            raise SystemExit("--judge env needs AUTOSCOPE_JUDGE_URL (and _MODEL, _ENGINE)")
        res["judge_model"] = cfg.model if args.judge != "none" else "none"
        for name in SETS if args.judge != "none" else []:
            judge = JudgeClient(cfg)
            texts, human, left_out = load_set(name, args.data, args.limit)
            first, dt1 = run_judge(judge, texts, False, args.batch, args.method)
            second, dt2 = run_judge(judge, texts, True, args.batch, args.method)
            to_human = REASON_TO_HUMAN[name]
            pred = [to_human.get(x, NONE) if x else NONE for x in first]
            a = agreement(human, pred)
            a1, a2 = [x or NONE for x in first], [x or NONE for x in second]
            a["left_out"] = dict(left_out)
            a["self_consistency"] = {"agreement": sum(x == y for x, y in zip(a1, a2)) / len(a1),
                                     "cohen_kappa": cohen_kappa_score(a1, a2),
                                     "accuracy_paraphrased": sum(h == (to_human.get(x, NONE) if x else NONE) for h, x in zip(human, second)) / len(human)}
            a["built_in_label_counts"] = dict(Counter(a1))
            a["labels_per_s"] = 2 * len(texts) / (dt1 + dt2)
            res[name] = a
            print(json.dumps({name: {k: v for k, v in a.items() if k != "confusion"}}, indent=1), flush=True)
            print("confusion (rows: human, cols: predicted):", json.dumps(a["confusion"]), flush=True)
    tag = res["judge_model"].replace("/", "_") if args.judge != "none" else "learned"
    if args.judge == "embedded":
        res["engine"] = args.engine
        tag += "" if args.engine == "llamacpp" else f"_{args.engine}"
    if args.judge != "none":
        res["method"] = args.method
        tag += "_channel" if args.method == "channel" else ""
    out = Path(args.out or f"bench/results/agreement_{tag}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
