"""LLM-labelled features: a question (with a label set, or a short free-form extraction)
answered by the judge for each input, batched with bounded concurrency, cached per
(feature, input) by the judge's persistent cache. An input the judge cannot label gets
None with the reason kept, never a guess."""

from __future__ import annotations

import random

from collections.abc import Sequence
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, create_model

from features.base import Feature
from features.method import normalise_method
from features.task import normalise_task, task_problem

from ..hypotheses import BatchLabels, LabelAnswer, LabelOutcome
from ..prompts import messages
from .channel import channel_label_many
from .judge import JudgeClient


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


def default_label_batch(engine: str) -> int:
    """Inputs per labelling request: 8 for llama.cpp, which answers one request at a time
    (several inputs per request is its only batching), 1 for servers that batch requests
    themselves (the batched engine, vLLM), where one input per request keeps each answer
    the one a single question would get (BENCHMARKS §5)."""
    return 8 if engine == "llamacpp" else 1


@lru_cache(maxsize=64)
def answer_models(labels: tuple[str, ...] | None, allow_null: bool, batch: int) -> tuple[type[BaseModel], type[BaseModel]]:
    """Answer schemas for one label and for `batch` labels. With a label set the schema
    enumerates it (and null when allowed) and fixes the batch length, so a grammar-constrained
    server cannot answer off the list or with the wrong count; free-form features keep strings."""
    if not labels:
        return LabelAnswer, BatchLabels
    canon = {" ".join(lab.lower().split()): lab for lab in labels}

    def to_label(v: object) -> object:
        """Case and spacing are not worth a retry: 'Harmful ' is 'harmful'."""
        if isinstance(v, str):
            key = " ".join(v.strip().strip(".\"'").lower().split())
            if allow_null and key in ("null", "none", "n/a", ""):
                return None
            return canon.get(key, v)
        return v

    one = Annotated[Literal[labels], BeforeValidator(to_label)]  # type: ignore[valid-type]
    item = Annotated[Literal[labels] | None, BeforeValidator(to_label)] if allow_null else one  # type: ignore[valid-type]
    single = create_model("LabelAnswer", label=(item, Field(description="one of the allowed labels")))
    many = create_model("BatchLabels", labels=(list[item], Field(min_length=batch, max_length=batch)))  # type: ignore[valid-type]
    return single, many


def label_many(judge: JudgeClient, name: str, question: str, labels: Sequence[str] | None, texts: Sequence[str],
               allow_null: bool = True, normaliser: str | None = None, batch: int = 1, progress: bool = False) -> dict[str, LabelOutcome]:
    """Label each distinct text. `batch` > 1 asks for several labels per request (fewer
    prompt tokens per label); a batch answered with the wrong number of labels is
    relabelled one input at a time."""
    lab_list = list(labels) if labels else None
    lab_key = tuple(labels) if labels else None

    def finish(value: str | None, raw: str | None) -> LabelOutcome:
        lab = normalise_label(value, labels)
        err = None
        if normaliser == "method" and lab is not None:
            lab = normalise_method(lab)
        elif normaliser == "task" and lab is not None and not labels:  # a given label set is kept as given
            lab, err = normalise_task(str(value)), task_problem(str(value))
        if lab is None and err is None and value is not None and labels and str(value).strip().lower() not in ("null", "none", ""):
            err = f"answer {value!r} is not one of the labels"
        return LabelOutcome(lab, raw, err)

    def failed(a) -> LabelOutcome:
        err = a.error or "no answer"
        if labels and "should be" in err:
            err = f"the answer was not one of the labels ({', '.join(labels)}) after retries: {err}"
        return LabelOutcome(None, a.raw, err)

    def singles(ts: list[str]) -> dict[str, LabelOutcome]:
        reqs = [(messages("label", question=question, text=t, labels=lab_list, allow_null=allow_null), answer_models(lab_key, allow_null, 1)[0]) for t in ts]
        out: dict[str, LabelOutcome] = {}
        for t, a in zip(ts, judge.ask_many(reqs, max_tokens=48, purpose=f"label:{name}", progress=progress)):
            out[t] = failed(a) if a.value is None else finish(a.value.label, a.raw)
        return out

    uniq = sorted(set(texts))
    if not uniq:
        return {}
    if batch <= 1:
        return singles(uniq)
    # Batches in a fixed shuffled order, not sorted: sorted, a query and its samples (which
    # share an opening) would be judged in one request and lean on each other, which raises
    # agreement for them and not for prior prompts, and so FCR against p0. Seeded: the same
    # texts make the same requests, so the judge's cache answers a rerun.
    order = list(uniq)
    random.Random(len(order)).shuffle(order)
    groups = [order[i : i + batch] for i in range(0, len(order), batch)]
    reqs = [(messages("label_batch", question=question, texts=g, labels=lab_list, allow_null=allow_null),
             answer_models(lab_key, allow_null, len(g))[1]) for g in groups]
    out: dict[str, LabelOutcome] = {}
    redo: list[str] = []
    for g, a in zip(groups, judge.ask_many(reqs, max_tokens=16 + 12 * len(groups[0]), purpose=f"label:{name}", progress=progress)):
        if a.value is None or len(a.value.labels) != len(g):
            redo.extend(g)
            continue
        out.update({t: finish(v, a.raw) for t, v in zip(g, a.value.labels)})
    if redo:
        out.update(singles(redo))
    return out


def llm_feature(judge: JudgeClient, name: str, question: str, labels: Sequence[str] | None, allow_null: bool = True,
                normaliser: str | None = None, progress: bool = False, batch: int = 1,
                classes: dict[str | None, str] | None = None) -> Feature:
    """A feature labelled by the judge: asked `question`, or with `classes` scored by the
    channel labeller (`agent.judging.channel`; class None = does not apply)."""
    failures: dict[str, str] = {}

    def fn(texts: list[str]) -> list[str | None]:
        if classes:
            res = channel_label_many(judge, name, classes, [t for t in texts if t.strip()], progress)
            res.update({t: LabelOutcome(None, None, "empty text") for t in texts if not t.strip()})
        else:
            res = label_many(judge, name, question, labels, texts, allow_null, normaliser, batch, progress)
        failures.update({t: o.error for t, o in res.items() if o.error})
        return [res[t].label for t in texts]

    return Feature(name=name, description=question, fn=fn, kind="llm", info={"labels": list(labels) if labels else None, "failures": failures,
                                                                          "method": "channel" if classes else "ask"})
