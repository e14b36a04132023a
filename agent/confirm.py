"""Confirmation that cannot fool itself: a disjoint split of the queries, and the search null.

The loop proposes, screens and refines on *exploration* queries only; every hypothesis is
then scored on *confirmation* queries that no proposer, judge or refinement saw. Having
tried twenty ideas, the best of them beats chance on its own queries by luck alone; the
search null measures that luck: as many content-free features (salted hashes of the text)
as hypotheses were scored, with the same numbers of values, scored on the same confirmation
queries. A finding is confirmed only when its κ CI lies above 0 and above the best of them,
and when its κ beats the permutation threshold of the whole search: the 95th percentile, over
shared permutations of the confirmation queries' labels (each query's samples paired with
another query's label), of the largest κ any scored hypothesis reaches — Westfall and Young's
max-T, which holds the chance of confirming anything by luck at 5% however many hypotheses
were tried, and, unlike hashes, with each hypothesis's own label structure.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from scope_core.api import SampleRun, sampled_fcr

from .hypotheses import ScoredHypothesis, SearchNull

N_PERMUTATIONS = 200


def permuted_kappas(query_labels: Sequence, sample_labels: Sequence[Sequence], weights: Sequence[Sequence[float]],
                    prior_labels: Sequence, n_perm: int = N_PERMUTATIONS, seed: int = 0) -> list[float | None]:
    """κ of the feature with the queries' labels permuted among the queries (each query's
    samples judged against another query's label), once per shared permutation: the same
    `seed` and number of queries give every hypothesis the same permutations, so the largest
    κ across hypotheses can be taken permutation by permutation (max-T). None where a
    permutation leaves no counted query or p0 = 1."""
    n = len(query_labels)
    counts = Counter(lab for lab in prior_labels if lab is not None)
    n_prior = max(len(prior_labels), 1)
    rng = np.random.default_rng(seed + 11)
    w = [np.asarray(x, dtype=float) for x in weights]
    tot = np.array([x.sum() for x in w])
    out: list[float | None] = []
    for _ in range(n_perm):
        perm = rng.permutation(n)
        rates, p0s = [], []
        for i in range(n):
            ql = query_labels[perm[i]]
            if ql is None or tot[i] <= 0:
                continue
            match = np.array([lab is not None and lab == ql for lab in sample_labels[i]], dtype=float)
            rates.append(float((w[i] * match).sum() / tot[i]))
            p0s.append(counts.get(ql, 0) / n_prior)
        if not rates or np.mean(p0s) >= 1 - 1e-9:
            out.append(None)
            continue
        p0 = float(np.mean(p0s))
        out.append((float(np.mean(rates)) - p0) / (1 - p0))
    return out


def permutation_threshold(hypotheses: Sequence[ScoredHypothesis], level: float = 0.95) -> float | None:
    """The `level` quantile over permutations of the largest permuted κ among the scored
    hypotheses' confirmation scores (max-T); None when no hypothesis carries permutations."""
    rows = [h.confirmation.permuted_kappas for h in hypotheses
            if h.status == "scored" and h.confirmation is not None and h.confirmation.permuted_kappas]
    if not rows:
        return None
    m = len(rows[0])
    maxima = []
    for b in range(m):
        vals = [r[b] for r in rows if len(r) == m and r[b] is not None]
        if vals:
            maxima.append(max(vals))
    return float(np.quantile(maxima, level)) if maxima else None


def split_queries(run: SampleRun, seed: int, confirm_share: float = 0.5) -> tuple[SampleRun, SampleRun]:
    """(exploration, confirmation): a seeded, disjoint split of the run's queries, each in
    its original order. Both halves get at least one query when there are two."""
    idx = list(range(len(run.queries)))
    random.Random(f"confirm-split-{seed}").shuffle(idx)
    n_conf = min(len(idx) - 1, max(1, round(confirm_share * len(idx)))) if len(idx) >= 2 else 0
    conf = set(idx[:n_conf])
    explore = [q for i, q in enumerate(run.queries) if i not in conf]
    confirm = [q for i, q in enumerate(run.queries) if i in conf]
    return run.model_copy(update={"queries": explore}), run.model_copy(update={"queries": confirm})


def hash_feature(buckets: int, salt: int) -> Callable[[str], str]:
    """A content-free feature: the text's salted hash into `buckets` values."""
    def fn(text: str) -> str:
        h = hashlib.sha256(f"{salt}:{text}".encode()).digest()
        return f"b{int.from_bytes(h[:8], 'little') % buckets}"

    return fn


def search_null(run: SampleRun, prior: Sequence[str], cardinalities: Sequence[int], seed: int = 0) -> SearchNull:
    """κ of one hash feature per scored hypothesis (same number of values) on `run`'s queries."""
    kappas = []
    for i, c in enumerate(cardinalities):
        fn = hash_feature(max(2, min(int(c), 64)), salt=seed * 1000 + i)
        labels = {t: fn(t) for t in {q.query for q in run.queries} | {s.text for q in run.queries for s in q.samples}}
        res = sampled_fcr(run, labels, [fn(t) for t in prior], n_boot=200, seed=seed)
        if res.kappa is not None:
            kappas.append(res.kappa)
    return SearchNull(max_kappa=max(kappas) if kappas else None, kappas=kappas, n_features=len(kappas), n_hypotheses=len(cardinalities))
