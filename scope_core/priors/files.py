"""Loaders for real prompt files: refusal-direction / Alpaca JSON, AdvBench, HarmBench and
StrongREJECT CSV, and generic JSONL.

Each loader checks the columns its format needs and fails with one line that says which
columns it expected and which it found. Harm categories assigned by people are kept as
`reason_human` and mapped onto autoscope's built-in `reason` list (`HUMAN_TO_REASON`).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..errors import AutoscopeError
from ..jsonl import json_lines
from .base import Example

# Human categories (HarmBench SemanticCategory, StrongREJECT category) -> built-in reason.
# Where a human category spans several built-in ones, the most frequent match is used;
# the mapping is documented so that agreement numbers can be read against it.
HUMAN_TO_REASON: dict[str, str] = {
    # HarmBench
    "chemical_biological": "weapons",
    "cybercrime_intrusion": "cybercrime",
    "misinformation_disinformation": "misinformation",
    "harassment_bullying": "hate_harassment",
    "illegal": "theft",
    "harmful": "violence",
    "copyright": "theft",
    # StrongREJECT
    "Disinformation and deception": "misinformation",
    "Hate, harassment and discrimination": "hate_harassment",
    "Illegal goods and services": "drugs",
    "Non-violent crimes": "fraud",
    "Sexual content": "hate_harassment",
    "Violence": "violence",
}

FORMATS_HELP = (
    "known formats: refusal-direction or Alpaca JSON (a list of objects with 'instruction'), "
    "AdvBench CSV ('goal'), HarmBench CSV ('Behavior', 'SemanticCategory'), StrongREJECT CSV "
    "('forbidden_prompt', 'category'), JSONL with a 'text', 'prompt' or 'instruction' field"
)


def _harmfulness_from_name(path: Path) -> str | None:
    name = path.name.lower()
    if "harmless" in name or "alpaca" in name:
        return "harmless"
    if "harmful" in name or "advbench" in name or "harmbench" in name or "strongreject" in name:
        return "harmful"
    return None


def _need(cols: list[str], required: tuple[str, ...], path: Path, fmt: str) -> None:
    missing = [c for c in required if c not in cols]
    if missing:
        raise AutoscopeError(
            f"{path}: looks like {fmt} but lacks column(s) {', '.join(missing)} (found: {', '.join(cols) or 'none'}); "
            + FORMATS_HELP
        )


def _labels(harm: str | None, human: str | None = None) -> dict[str, str | None]:
    labels: dict[str, str | None] = {"harmfulness": harm}
    if human is not None:
        labels["reason_human"] = human
        labels["reason"] = HUMAN_TO_REASON.get(human)
    return labels


def _load_csv(path: Path, label: str | None) -> list[Example]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        rows = list(reader)
    src = path.name
    if "goal" in cols:
        return [Example(r["goal"].strip(), _labels(label or "harmful"), src) for r in rows if r.get("goal", "").strip()]
    if "Behavior" in cols or "SemanticCategory" in cols:
        _need(cols, ("Behavior", "SemanticCategory"), path, "HarmBench CSV")
        # contextual behaviours are incomplete without their context string: skip them
        return [
            Example(r["Behavior"].strip(), _labels(label or "harmful", r["SemanticCategory"].strip()), src)
            for r in rows
            if r["Behavior"].strip() and not (r.get("ContextString") or "").strip()
        ]
    if "forbidden_prompt" in cols or "category" in cols:
        _need(cols, ("forbidden_prompt", "category"), path, "StrongREJECT CSV")
        return [
            Example(r["forbidden_prompt"].strip(), _labels(label or "harmful", r["category"].strip()), src)
            for r in rows
            if r["forbidden_prompt"].strip()
        ]
    raise AutoscopeError(f"{path}: unknown CSV columns ({', '.join(cols) or 'none'}); " + FORMATS_HELP)


def _text_of(obj: dict, path: Path, line: int | None = None) -> str:
    for key in ("instruction", "text", "prompt", "goal", "forbidden_prompt", "Behavior"):
        if isinstance(obj.get(key), str):
            text = obj[key].strip()
            extra = obj.get("input")
            if key == "instruction" and isinstance(extra, str) and extra.strip():
                text = f"{text}\n{extra.strip()}"  # Alpaca rows with an input need it
            return text
    where = f" line {line}" if line is not None else ""
    raise AutoscopeError(f"{path}{where}: a record has none of the fields instruction/text/prompt; " + FORMATS_HELP)


def _load_json(path: Path, label: str | None) -> list[Example]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AutoscopeError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); " + FORMATS_HELP) from None
    if isinstance(data, dict):
        for key in ("data", "examples", "instructions"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
    if not isinstance(data, list) or (data and not isinstance(data[0], dict)):
        raise AutoscopeError(f"{path}: expected a list of objects; " + FORMATS_HELP)
    harm = label or _harmfulness_from_name(path)
    if harm is None and data and "output" in data[0]:
        harm = "harmless"  # Alpaca
    out = []
    for obj in data:
        text = _text_of(obj, path)
        if text:
            labels = {k: v for k, v in obj.items()
                      if k in ("harmfulness", "reason", "method", "task", "subject", "object") and (v is None or isinstance(v, str))}
            labels.setdefault("harmfulness", harm)
            if isinstance(obj.get("category"), str):
                labels.update({"reason_human": obj["category"], "reason": HUMAN_TO_REASON.get(obj["category"], labels.get("reason"))})
            out.append(Example(text, labels, path.name))
    return out


def _load_jsonl(path: Path, label: str | None) -> list[Example]:
    out = []
    harm = label or _harmfulness_from_name(path)
    for i, obj in json_lines(path):
        text = _text_of(obj, path, i)
        labels = obj.get("labels") if isinstance(obj.get("labels"), dict) else {}
        labels = dict(labels)
        labels.setdefault("harmfulness", obj.get("harmfulness", harm))
        out.append(Example(text, labels, path.name))
    return out


def load_file(path: str | Path, label: str | None = None) -> list[Example]:
    """Load one prompt file; `label` ('harmful'/'harmless') overrides the name-based guess."""
    p = Path(path)
    if not p.exists():
        raise AutoscopeError(f"data file {p} does not exist; check the path given to --data")
    if p.is_dir():
        raise AutoscopeError(f"{p} is a directory; pass a .json, .jsonl or .csv file to --data")
    if label not in (None, "harmful", "harmless"):
        raise AutoscopeError(f"label must be 'harmful' or 'harmless', got {label!r}")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        out = _load_csv(p, label)
    elif suffix == ".jsonl":
        out = _load_jsonl(p, label)
    elif suffix == ".json":
        out = _load_json(p, label)
    else:
        raise AutoscopeError(f"{p}: unsupported extension {suffix!r}; " + FORMATS_HELP)
    if not out:
        raise AutoscopeError(f"{p} holds no prompts; give a file with at least one row")
    return out
