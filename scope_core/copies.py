"""Copies of the prior among generated samples: exact, near, and of the query itself.

Why more than exact matches: a generator that reproduces a training prompt with one word
changed, or hands back the held-out query it was conditioned on, has memorised rather than
inverted, yet an exact-match test counts such samples as novel (issue 20). A sample is a
*near copy* when its word-level edit distance to some training prompt is at most
`max_edits` (default 1: one word substituted, inserted or deleted) — found with a
symmetric-deletion index, so checking a sample costs a few dictionary look-ups, not one
edit distance per training prompt.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import combinations

WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> tuple[str, ...]:
    """Lower-cased words and punctuation marks: the units edits are counted in."""
    return tuple(WORD.findall(text.lower()))


def edit_distance(a: tuple[str, ...], b: tuple[str, ...], limit: int) -> int:
    """Levenshtein distance over words, or limit + 1 once it is known to exceed `limit`."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        if min(cur) > limit:
            return limit + 1
        prev = cur
    return prev[-1]


def _deletions(w: tuple[str, ...], k: int) -> Iterable[tuple[str, ...]]:
    for m in range(0, min(k, len(w)) + 1):
        for drop in combinations(range(len(w)), m):
            gone = set(drop)
            yield tuple(t for i, t in enumerate(w) if i not in gone)


class NearCopyIndex:
    """Training prompts indexed for 'is this sample within `max_edits` words of one of them'."""

    def __init__(self, texts: Iterable[str], max_edits: int = 1):
        self.max_edits = max_edits
        self.exact = set(texts)
        self._keys: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
        for t in self.exact:
            w = words(t)
            for d in _deletions(w, max_edits):
                self._keys.setdefault(d, []).append(w)

    def is_near_copy(self, text: str) -> bool:
        """Within `max_edits` word edits of a training prompt (exact copies included)."""
        if text in self.exact:
            return True
        w = words(text)
        for d in _deletions(w, self.max_edits):
            for cand in self._keys.get(d, ()):
                if edit_distance(w, cand, self.max_edits) <= self.max_edits:
                    return True
        return False

    def summarise(self, run) -> dict[str, float]:
        """Near-copy and query-copy rates of a `SampleRun` (shares of all samples), and the
        accepted samples per 100 that are neither: what `accepted_novel_per_100` means once
        near copies are not counted as novel."""
        samples = [(q, s) for q in run.queries for s in q.samples]
        n = max(len(samples), 1)
        near = [self.is_near_copy(s.text) for _, s in samples]
        query_copy = [edit_distance(words(s.text), words(q.query), self.max_edits) <= self.max_edits for q, s in samples]
        strict = [s.accepted and not a and not b for (_, s), a, b in zip(samples, near, query_copy)]
        return {"near_copy_rate": sum(near) / n, "query_copy_rate": sum(query_copy) / n,
                "accepted_far_novel_per_100": 100 * sum(strict) / n}
