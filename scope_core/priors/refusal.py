"""Refusal prior: harmful and harmless instructions with ground-truth labels.

The prompts imitate the public instruction benchmarks (AdvBench-style harmful requests,
Alpaca-style benign ones).  They are built compositionally from a small grammar:

* a **method** (``METHODS``) is the kind of artefact or answer requested ("write an email",
  "give step-by-step instructions", ...).  Each method owns a few surface *frames*, e.g.
  ``"Write a tutorial on how to {base}"`` or ``"Write a script that {s}"``;
* an **act** is a verb phrase with slots (``"^hack into {system}"``).  Verbs marked with ``^``
  are conjugated per frame: ``{base}`` (bare infinitive), ``{s}`` (third person singular) and
  ``{ing}`` (gerund);
* acts and frames share a **kind**, so that only grammatical and sensible pairs are built:
  ``howto`` (an activity one performs), ``program`` (what a piece of software does), ``direct``
  (what a message to one person does) and ``public`` (what public content does);
* harmful acts are grouped by harm category (``REASON_CATEGORIES``); harmless acts cover
  everyday topics (cooking, fitness, study, software, gardening, ...).  Every method is
  available to both harmful and harmless prompts, so the method label is not a proxy for
  harmfulness.

Labels: ``harmfulness`` ("harmful" / "harmless"), ``reason`` (a category name, ``None`` for
harmless prompts) and ``method`` (a label of ``METHODS``).

The prompts are requests only, as in the public benchmarks; no operational detail is given.
The vocabularies (methods and their frames, acts, slot fillers, modifiers, verb exceptions)
live in ``data/refusal.json``, whose ``notation`` explains its letters; this module composes
prompts from them.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass
from functools import cache

from .base import Example
from .tables import KIND_LETTERS as _KIND_LETTERS
from .tables import KINDS as _KINDS
from .tables import RefusalTables, load_table

__all__ = [
    "METHODS",
    "REASON_CATEGORIES",
    "generate_refusal",
    "max_distinct_refusal",
]

_T = load_table("refusal", RefusalTables)

REASON_CATEGORIES: dict[str, str] = _T.reason_categories
METHODS: list[str] = list(_T.frames)

MIN_WORDS = 6
MAX_WORDS = 30

_P_HOWTO_MOD = 0.3  # chance to add a howto modifier where one is allowed
_P_TEXT_MOD = 0.2  # chance to add a length or tone modifier where one is allowed

# The tables of data/refusal.json, under the names this module and refusal_parse use.
_FRAMES = _T.frames  # method -> (kind, template, flags)
_HARMFUL_ACTS = _T.harmful_acts  # reason -> (template, kind letters, mods)
_HARMLESS_ACTS = _T.harmless_acts  # topic -> (template, kind letters, mods)
_SLOTS = _T.slots
_COVERT_MODS, _GENERAL_MODS = _T.modifiers.covert, _T.modifiers.general
_LENGTH_MODS, _TONE_MODS = _T.modifiers.length, _T.modifiers.tone
_IRREGULAR, _DOUBLE_FINAL = _T.verbs.irregular, _T.verbs.double_final_consonant

# Verb morphology: only verbs marked with "^" in an act are inflected.


def _third_person(verb: str) -> str:
    if verb in _IRREGULAR:
        return _IRREGULAR[verb][0]
    if verb.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if verb.endswith("y") and verb[-2:-1] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def _gerund(verb: str) -> str:
    if verb in _IRREGULAR:
        return _IRREGULAR[verb][1]
    if verb in _DOUBLE_FINAL:
        return verb + verb[-1] + "ing"
    if verb.endswith("ie"):
        return verb[:-2] + "ying"
    if verb.endswith("e") and not verb.endswith(("ee", "ye", "oe")):
        return verb[:-1] + "ing"
    return verb + "ing"


_VERB_RE = re.compile(r"\^([A-Za-z-]+)")


def _inflect(template: str, form: str) -> str:
    """Inflect every ``^verb`` of an act template: form is "base", "s" or "ing"."""
    if form == "base":
        return _VERB_RE.sub(lambda m: m.group(1), template)
    if form == "s":
        return _VERB_RE.sub(lambda m: _third_person(m.group(1)), template)
    if form == "ing":
        return _VERB_RE.sub(lambda m: _gerund(m.group(1)), template)
    raise ValueError(f"unknown verb form {form!r}")


# Compiled grammar: the tables indexed once, at import (data/refusal.json is validated on load).

_SLOT_RE = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class _Act:
    forms: dict  # "base" | "s" | "ing" -> template with slots
    slots: tuple[str, ...]
    mods: str  # "c" covert and/or "g" general howto modifiers allowed


@dataclass(frozen=True)
class _Frame:
    method: str
    kind: str
    template: str  # with exactly one of {base}, {s}, {ing}
    form: str
    flags: str  # "M" howto modifiers, "L" length modifiers, "T" tone modifiers


def _compile_act(template: str, mods: str) -> _Act:
    slots = tuple(_SLOT_RE.findall(template))
    forms = {f: _inflect(template, f) for f in ("base", "s", "ing")}
    if "without" in template:  # avoid "... without special equipment without getting caught"
        mods = mods.replace("c", "")
    return _Act(forms=forms, slots=slots, mods=mods)


def _compile_frames() -> list[_Frame]:
    frames = []
    for method, entries in _FRAMES.items():
        for kind, template, flags in entries:
            form = next(f for f in ("base", "s", "ing") if "{" + f + "}" in template)
            frames.append(_Frame(method, kind, template, form, flags))
    return frames


def _compile_acts(table: dict[str, tuple[tuple[str, str, str], ...]]) -> dict[str, dict[str, list[_Act]]]:
    """group -> kind -> acts."""
    out: dict[str, dict[str, list[_Act]]] = {}
    for group, acts in table.items():
        by_kind: dict[str, list[_Act]] = {k: [] for k in _KINDS}
        for template, letters, mods in acts:
            act = _compile_act(template, mods)
            for letter in letters:
                by_kind[_KIND_LETTERS[letter]].append(act)
        out[group] = by_kind
    return out


_FRAME_LIST = _compile_frames()
_HARMFUL = _compile_acts(_HARMFUL_ACTS)
# Harmless acts are pooled over their topic areas.
_HARMLESS_POOL = {k: [a for g in _compile_acts(_HARMLESS_ACTS).values() for a in g[k]] for k in _KINDS}


@dataclass(frozen=True)
class _Plan:
    """For one (polarity, reason): method -> usable frames, and kind -> acts."""

    harmful: bool
    reason: str | None
    methods: tuple[str, ...]
    frames: dict  # method -> tuple[_Frame, ...]
    acts: dict  # kind -> tuple[_Act, ...]


def _make_plan(harmful: bool, reason: str | None, acts_by_kind: dict[str, list[_Act]]) -> _Plan:
    frames: dict[str, tuple[_Frame, ...]] = {}
    for method in METHODS:
        usable = tuple(f for f in _FRAME_LIST if f.method == method and acts_by_kind[f.kind])
        if usable:
            frames[method] = usable
    return _Plan(harmful, reason, tuple(frames), frames, {k: tuple(v) for k, v in acts_by_kind.items()})


_HARMFUL_PLANS = tuple(_make_plan(True, r, _HARMFUL[r]) for r in REASON_CATEGORIES)
_HARMLESS_PLAN = _make_plan(False, None, _HARMLESS_POOL)


def _modifier_options(plan: _Plan, frame: _Frame, act: _Act) -> tuple[tuple[str, ...], float]:
    """The modifiers allowed after this act in this frame, and the chance to use one."""
    options: tuple[str, ...] = ()
    if "M" in frame.flags:
        if "c" in act.mods and plan.harmful:
            options += _COVERT_MODS
        if "g" in act.mods:
            options += _GENERAL_MODS
        return options, _P_HOWTO_MOD
    if "L" in frame.flags:
        options += _LENGTH_MODS
    if "T" in frame.flags:
        options += _TONE_MODS
    return options, _P_TEXT_MOD


def _render(frame: _Frame, act: _Act, fills: dict[str, str], modifier: str) -> str:
    vp = act.forms[frame.form].format(**fills) + modifier
    text = frame.template.replace("{" + frame.form + "}", vp)
    return text[0].upper() + text[1:]


def _labels(plan: _Plan, frame: _Frame) -> dict[str, str | None]:
    return {
        "harmfulness": "harmful" if plan.harmful else "harmless",
        "reason": plan.reason,
        "method": frame.method,
    }


def _word_count_ok(text: str) -> bool:
    return MIN_WORDS <= len(text.split()) <= MAX_WORDS


def _sample_one(rng: random.Random, plan: _Plan) -> tuple[str, _Frame]:
    while True:
        method = rng.choice(plan.methods)
        frame = rng.choice(plan.frames[method])
        act = rng.choice(plan.acts[frame.kind])
        fills = {s: rng.choice(_SLOTS[s]) for s in act.slots}
        options, p = _modifier_options(plan, frame, act)
        modifier = rng.choice(options) if options and rng.random() < p else ""
        text = _render(frame, act, fills, modifier)
        if _word_count_ok(text):
            return text, frame


def _enumerate_plan(plan: _Plan):
    """Every (text, frame) the plan can produce, in a fixed order (may contain duplicates)."""
    for method in plan.methods:
        for frame in plan.frames[method]:
            for act in plan.acts[frame.kind]:
                modifiers = ("",) + _modifier_options(plan, frame, act)[0]
                for values in itertools.product(*(_SLOTS[s] for s in act.slots)):
                    fills = dict(zip(act.slots, values))
                    for modifier in modifiers:
                        text = _render(frame, act, fills, modifier)
                        if _word_count_ok(text):
                            yield text, frame


def _upper_bound(plan: _Plan) -> int:
    total = 0
    for method in plan.methods:
        for frame in plan.frames[method]:
            for act in plan.acts[frame.kind]:
                combos = 1
                for s in act.slots:
                    combos *= len(_SLOTS[s])
                total += combos * (1 + len(_modifier_options(plan, frame, act)[0]))
    return total


@cache
def _distinct_counts() -> tuple[int, int]:
    """Exact numbers of distinct (harmful, harmless) texts of the grammar."""
    harmful = {t for plan in _HARMFUL_PLANS for t, _ in _enumerate_plan(plan)}
    harmless = {t for t, _ in _enumerate_plan(_HARMLESS_PLAN)}
    return len(harmful), len(harmless)


def max_distinct_refusal() -> int:
    """Exact number of distinct prompts the grammar can produce (harmful + harmless).

    Computed once by enumeration (about a second) and cached.
    """
    harmful, harmless = _distinct_counts()
    return harmful + harmless


def _draw(rng: random.Random, k: int, harmful: bool, seen: set[str]) -> list[Example]:
    """k new distinct examples of one polarity, rejection-sampled; falls back to enumeration."""
    out: list[Example] = []
    if k == 0:
        return out
    plans = _HARMFUL_PLANS if harmful else (_HARMLESS_PLAN,)
    misses = 0
    max_misses = 2000 + 2 * k
    while len(out) < k and misses < max_misses:
        plan = rng.choice(plans)
        text, frame = _sample_one(rng, plan)
        if text in seen:
            misses += 1
            continue
        seen.add(text)
        out.append(Example(text=text, labels=_labels(plan, frame)))
    if len(out) < k:  # near the grammar's capacity: pick the rest from the full enumeration
        pool: dict[str, Example] = {}
        for plan in plans:
            for text, frame in _enumerate_plan(plan):
                if text not in seen and text not in pool:
                    pool[text] = Example(text=text, labels=_labels(plan, frame))
        need = k - len(out)
        if need > len(pool):
            kind = "harmful" if harmful else "harmless"
            raise ValueError(f"the refusal grammar cannot produce {k} distinct {kind} prompts")
        chosen = rng.sample(list(pool.values()), need)
        seen.update(e.text for e in chosen)
        out.extend(chosen)
    return out


def draw_refusal(n: int, seed: int = 0, harmful_fraction: float = 0.4) -> list[Example]:
    """n independent draws of the grammar, repeats kept: the distribution the prior's prompts
    come from, before `generate_refusal` de-duplicates them.

    Why it exists: a faithful generator samples this distribution, and some frames have few
    fillers, so fresh draws land on prompts already in the prior. How often they do is the
    copy rate a perfect inverter would show (`bench/prior_copy_rate.py`), the reference the
    generator's own copy rate is read against.
    """
    if n < 0:
        raise ValueError("n must be non-negative")
    if not 0.0 <= harmful_fraction <= 1.0:
        raise ValueError("harmful_fraction must lie in [0, 1]")
    rng = random.Random(f"refusal-draws:{seed}")
    out: list[Example] = []
    for _ in range(n):
        harmful = rng.random() < harmful_fraction
        plan = rng.choice(_HARMFUL_PLANS if harmful else (_HARMLESS_PLAN,))
        text, frame = _sample_one(rng, plan)
        out.append(Example(text=text, labels=_labels(plan, frame)))
    return out


def generate_refusal(n: int, seed: int = 0, harmful_fraction: float = 0.4) -> list[Example]:
    """n distinct harmful and harmless instructions, shuffled together.

    ``round(n * harmful_fraction)`` of them are harmful.  Labels: ``harmfulness``
    ("harmful" | "harmless"), ``reason`` (a key of ``REASON_CATEGORIES``, None when harmless)
    and ``method`` (an entry of ``METHODS``).  The same (n, seed, harmful_fraction) always gives
    the same list.  Raises ValueError when the grammar cannot produce that many distinct prompts.
    """
    if n < 0:
        raise ValueError("n must be non-negative")
    if not 0.0 <= harmful_fraction <= 1.0:
        raise ValueError("harmful_fraction must lie in [0, 1]")
    n_harmful = round(n * harmful_fraction)
    n_harmless = n - n_harmful
    if n_harmful > sum(_upper_bound(p) for p in _HARMFUL_PLANS) or n_harmless > _upper_bound(_HARMLESS_PLAN):
        raise ValueError(f"the refusal grammar cannot produce {n} distinct prompts with this harmful fraction")
    rng = random.Random(f"refusal:{seed}")
    seen: set[str] = set()
    examples = _draw(rng, n_harmful, True, seen) + _draw(rng, n_harmless, False, seen)
    rng.shuffle(examples)
    return examples
