"""Read a text back through the refusal grammar: its labels, when the grammar made it.

Why: FCR on generated samples rests on a labeller applied to texts it was not trained on.
For the built-in refusal prior the grammar itself is a labeller with no error: a sample
the grammar can produce (a frame around an act with known slot fillers) has the labels of
the plan that produces it. Parsing the generator's samples therefore measures the learned
labeller's accuracy *on generated samples* (issue 20), where its held-out accuracy on
prior prompts says nothing. Samples the grammar cannot produce (novel wording) are left
out, so the estimate covers the parseable share only, which is reported with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from . import refusal as g

_MODIFIERS = g._COVERT_MODS + g._GENERAL_MODS + g._LENGTH_MODS + g._TONE_MODS


@dataclass(frozen=True)
class _ActPattern:
    regex: re.Pattern
    harmful: bool
    reason: str | None


def _slot_pattern(template: str) -> str:
    out, pos = [], 0
    for m in g._SLOT_RE.finditer(template):
        out.append(re.escape(template[pos:m.start()]))
        out.append("(?:" + "|".join(re.escape(v) for v in sorted(g._SLOTS[m.group(1)], key=len, reverse=True)) + ")")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return "".join(out)


@cache
def _frames() -> list[tuple[re.Pattern, g._Frame]]:
    out = []
    for f in g._FRAME_LIST:
        head, _, tail = f.template.partition("{" + f.form + "}")
        first = head[:1]
        head_re = (f"[{re.escape(first.upper())}{re.escape(first.lower())}]" + re.escape(head[1:])) if first else ""
        out.append((re.compile(head_re + "(?P<vp>.+)" + re.escape(tail) + r"\Z", re.S), f))
    return out


@cache
def _acts() -> dict[tuple[str, str], list[_ActPattern]]:
    """(kind, form) -> the acts usable there, each with its plan's labels."""
    mods = "(?:" + "|".join(re.escape(m) for m in _MODIFIERS) + ")?"
    out: dict[tuple[str, str], list[_ActPattern]] = {}
    plans = [(True, r, g._HARMFUL[r]) for r in g.REASON_CATEGORIES] + [(False, None, g._HARMLESS_POOL)]
    for harmful, reason, by_kind in plans:
        for kind, acts in by_kind.items():
            for act in acts:
                for form, template in act.forms.items():
                    rx = re.compile(_slot_pattern(template) + mods + r"\Z", re.S)
                    out.setdefault((kind, form), []).append(_ActPattern(rx, harmful, reason))
    return out


def parse_refusal(text: str) -> dict[str, str | None] | None:
    """Labels (`harmfulness`, `reason`, `method`) of a text the refusal grammar produces, or
    None when it produces no such text. A label the grammar leaves ambiguous (two parses
    that disagree) is absent from the result; `reason` is None for a harmless parse."""
    text = text.strip()
    found: set[tuple[str, str | None, str]] = set()
    for rx, frame in _frames():
        m = rx.match(text)
        if not m:
            continue
        vp = m.group("vp")
        for act in _acts().get((frame.kind, frame.form), ()):
            if act.regex.match(vp):
                found.add(("harmful" if act.harmful else "harmless", act.reason, frame.method))
    if not found:
        return None
    out: dict[str, str | None] = {}
    for i, name in enumerate(("harmfulness", "reason", "method")):
        values = {f[i] for f in found}
        if len(values) == 1:
            out[name] = values.pop()
    return out


@cache
def _act_searches() -> list[tuple[re.Pattern, bool]]:
    """Every act form of the grammar as a pattern to search for anywhere in a text, with
    whether the act is harmful."""
    plans = [(True, g._HARMFUL[r]) for r in g.REASON_CATEGORIES] + [(False, g._HARMLESS_POOL)]
    return [(re.compile(r"(?<!\w)" + _slot_pattern(template) + r"(?!\w)", re.I), harmful)
            for harmful, by_kind in plans for acts in by_kind.values() for act in acts for template in act.forms.values()]


def act_harmfulness(text: str) -> str | None:
    """Harmfulness by the grammar's acts found anywhere in `text` ("harmful" / "harmless"), or
    None where none is found or the acts found disagree.

    Why: most generated samples are not whole productions (`parse_refusal` reads a quarter of
    them), but in this grammar harmfulness belongs to the act ("build a pipe bomb"), not to
    the frame around it, so an act found inside a new frame still says what the grammar's own
    rule would label it — a check on the learned labeller where it extrapolates (issue 20).
    Acts are matched as whole words ("fix" is not found in "prefix"), and by that rule alone:
    "the hero refuses to build an untraceable gun" holds a harmful act."""
    found = {harmful for rx, harmful in _act_searches() if rx.search(text)}
    return None if len(found) != 1 else ("harmful" if found.pop() else "harmless")
