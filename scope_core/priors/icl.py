"""In-context learning prior: 4-shot single-word translation between English, French and Spanish.

Each prompt shows four demonstrations of one translation direction and asks for a fifth word::

    Input: dog, Output: chien
    Input: house, Output: maison
    Input: tree, Output: arbre
    Input: bread, Output: pain
    Input: water, Output:

There are 6 ordered directions (English-to-French, French-to-English, English-to-Spanish,
Spanish-to-English, French-to-Spanish, Spanish-to-French).  Labels: ``task`` (e.g.
"English-to-French translation") and ``input`` (the query word).  ``task_of`` and ``input_of``
recompute them from the text alone.

Every word of ``DICTIONARY`` is a single lower-case word, and no spelling is shared between two
languages, so the direction of a prompt can always be read off its demonstrations.  The languages,
directions and dictionary live in ``data/icl.json`` (checked on load).
"""

from __future__ import annotations

import math
import random
import re

from .base import Example
from .tables import IclTables, load_table

__all__ = [
    "DICTIONARY",
    "DIRECTIONS",
    "LANGUAGES",
    "generate_icl",
    "input_of",
    "max_distinct_icl",
    "task_label",
    "task_of",
]

_T = load_table("icl", IclTables)  # data/icl.json

LANGUAGES: tuple[str, ...] = _T.languages
DIRECTIONS: tuple[tuple[str, str], ...] = _T.directions
# One row per noun, one word per language (in LANGUAGES order); the file groups them by topic.
DICTIONARY: tuple[tuple[str, ...], ...] = tuple(row for rows in _T.words.values() for row in rows)

N_SHOTS = 4

_LANG_INDEX = {lang: i for i, lang in enumerate(LANGUAGES)}
# language -> word -> row of DICTIONARY
_LEXICON: dict[str, dict[str, int]] = {
    lang: {row[i]: r for r, row in enumerate(DICTIONARY)} for lang, i in _LANG_INDEX.items()
}

_DEMO_RE = re.compile(r"^Input: (.+?), Output: ?(.*)$")


def task_label(source: str, target: str) -> str:
    """The ``task`` label of a direction, e.g. "English-to-French translation"."""
    return f"{source}-to-{target} translation"


_TASK_LABELS = {d: task_label(*d) for d in DIRECTIONS}


def _render(words: list[str], source: str, target: str) -> str:
    s, t = _LANG_INDEX[source], _LANG_INDEX[target]
    lines = [f"Input: {DICTIONARY[r][s]}, Output: {DICTIONARY[r][t]}" for r in words[:N_SHOTS]]
    lines.append(f"Input: {DICTIONARY[words[N_SHOTS]][s]}, Output:")
    return "\n".join(lines)


def max_distinct_icl() -> int:
    """Exact number of distinct prompts (6 directions x ordered choices of 5 distinct words)."""
    return len(DIRECTIONS) * math.perm(len(DICTIONARY), N_SHOTS + 1)


def generate_icl(n: int, seed: int = 0) -> list[Example]:
    """n distinct 4-shot translation prompts, the 6 directions as evenly represented as possible.

    Labels: ``task`` (e.g. "English-to-French translation") and ``input`` (the query word, in
    the source language).  The same (n, seed) always gives the same list.
    """
    if n < 0:
        raise ValueError("n must be non-negative")
    if n > max_distinct_icl():
        raise ValueError(f"the ICL prior can produce at most {max_distinct_icl()} distinct prompts")
    rng = random.Random(f"icl:{seed}")
    base, extra = divmod(n, len(DIRECTIONS))
    lucky = set(rng.sample(range(len(DIRECTIONS)), extra))
    per_direction = [base + (i in lucky) for i in range(len(DIRECTIONS))]
    rows = range(len(DICTIONARY))
    seen: set[str] = set()
    examples: list[Example] = []
    for (source, target), k in zip(DIRECTIONS, per_direction):
        made = 0
        while made < k:
            words = rng.sample(rows, N_SHOTS + 1)
            text = _render(words, source, target)
            if text in seen:
                continue
            seen.add(text)
            query = DICTIONARY[words[N_SHOTS]][_LANG_INDEX[source]]
            examples.append(Example(text=text, labels={"task": _TASK_LABELS[(source, target)], "input": query}))
            made += 1
    rng.shuffle(examples)
    return examples


def input_of(text: str) -> str | None:
    """The word after the last "Input:" (up to ", Output:"), or None if there is none."""
    start = text.rfind("Input:")
    if start < 0:
        return None
    rest = text[start + len("Input:"):]
    end = rest.find(", Output:")
    word = (rest if end < 0 else rest[:end]).strip()
    return word or None


def task_of(text: str) -> str | None:
    """The translation direction shown by the demonstrations, or None if unknown or ambiguous.

    A direction is consistent with a demonstration "Input: x, Output: y" when x is a source-language
    word of ``DICTIONARY`` and y its target-language translation; the answer is the only direction
    consistent with every (complete) demonstration.
    """
    candidates = set(DIRECTIONS)
    demos = 0
    for line in text.split("\n"):
        m = _DEMO_RE.match(line.strip())
        if not m:
            continue
        x, y = m.group(1).strip(), m.group(2).strip()
        if not y:  # the query line
            continue
        demos += 1
        candidates = {
            (s, t)
            for s, t in candidates
            if x in _LEXICON[s] and DICTIONARY[_LEXICON[s][x]][_LANG_INDEX[t]] == y
        }
        if not candidates:
            return None
    if demos == 0 or len(candidates) != 1:
        return None
    return _TASK_LABELS[next(iter(candidates))]
