"""Confirmation that cannot fool itself: a disjoint split of the queries, and the search null.

The loop proposes, screens and refines on *exploration* queries only; every hypothesis is
then scored on *confirmation* queries that no proposer, judge or refinement saw. Having
tried twenty ideas, the best of them beats chance on its own queries by luck alone; the
search null measures that luck: as many content-free features (salted hashes of the text)
as hypotheses were scored, with the same numbers of values, scored on the same confirmation
queries. A finding is confirmed only when its κ CI lies above 0 and above the best of them,
and when its permutation p-value (its κ against its own κ under shared permutations of the
confirmation queries' labels: each query's samples paired with another query's label) is at or
under the search's threshold — Westfall and Young's min-P, which holds the chance of
confirming anything by luck at 5% however many hypotheses were tried, with each hypothesis's
own label structure rather than a hash's.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from scope_core.api import SampleRun, sampled_fcr

from .hypotheses import ScoredHypothesis, SearchNull, permutation_p

N_PERMUTATIONS = 1000


def permuted_kappas(query_labels: Sequence, sample_labels: Sequence[Sequence], weights: Sequence[Sequence[float]],
                    prior_labels: Sequence, n_perm: int = N_PERMUTATIONS, seed: int = 0) -> list[float | None]:
    """κ of the feature with the queries' labels permuted among the queries (each query's
    samples judged against another query's label), once per shared permutation: the same
    `seed` and number of queries give every hypothesis the same permutations, so the search
    can be judged permutation by permutation (`permutation_pvalues`). None where a permutation
    leaves no counted query or p0 = 1."""
    n = len(query_labels)
    if n == 0:
        return []
    codes: dict = {}
    q = np.array([codes.setdefault(lab, len(codes)) if lab is not None else -1 for lab in query_labels])
    m = max((len(x) for x in sample_labels), default=0)
    s = np.full((n, max(m, 1)), -2)  # -2: no sample / undefined label, never a match
    w = np.zeros((n, max(m, 1)))
    for i, (labs, ws) in enumerate(zip(sample_labels, weights)):
        for j, (lab, wj) in enumerate(zip(labs, ws)):
            s[i, j] = codes.get(lab, -3) if lab is not None else -2  # a label no query has cannot match
            w[i, j] = wj
    tot = w.sum(1)
    counts = Counter(lab for lab in prior_labels if lab is not None)
    p0_code = np.array([counts.get(lab, 0) / max(len(prior_labels), 1) for lab in codes] + [0.0])  # last: padding for -1
    perms = np.random.default_rng(seed + 11).permuted(np.tile(np.arange(n), (n_perm, 1)), axis=1)  # [B, n]
    qp = q[perms]  # each query's samples against another query's label
    valid = (qp >= 0) & (tot > 0)[None, :]
    match = (s[None, :, :] == qp[:, :, None]) & (qp[:, :, None] >= 0)
    rates = (w[None] * match).sum(-1) / np.where(tot > 0, tot, 1.0)[None, :]
    n_valid = valid.sum(1)
    fcr_b = np.where(n_valid > 0, (rates * valid).sum(1) / np.maximum(n_valid, 1), np.nan)
    p0_b = np.where(n_valid > 0, (p0_code[np.where(qp >= 0, qp, len(codes))] * valid).sum(1) / np.maximum(n_valid, 1), np.nan)
    out: list[float | None] = []
    for f, p0 in zip(fcr_b, p0_b):
        out.append(None if not np.isfinite(f) or p0 >= 1 - 1e-9 else float((f - p0) / (1 - p0)))
    return out


def permutation_pvalues(hypotheses: Sequence[ScoredHypothesis], alpha: float = 0.05) -> tuple[dict[int, float], float | None]:
    """({hypothesis id: its permutation p-value}, the search's p threshold): Westfall and
    Young's min-P over the scored hypotheses' confirmation scores. Each hypothesis's p is the
    share of permutations whose κ reaches its own; the threshold is the `alpha` quantile, over
    permutations, of the smallest p any hypothesis gets there — so a finding with p at or under
    it beats what the best of the whole search reaches by luck in all but `alpha` of cases.
    p-values, not κ itself: a few-valued feature with a common value has a κ that swings
    widely under permutation and would otherwise set the bar for every other hypothesis."""
    scored = [h for h in hypotheses
              if h.status == "scored" and h.confirmation is not None and h.confirmation.permuted_kappas and h.confirmation.kappa is not None]
    rows = [(h.id, h.confirmation.kappa, np.array([np.nan if k is None else k for k in h.confirmation.permuted_kappas], dtype=float))  # type: ignore[union-attr]
            for h in scored]
    if not rows:
        return {}, None
    b = len(rows[0][2])
    kept = [h for h, r in zip(scored, rows) if len(r[2]) == b]
    rows = [r for r in rows if len(r[2]) == b]
    pvals: dict[int, float] = {}
    per_perm = []
    for (hid, kappa, perm), h in zip(rows, kept):
        ok = np.isfinite(perm)
        pvals[hid] = permutation_p(h.confirmation)  # type: ignore[arg-type, assignment]
        ranked = np.where(ok, perm, -np.inf)
        # p of each permutation within the hypothesis's own permutation distribution
        order = np.sort(ranked[ok])
        ge = len(order) - np.searchsorted(order, ranked, side="left")
        per_perm.append(np.where(ok, ge / max(ok.sum(), 1), 1.0))
    min_p = np.min(np.stack(per_perm), 0)
    return pvals, float(np.quantile(min_p, alpha))


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
