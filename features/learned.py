"""Learned text features: a TF-IDF + logistic-regression classifier fitted on the run's
labelled training prompts, for labels that no rule computes from text (harmfulness,
harm reason).

Why learned and not a keyword list: generated preimages are new text, so the label must
be computed from the text alone, the same way for queries and samples. The classifier's
held-out accuracy is measured and shown with every FCR that uses it (`Feature.info`),
so label noise is visible instead of hidden. LLM-labelled features (the agent) are the
other route.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from scope_core.data import RunData
from scope_core.errors import AutoscopeError

from .base import Feature, Label


def _fit(texts: list[str], labels: list[str], seed: int = 0):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    clf = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        LogisticRegression(C=10.0, max_iter=3000, random_state=seed),
    )
    clf.fit(texts, labels)
    return clf


def learned_feature(name: str, description: str, data: RunData, cache_dir: Path, gate: Feature | None = None) -> Feature:
    """Fit (or load) a classifier for label `name`; `gate` makes the label undefined where
    the gate feature says 'harmless' (reason and method are undefined on harmless inputs)."""
    path = cache_dir / f"{name}.pkl"
    if path.exists():
        with path.open("rb") as f:
            clf, info = pickle.load(f)
    else:
        tr = [(data.examples[i].text, data.examples[i].labels.get(name)) for i in data.train]
        tr = [(t, l) for t, l in tr if l is not None]
        if len({l for _, l in tr}) < 2:
            raise AutoscopeError(
                f"feature {name!r} needs prompts labelled with at least two values of {name!r} in the run's prior; "
                "this prior has none (use --task refusal or data files with that label)"
            )
        clf = _fit([t for t, _ in tr], [l for _, l in tr])
        held = [(data.examples[i].text, data.examples[i].labels.get(name)) for i in data.heldout]
        held = [(t, l) for t, l in held if l is not None]
        acc = float((clf.predict([t for t, _ in held]) == [l for _, l in held]).mean()) if held else float("nan")
        info = {"heldout_accuracy": acc, "n_train": len(tr), "n_heldout": len(held), "model": "tfidf+logreg"}
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            pickle.dump((clf, info), f)
        tmp.replace(path)

    def fn(texts: list[str]) -> list[Label]:
        if not texts:
            return []
        pred = [str(p) for p in clf.predict(texts)]
        if gate is not None:
            g = gate(texts)
            pred = [p if gv == "harmful" else None for p, gv in zip(pred, g)]
        return pred

    return Feature(name=name, description=description, fn=fn, kind="learned", info=info)
