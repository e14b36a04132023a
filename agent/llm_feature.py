"""LLM-labelled features: a question (with a label set, or a short free-form extraction)
answered by the judge for each input, batched with bounded concurrency, cached per
(feature, input) by the judge's persistent cache. An input the judge cannot label gets
None with the reason kept, never a guess."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from features.base import Feature
from features.method import normalise_method

from .hypotheses import BatchLabels, LabelAnswer
from .judge import JudgeClient
from .prompts import messages


@dataclass
class LabelOutcome:
    label: str | None  # normalised label, None if undefined or failed
    raw: str | None  # what the judge answered
    error: str | None = None  # why there is no label, when the judge failed


def normalise_label(raw: str | None, labels: Sequence[str] | None) -> str | None:
    """Map the judge's answer onto the label set (case/space-insensitive); free-form
    answers are lower-cased and stripped so equal answers compare equal."""
    if raw is None:
        return None
    text = " ".join(str(raw).strip().strip(".\"'").lower().split())
    if not text or text in ("null", "none", "n/a", "undefined"):
        return None
    if labels:
        by_norm = {" ".join(lab.lower().split()): lab for lab in labels}
        if text in by_norm:
            return by_norm[text]
        hits = [lab for norm, lab in by_norm.items() if norm in text]
        return hits[0] if len(hits) == 1 else None
    return text


def label_many(judge: JudgeClient, name: str, question: str, labels: Sequence[str] | None, texts: Sequence[str],
               allow_null: bool = True, normaliser: str | None = None, batch: int = 1, progress: bool = False) -> dict[str, LabelOutcome]:
    """Label each distinct text. `batch` > 1 asks for several labels per request (fewer
    prompt tokens per label); a batch answered with the wrong number of labels is
    relabelled one input at a time."""
    lab_list = list(labels) if labels else None

    def finish(raw: str | None) -> LabelOutcome:
        lab = normalise_label(raw, labels)
        if normaliser == "method" and lab is not None:
            lab = normalise_method(lab)
        err = None
        if lab is None and raw is not None and labels and str(raw).strip().lower() not in ("null", "none", ""):
            err = f"answer {raw!r} is not one of the labels"
        return LabelOutcome(lab, raw, err)

    def singles(ts: list[str]) -> dict[str, LabelOutcome]:
        reqs = [(messages("label", question=question, text=t, labels=lab_list, allow_null=allow_null), LabelAnswer) for t in ts]
        out: dict[str, LabelOutcome] = {}
        for t, a in zip(ts, judge.ask_many(reqs, max_tokens=48, purpose=f"label:{name}", progress=progress)):
            out[t] = LabelOutcome(None, a.raw, a.error or "no answer") if a.value is None else finish(a.value.label)
        return out

    uniq = sorted(set(texts))
    if batch <= 1:
        return singles(uniq)
    groups = [uniq[i : i + batch] for i in range(0, len(uniq), batch)]
    reqs = [(messages("label_batch", question=question, texts=g, labels=lab_list, allow_null=allow_null), BatchLabels) for g in groups]
    out: dict[str, LabelOutcome] = {}
    redo: list[str] = []
    for g, a in zip(groups, judge.ask_many(reqs, max_tokens=16 + 12 * len(groups[0]), purpose=f"label:{name}", progress=progress)):
        if a.value is None or len(a.value.labels) != len(g):
            redo.extend(g)
            continue
        out.update({t: finish(v) for t, v in zip(g, a.value.labels)})
    if redo:
        out.update(singles(redo))
    return out


def llm_feature(judge: JudgeClient, name: str, question: str, labels: Sequence[str] | None, allow_null: bool = True,
                normaliser: str | None = None, progress: bool = False, batch: int = 1) -> Feature:
    failures: dict[str, str] = {}

    def fn(texts: list[str]) -> list[str | None]:
        res = label_many(judge, name, question, labels, texts, allow_null, normaliser, batch, progress)
        failures.update({t: o.error for t, o in res.items() if o.error})
        return [res[t].label for t in texts]

    return Feature(name=name, description=question, fn=fn, kind="llm", info={"labels": list(labels) if labels else None, "failures": failures})
