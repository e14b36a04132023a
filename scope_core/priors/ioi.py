"""Indirect object identification (IOI) prior, templated as in Wang et al. (2022).

Each prompt introduces two people, then repeats one of them (the **subject**, S) as the giver;
the prompt stops right before the indirect object, whose correct completion is the other name
(the **object**, IO), which appears only once::

    When Mary and John went to the store, John gave a drink to      -> subject John, object Mary

Both name orders are used ("A and B ... B" and "B and A ... B").  Labels: ``subject`` (the name
appearing twice) and ``object`` (the name appearing once).  ``subject_of`` and ``object_of``
recompute those labels from the text alone, by counting the known first names.
The names, places, objects and templates live in ``data/ioi.json``.
"""

from __future__ import annotations

import random
import re
from collections import Counter

from .base import Example
from .tables import IoiTables, load_table

__all__ = [
    "NAMES",
    "OBJECTS",
    "PLACES",
    "TEMPLATES",
    "generate_ioi",
    "max_distinct_ioi",
    "object_of",
    "subject_of",
]

_T = load_table("ioi", IoiTables)  # data/ioi.json

NAMES: tuple[str, ...] = _T.names  # capitalised; none is a capitalised word of a template
PLACES: tuple[str, ...] = _T.places
OBJECTS: tuple[str, ...] = _T.objects  # consonant-initial: "a {OBJECT}"
# {N1} and {N2} are the two names introduced together, {S} is the repeated subject.
TEMPLATES: tuple[str, ...] = _T.templates

_NAME_SET = frozenset(NAMES)
_CAPITALISED = re.compile(r"\b[A-Z][a-z]+\b")


def _template_capacity(template: str) -> int:
    """Distinct prompts of one template: 2 orders x ordered (subject, object) pairs x fillers."""
    n = len(NAMES)
    cap = 2 * n * (n - 1)
    if "{PLACE}" in template:
        cap *= len(PLACES)
    if "{OBJECT}" in template:
        cap *= len(OBJECTS)
    return cap


def max_distinct_ioi() -> int:
    """Exact number of distinct IOI prompts."""
    return sum(_template_capacity(t) for t in TEMPLATES)


def _decode(template: str, index: int) -> tuple[str, str, str]:
    """The index-th prompt of a template (0 <= index < capacity) -> (text, subject, object)."""
    n = len(NAMES)
    index, order = divmod(index, 2)
    index, s_idx = divmod(index, n)
    index, io_rank = divmod(index, n - 1)
    io_idx = io_rank if io_rank < s_idx else io_rank + 1  # any name but the subject
    place = obj = ""
    if "{PLACE}" in template:
        index, p = divmod(index, len(PLACES))
        place = PLACES[p]
    if "{OBJECT}" in template:
        index, o = divmod(index, len(OBJECTS))
        obj = OBJECTS[o]
    assert index == 0
    subject, indirect = NAMES[s_idx], NAMES[io_idx]
    first, second = (indirect, subject) if order == 0 else (subject, indirect)
    text = template.format(N1=first, N2=second, S=subject, PLACE=place, OBJECT=obj)
    return text, subject, indirect


def _allocate(n: int, capacities: list[int], rng: random.Random) -> list[int]:
    """Spread n over bins as evenly as their capacities allow (the remainder goes to random bins)."""
    counts = [0] * len(capacities)
    open_bins = [i for i, c in enumerate(capacities) if c > 0]
    left = n
    while left and open_bins:
        share, extra = divmod(left, len(open_bins))
        lucky = set(rng.sample(open_bins, extra))
        for i in open_bins:
            give = min(share + (i in lucky), capacities[i] - counts[i])
            counts[i] += give
            left -= give
        open_bins = [i for i in open_bins if counts[i] < capacities[i]]
    if left:
        raise ValueError("not enough capacity")
    return counts


def generate_ioi(n: int, seed: int = 0) -> list[Example]:
    """n distinct IOI prompts, spread evenly over the templates, shuffled.

    Labels: ``subject`` (the repeated name, who gives) and ``object`` (the name that appears once,
    the correct next token).  The same (n, seed) always gives the same list.  Raises ValueError if n
    exceeds ``max_distinct_ioi()``.
    """
    if n < 0:
        raise ValueError("n must be non-negative")
    if n > max_distinct_ioi():
        raise ValueError(f"the IOI templates can produce at most {max_distinct_ioi()} distinct prompts")
    rng = random.Random(f"ioi:{seed}")
    counts = _allocate(n, [_template_capacity(t) for t in TEMPLATES], rng)
    examples: list[Example] = []
    for template, k in zip(TEMPLATES, counts):
        for index in rng.sample(range(_template_capacity(template)), k):
            text, subject, indirect = _decode(template, index)
            examples.append(Example(text=text, labels={"subject": subject, "object": indirect}))
    rng.shuffle(examples)
    return examples


def _name_counts(text: str) -> Counter:
    return Counter(w for w in _CAPITALISED.findall(text) if w in _NAME_SET)


def _roles(text: str) -> tuple[str, str] | None:
    counts = _name_counts(text)
    if len(counts) != 2 or sorted(counts.values()) != [1, 2]:
        return None
    (a, ca), (b, _) = counts.items()
    return (a, b) if ca == 2 else (b, a)


def subject_of(text: str) -> str | None:
    """The known name that appears exactly twice, if the text has exactly one name twice and one once."""
    roles = _roles(text)
    return roles[0] if roles else None


def object_of(text: str) -> str | None:
    """The known name that appears exactly once, if the text has exactly one name twice and one once."""
    roles = _roles(text)
    return roles[1] if roles else None
