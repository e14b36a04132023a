"""How often the labeller is right on the generator's own samples, where the prior's
grammar can tell (issue 20: a learned labeller's held-out accuracy is measured on prior
prompts, yet generator FCR labels generated samples).

For the built-in refusal prior (`scope_core.priors.refusal_parse`) every sample the
grammar can produce has known labels; the audit compares the feature's labels on the
*accepted* samples (those FCR counts) with them. Only the sample side of an FCR pair is
labelled by the labeller on unseen text — query labels are the prior's own — so a label
error rate e moves the generator FCR by at most e: a generator-minus-empirical gap
smaller than e's upper bound is within what label noise can explain, and is flagged.

Where no grammar can read samples back (real prompts, `--data`), the audit is a labelled
audit set: `autoscope fcr --audit-sheet FILE` writes a random draw of accepted samples for
people to label, and `--audit-set FILE` reads it back (`load_audit_set`, `audit_on_set`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel

from .data import PriorConfig
from .errors import AutoscopeError
from .jsonl import json_lines
from .fcr import wilson

Parser = Callable[[str], "dict | None"]
AUDITED = ("harmfulness", "reason", "method")


class LabellerAudit(BaseModel):
    feature: str
    n_accepted: int  # accepted samples (what FCR counts)
    n_parsed: int  # of them, texts the prior's grammar produces with an unambiguous label
    n_correct: int
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    source: str = "refusal grammar"

    @property
    def max_error(self) -> float | None:
        """Upper bound (95%) of the label error rate on generated samples."""
        return None if self.ci_low is None else 1 - self.ci_low

    def explains(self, gap: float | None) -> bool | None:
        """Whether label noise alone could produce a generator-minus-empirical FCR gap this size."""
        if gap is None or self.max_error is None:
            return None
        return abs(gap) <= self.max_error

    def line(self) -> str:
        if self.source.startswith("audit set"):
            if self.accuracy is None:
                return f"{self.feature}: the {self.source} labels no sample for this feature"
            return (f"{self.feature}: labeller accuracy on generated samples {self.accuracy:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}] "
                    f"({self.n_parsed} samples of the {self.source}, labelled by people)")
        if self.accuracy is None:
            return f"{self.feature}: no accepted sample the {self.source} can parse (of {self.n_accepted})"
        return (f"{self.feature}: labeller accuracy on generated samples {self.accuracy:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}] "
                f"({self.n_parsed} of {self.n_accepted} accepted samples parsed by the {self.source})")


def grammar_for(prior: PriorConfig) -> Parser | None:
    """The parser that knows the labels of the prior's texts, when the prior is a built-in
    grammar alone (a `--data` file mixed in could carry other labels)."""
    if prior.task == "refusal" and not prior.data:
        from .priors.refusal_parse import parse_refusal

        return parse_refusal
    return None


def expected_label(feature: str, parsed: dict) -> tuple[bool, str | None]:
    """(known, label) of a parsed text for an audited feature; reason and method are gated
    on harmfulness as the built-in features are (None on harmless texts)."""
    if "harmfulness" not in parsed:
        return False, None
    if feature == "harmfulness":
        return True, parsed["harmfulness"]
    if parsed["harmfulness"] == "harmless":
        return True, None
    return (feature in parsed), parsed.get(feature)


def audit_labeller(feature: str, texts: Sequence[str], labels: Sequence, parse: Parser) -> LabellerAudit:
    """Accuracy of `labels` (the feature's labels of accepted sample `texts`) against the grammar."""
    n_parsed = n_correct = 0
    for text, label in zip(texts, labels):
        parsed = parse(text)
        if parsed is None:
            continue
        known, want = expected_label(feature, parsed)
        if not known:
            continue
        n_parsed += 1
        n_correct += label == want
    if n_parsed == 0:
        return LabellerAudit(feature=feature, n_accepted=len(texts), n_parsed=0, n_correct=0, accuracy=None, ci_low=None, ci_high=None)
    lo, hi = wilson(n_correct, n_parsed)
    return LabellerAudit(feature=feature, n_accepted=len(texts), n_parsed=n_parsed, n_correct=n_correct,
                         accuracy=n_correct / n_parsed, ci_low=lo, ci_high=hi)


class AuditSetError(AutoscopeError):
    """An audit set that cannot be read: says which line and what to write instead."""


AUDIT_SET_FORMAT = ('one JSON object per line: {"text": "<a generated sample>", "labels": {"<feature>": "<label>" or null}} '
                    '(null where the feature is undefined, e.g. reason on a harmless text)')


def load_audit_set(path: str | Path) -> dict[str, list[tuple[str, object]]]:
    """Per feature, the (text, label) pairs a person gave generated samples: the labelled audit
    set for priors whose grammar cannot read samples back (real prompts, `--data`). Why a file
    of people's labels and not another model's: an audit is only worth its ground truth, and a
    second labeller's agreement would not bound the first one's error. A line without a label
    for a feature leaves that feature unaudited on it (fill the sheet `fcr --audit-sheet` writes)."""
    p = Path(path)
    if not p.is_file():
        raise AuditSetError(f"audit set {p} does not exist: write one with `autoscope fcr ... --audit-sheet {p}`, label it, "
                            f"and pass it back ({AUDIT_SET_FORMAT})")
    out: dict[str, list[tuple[str, object]]] = {}
    for k, rec in json_lines(p, f"expected {AUDIT_SET_FORMAT}", AuditSetError):
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str) or not isinstance(rec.get("labels", {}), dict):
            raise AuditSetError(f"{p} line {k}: needs a string 'text' and a 'labels' object; expected {AUDIT_SET_FORMAT}")
        for feature, label in rec.get("labels", {}).items():
            if label == "":  # a sheet's unfilled cell
                continue
            # labellers give strings (or None): a typed 1 or true must still match "1" or "True"
            out.setdefault(feature, []).append((rec["text"], None if label is None else str(label)))
    return out


def audit_on_set(feature: str, pairs: Sequence[tuple[str, object]], labels: Sequence, source: str) -> LabellerAudit:
    """Accuracy of the feature's `labels` of the audit set's texts against the people's labels."""
    n_correct = sum(label == want for (_, want), label in zip(pairs, labels))
    if not pairs:
        return LabellerAudit(feature=feature, n_accepted=0, n_parsed=0, n_correct=0, accuracy=None, ci_low=None, ci_high=None, source=source)
    lo, hi = wilson(n_correct, len(pairs))
    return LabellerAudit(feature=feature, n_accepted=len(pairs), n_parsed=len(pairs), n_correct=n_correct,
                         accuracy=n_correct / len(pairs), ci_low=lo, ci_high=hi, source=source)
