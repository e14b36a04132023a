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

import json
from pathlib import Path

import numpy as np

from scope_core.api import AutoscopeError, RunData

from .base import Feature, Label

# The fitted labeller is stored as data, never as code: a `.npz` archive of plain arrays
# (vocabulary, idf, coefficients, intercepts, classes) read with `allow_pickle=False`, plus
# the vectoriser's settings and the held-out figures as JSON text. A run folder may come
# from someone else; loading it must not be able to execute anything (the old `.pkl`
# cache could, so it is never read: such a labeller is fitted again).
FORMAT = "autoscope-tfidf-logreg/1"
VECTORIZER = {"ngram_range": [1, 2], "sublinear_tf": True, "min_df": 1, "lowercase": True,
              "token_pattern": r"(?u)\b\w\w+\b", "norm": "l2", "smooth_idf": True}


def _fit(texts: list[str], labels: list[str], seed: int = 0):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    v = VECTORIZER
    clf = make_pipeline(
        TfidfVectorizer(ngram_range=tuple(v["ngram_range"]), sublinear_tf=v["sublinear_tf"], min_df=v["min_df"],
                        lowercase=v["lowercase"], token_pattern=v["token_pattern"], norm=v["norm"], smooth_idf=v["smooth_idf"]),
        LogisticRegression(C=10.0, max_iter=3000, random_state=seed),
    )
    clf.fit(texts, labels)
    return clf


class TextLabeller:
    """TF-IDF + logistic regression from its parameters alone; predicts exactly what the
    fitted scikit-learn pipeline predicts (tests/test_learned_format.py)."""

    def __init__(self, vocabulary: list[str], idf: np.ndarray, coef: np.ndarray, intercept: np.ndarray,
                 classes: list[str], vectorizer: dict | None = None):
        self.vocabulary = list(vocabulary)
        self.idf = np.asarray(idf, dtype=np.float64)
        self.coef = np.atleast_2d(np.asarray(coef, dtype=np.float64))
        self.intercept = np.asarray(intercept, dtype=np.float64).ravel()
        self.classes = [str(c) for c in classes]
        self.vectorizer = dict(vectorizer or VECTORIZER)
        n = len(self.vocabulary)
        if len(set(self.vocabulary)) != n or self.idf.shape != (n,) or self.coef.shape[1] != n:
            raise ValueError("inconsistent labeller: vocabulary, idf and coefficients disagree")
        k = len(self.classes)
        if k < 2 or self.coef.shape[0] != (1 if k == 2 else k) or self.intercept.shape != (self.coef.shape[0],):
            raise ValueError("inconsistent labeller: classes and coefficients disagree")
        self._counter = None

    @classmethod
    def from_pipeline(cls, clf) -> TextLabeller:
        vec, lr = clf[0], clf[-1]
        vocab = [None] * len(vec.vocabulary_)
        for term, i in vec.vocabulary_.items():
            vocab[i] = term
        return cls(vocab, vec.idf_, lr.coef_, lr.intercept_, [str(c) for c in lr.classes_])

    def _counts(self, texts: list[str]):
        if self._counter is None:
            from sklearn.feature_extraction.text import CountVectorizer

            v = self.vectorizer
            self._counter = CountVectorizer(vocabulary={t: i for i, t in enumerate(self.vocabulary)},
                                            ngram_range=tuple(v["ngram_range"]), lowercase=v["lowercase"],
                                            token_pattern=v["token_pattern"], dtype=np.float64)
        return self._counter.transform(texts)

    def decision_function(self, texts: list[str]) -> np.ndarray:
        from sklearn.preprocessing import normalize

        x = self._counts(texts).tocsr()
        # the same steps, in the same order, as TfidfTransformer.transform and
        # LogisticRegression.decision_function
        if self.vectorizer.get("sublinear_tf", True):
            np.log(x.data, x.data)
            x.data += 1.0
        x.data *= self.idf[x.indices]
        if self.vectorizer.get("norm", "l2"):
            x = normalize(x, norm=self.vectorizer.get("norm", "l2"), copy=False)
        scores = np.asarray(x @ self.coef.T) + self.intercept
        return scores.ravel() if scores.shape[1] == 1 else scores

    def predict(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.array([], dtype=object)
        scores = self.decision_function(texts)
        idx = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return np.array(self.classes, dtype=object)[idx]

    def save(self, path: Path, info: dict) -> None:
        meta = {"format": FORMAT, "vectorizer": self.vectorizer, "info": info}
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as f:
            np.savez(f, vocabulary=np.array(self.vocabulary, dtype=str), idf=self.idf, coef=self.coef,
                     intercept=self.intercept, classes=np.array(self.classes, dtype=str), meta=np.array(json.dumps(meta)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> tuple[TextLabeller, dict]:
        """Read a saved labeller; only plain arrays and JSON text (raises ValueError otherwise)."""
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ValueError(f"unknown labeller format {meta.get('format') if isinstance(meta, dict) else meta!r}")
            vec = meta.get("vectorizer")
            if not isinstance(vec, dict) or set(vec) != set(VECTORIZER):
                raise ValueError("unknown vectoriser settings")
            lab = cls([str(t) for t in z["vocabulary"]], z["idf"], z["coef"], z["intercept"],
                      [str(c) for c in z["classes"]], vec)
        info = meta.get("info")
        return lab, info if isinstance(info, dict) else {}


def learned_feature(name: str, description: str, data: RunData, cache_dir: Path, gate: Feature | None = None) -> Feature:
    """Fit (or load) a classifier for label `name`; `gate` makes the label undefined where
    the gate feature says 'harmless' (reason and method are undefined on harmless inputs)."""
    path = cache_dir / f"{name}.labeller.npz"
    clf = None
    if path.exists():
        try:
            clf, info = TextLabeller.load(path)
        except (ValueError, KeyError, OSError, EOFError) as e:  # damaged or foreign: fit again
            import sys

            print(f"autoscope: ignoring the saved labeller {path} ({e}); fitting it again", file=sys.stderr)
            clf = None
    if clf is None:
        tr = [(data.examples[i].text, data.examples[i].labels.get(name)) for i in data.train]
        tr = [(t, l) for t, l in tr if l is not None]
        if len({l for _, l in tr}) < 2:
            raise AutoscopeError(
                f"feature {name!r} needs prompts labelled with at least two values of {name!r} in the run's prior; "
                "this prior has none (use --task refusal or data files with that label)"
            )
        clf = TextLabeller.from_pipeline(_fit([t for t, _ in tr], [l for _, l in tr]))
        held = [(data.examples[i].text, data.examples[i].labels.get(name)) for i in data.heldout]
        held = [(t, l) for t, l in held if l is not None]
        acc = float((clf.predict([t for t, _ in held]) == np.array([l for _, l in held], dtype=object)).mean()) if held else float("nan")
        info = {"heldout_accuracy": acc, "n_train": len(tr), "n_heldout": len(held), "model": "tfidf+logreg"}
        cache_dir.mkdir(parents=True, exist_ok=True)
        clf.save(path, info)

    def fn(texts: list[str]) -> list[Label]:
        if not texts:
            return []
        pred = [str(p) for p in clf.predict(texts)]
        if gate is not None:
            g = gate(texts)
            pred = [p if gv == "harmful" else None for p, gv in zip(pred, g)]
        return pred

    return Feature(name=name, description=description, fn=fn, kind="learned", info=info)
