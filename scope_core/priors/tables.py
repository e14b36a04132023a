"""The priors' vocabularies and templates: ``data/<prior>.json``, read once and validated.

Why data files: the tables are most of each prior and are edited as text, not code. The
schemas below say what each file holds; a malformed file fails on first use with an error
naming the file and the key at fault, instead of surfacing later as an odd prompt.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib.resources import files
from typing import Annotated, Literal, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError, model_validator

__all__ = ["IclTables", "IoiTables", "KINDS", "KIND_LETTERS", "RefusalTables", "TableError", "load_table"]


class TableError(ValueError):
    """A prior's data file is missing, is not JSON, or does not match its schema."""


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    notation: dict[str, list[str]] = {}  # notes for whoever edits the file; not used by the code


T = TypeVar("T", bound=_Table)


@cache
def load_table(name: str, schema: type[T]) -> T:
    """``scope_core/priors/data/<name>.json`` validated against ``schema`` (cached per process)."""
    where = f"scope_core/priors/data/{name}.json"
    try:
        raw = json.loads((files(__package__) / "data" / f"{name}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: invalid JSON or UTF-8
        raise TableError(f"{where}: {e}") from None
    try:
        return schema.model_validate(raw)
    except ValidationError as e:
        problems = "\n".join(  # a cross-key check (loc empty) names its own key in the message
            "  " + ": ".join(filter(None, (".".join(map(str, err["loc"])), err["msg"].removeprefix("Value error, "))))
            for err in e.errors()
        )
        raise TableError(f"{where} does not match its schema:\n{problems}") from None


Phrases = tuple[str, ...]

# ----------------------------------------------------------------------------- refusal.json

KINDS = ("howto", "program", "direct", "public", "art", "game")
KIND_LETTERS = {"H": "howto", "P": "program", "D": "direct", "U": "public", "A": "art", "G": "game"}
_SLOT = re.compile(r"\{([a-z_]+)\}")


class FrameRow(NamedTuple):
    """A surface frame of a method: the act goes where the template says {base}, {s} or {ing}."""

    kind: Literal["howto", "program", "direct", "public", "art", "game"]
    template: str
    flags: Annotated[str, StringConstraints(pattern=r"^[MLT]*$")]


class ActRow(NamedTuple):
    """A verb phrase: ``^verb`` is inflected per frame, ``{slot}`` filled from the slots."""

    template: str
    kinds: Annotated[str, StringConstraints(pattern=r"^[HPDUAG]+$")]
    mods: Annotated[str, StringConstraints(pattern=r"^[cg]*$")]


class Modifiers(_Table):
    covert: Phrases
    general: Phrases
    length: Phrases
    tone: Phrases


class Verbs(_Table):
    irregular: dict[str, tuple[str, str]]  # verb -> (third person, gerund)
    double_final_consonant: frozenset[str]


class RefusalTables(_Table):
    reason_categories: dict[str, str]
    modifiers: Modifiers
    verbs: Verbs
    frames: dict[str, tuple[FrameRow, ...]]  # method -> frames
    harmful_acts: dict[str, tuple[ActRow, ...]]  # reason category -> acts
    harmless_acts: dict[str, tuple[ActRow, ...]]  # topic -> acts
    slots: dict[str, Phrases]

    @model_validator(mode="after")
    def _consistent(self) -> RefusalTables:
        if set(self.harmful_acts) != set(self.reason_categories):
            raise ValueError("harmful_acts: its groups must be exactly the reason_categories")
        for method, frames in self.frames.items():
            for i, f in enumerate(frames):
                if sum("{" + form + "}" in f.template for form in ("base", "s", "ing")) != 1:
                    raise ValueError(f"frames.{method}.{i}: the template needs exactly one of {{base}}, {{s}}, {{ing}}")
        for table in ("harmful_acts", "harmless_acts"):
            for group, acts in getattr(self, table).items():
                for i, act in enumerate(acts):
                    slots = _SLOT.findall(act.template)
                    unknown = [s for s in slots if s not in self.slots]
                    if unknown:
                        raise ValueError(f"{table}.{group}.{i}: unknown slot {unknown[0]!r} (not a key of slots)")
                    if len(set(slots)) != len(slots):
                        raise ValueError(f"{table}.{group}.{i}: a slot appears twice in {act.template!r}")
        return self


# --------------------------------------------------------------------------------- ioi.json

_IOI_PLACEHOLDERS = {"N1", "N2", "S", "PLACE", "OBJECT"}


class IoiTables(_Table):
    names: tuple[Annotated[str, StringConstraints(pattern=r"^[A-Z][a-z]+$")], ...]
    places: Phrases
    objects: tuple[Annotated[str, StringConstraints(pattern=r"^[^aeiouAEIOU]")], ...]  # "a {OBJECT}"
    templates: Phrases

    @model_validator(mode="after")
    def _consistent(self) -> IoiTables:
        if len(set(self.names)) != len(self.names):
            raise ValueError("names: a name appears twice")
        for i, t in enumerate(self.templates):
            fields = set(re.findall(r"\{(\w+)\}", t))
            if not {"N1", "N2", "S"} <= fields <= _IOI_PLACEHOLDERS:
                raise ValueError(f"templates.{i}: needs {{N1}}, {{N2}}, {{S}} and no placeholder but {{PLACE}}, {{OBJECT}}")
            clash = set(re.findall(r"\b[A-Z][a-z]+\b", t)) & set(self.names)
            if clash:  # the labels are recovered by counting names
                raise ValueError(f"templates.{i}: the word {sorted(clash)[0]!r} is also a name")
        return self


# --------------------------------------------------------------------------------- icl.json


class IclTables(_Table):
    languages: Phrases
    directions: tuple[tuple[str, str], ...]  # (source, target)
    words: dict[str, tuple[Phrases, ...]]  # topic -> rows, one word per language

    @model_validator(mode="after")
    def _consistent(self) -> IclTables:
        for i, (s, t) in enumerate(self.directions):
            if s == t or s not in self.languages or t not in self.languages:
                raise ValueError(f"directions.{i}: needs two different languages of languages")
        seen: set[str] = set()
        for topic, rows in self.words.items():
            for i, row in enumerate(rows):
                if len(row) != len(self.languages):
                    raise ValueError(f"words.{topic}.{i}: needs one word per language, {len(self.languages)} in all")
                for w in row:
                    if not (w.isalpha() and w == w.lower()):
                        raise ValueError(f"words.{topic}.{i}: {w!r} is not a single lower-case word")
                    if w in seen:  # the direction of a prompt must be readable off its demonstrations
                        raise ValueError(f"words.{topic}.{i}: the spelling {w!r} appears twice")
                    seen.add(w)
        return self
