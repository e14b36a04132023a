"""Confirmation that cannot fool itself: a disjoint split of the queries, and the search null.

The loop proposes, screens and refines on *exploration* queries only; every hypothesis is
then scored on *confirmation* queries that no proposer, judge or refinement saw. Having
tried twenty ideas, the best of them beats chance on its own queries by luck alone; the
search null measures that luck: as many content-free features (salted hashes of the text)
as hypotheses were scored, with the same numbers of values, scored on the same confirmation
queries. A finding is confirmed only when its κ CI lies above 0 and above the best of them.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence

from scope_core.api import SampleRun, sampled_fcr

from .hypotheses import SearchNull


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
