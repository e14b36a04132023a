"""The record every task prior yields: a prompt and its ground-truth labels."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Example:
    """One prompt of a task prior.

    `text` is the user instruction only (no chat template); targets add their template.
    `labels` maps a feature name to a label, or None where the feature is undefined
    (e.g. `reason` of a harmless prompt).
    """

    text: str
    labels: dict[str, str | None] = field(default_factory=dict)
    source: str = "generated"
