"""The channel labeller: choose the class whose description makes the text most likely.

Why: asked to name the harm category of a request, SmolLM2-135M answers the same few
categories whatever the request (at the majority-class level against people's labels,
BENCHMARKS §6). Scored the other way round — log P(text | "The following is a request
about <category description>."), one context per class, the text the same — it picks the
human category for most HarmBench and StrongREJECT prompts. This is the noisy-channel
classifier (Min et al., 2022, "Noisy Channel Language Model Prompting"): it compares
likelihoods of the same tokens, so it needs no calibration of label-word priors, and an
answer is always one of the classes. A class may stand for "does not apply" (key None):
winning it gives a null label, the way a judge answers null.

It needs prompt log-probabilities (`JudgeClient.loglikelihoods`): the batched engine and
vLLM serve them; llama.cpp's server does not.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from ..hypotheses import LabelOutcome
from ..prompts import render
from .judge import JudgeClient, JudgeFailure, JudgeUnavailable


def channel_context(description: str, paraphrased: bool = False) -> str:
    """The scoring context of one class, from `prompts/channel.j2` (or its second wording,
    `channel_paraphrase.j2`, with which benchmarks measure self-consistency)."""
    d = description.strip().rstrip(".")
    topic = d[:1].lower() + d[1:] if d[:2] != d[:2].upper() else d  # keep acronyms as written
    return render("channel_paraphrase" if paraphrased else "channel", topic=topic)


def channel_label_many(judge: JudgeClient, name: str, classes: Mapping[str | None, str], texts: Sequence[str],
                       progress: bool = False, paraphrased: bool = False) -> dict[str, LabelOutcome]:
    """Label each distinct text with the class of highest log P(text | class context).
    The raw answer kept per text is every class's log-likelihood (JSON)."""
    if len(classes) < 2:
        raise ValueError("the channel labeller needs at least two classes")
    keys = list(classes)
    contexts = [channel_context(classes[k], paraphrased) for k in keys]

    def one(text: str) -> LabelOutcome:
        try:
            scores = judge.loglikelihoods(contexts, " " + text.strip(), purpose=f"label:{name}")
        except JudgeUnavailable:
            raise  # nothing learnt about this text: the caller stops, labels so far are cached
        except JudgeFailure as e:
            return LabelOutcome(None, None, e.reason)
        best = max(range(len(keys)), key=lambda i: scores[i])
        raw = json.dumps({("null" if k is None else k): round(s, 4) for k, s in zip(keys, scores)})
        return LabelOutcome(keys[best], raw)

    uniq = sorted({t for t in texts if t.strip()})
    with ThreadPoolExecutor(max_workers=max(1, judge.config.concurrency)) as pool:
        it = pool.map(one, uniq)
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, total=len(uniq), desc=f"scoring {name}", unit="text")
        return dict(zip(uniq, it))
