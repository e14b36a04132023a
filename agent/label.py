"""`autoscope label`: label every row of a JSONL, CSV or JSON file with an LLM feature.

Resumable: the output is JSONL appended in chunks; rows whose id is already in it are not
sent again. Each output row keeps its id, text, label, the judge's raw answer, the judge
model, and — when there is no label — the reason (`error`); a row the judge cannot label
is an explicit null with its reason, never a guess.
"""

from __future__ import annotations

import contextlib
import csv
import json
import time
from pathlib import Path

from typing import Literal

from pydantic import BaseModel

from features.llm_specs import SPECS, LLMFeatureSpec
from scope_core.api import AutoscopeError

from .judging.judge import JudgeClient, JudgeConfig
from .judging.channel import channel_label_many
from .judging.llm_feature import label_many

DEFAULT_FIELDS = ("instruction", "text", "prompt", "goal", "Behavior", "forbidden_prompt")


class LabelConfig(BaseModel):
    feature: str
    input: str
    output: str
    field: str | None = None
    labels: list[str] | None = None
    batch: int = 1
    chunk: int = 32
    method: Literal["auto", "ask", "channel"] = "auto"
    judge: JudgeConfig = JudgeConfig()


def read_rows(path: Path, field: str | None) -> list[tuple[str, str]]:
    """(id, text) per row; ids from an `id` column when present, else the row number."""
    if not path.exists():
        raise AutoscopeError(f"input file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    elif suffix == ".jsonl":
        rows = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise AutoscopeError(f"{path} line {i}: not valid JSON ({e.msg})") from None
    elif suffix == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise AutoscopeError(f"{path}: not valid JSON ({e.msg})") from None
        if not isinstance(rows, list):
            raise AutoscopeError(f"{path}: expected a list of objects")
    else:
        raise AutoscopeError(f"{path}: use a .jsonl, .csv or .json file")
    if not rows:
        raise AutoscopeError(f"{path} has no rows")
    if not isinstance(rows[0], dict):
        raise AutoscopeError(f"{path}: rows must be objects with a text field")
    cols = list(rows[0])
    key = field or next((c for c in DEFAULT_FIELDS if c in cols), None)
    if key is None or key not in cols:
        raise AutoscopeError(f"{path}: no text column {field or '/'.join(DEFAULT_FIELDS)!r} (columns: {', '.join(cols)}); pass --field")
    return [(str(r.get("id", i)), str(r.get(key) or "")) for i, r in enumerate(rows)]


def labelling_classes(spec: LLMFeatureSpec, labels: tuple[str, ...] | None, method: str, engine: str) -> dict[str | None, str] | None:
    """The classes to score when the channel labeller is used (None: ask the question).

    `auto` scores wherever it can — a feature with class descriptions, on a judge that returns
    prompt log-probabilities (not llama.cpp's server) — because scored reason labels agree
    with people far more often than asked ones (BENCHMARKS §6)."""
    classes = spec.channel_classes(labels)
    if method == "ask" or (method == "auto" and (classes is None or engine == "llamacpp")):
        return None
    if classes is None:
        raise AutoscopeError(f"feature {spec.name!r} has no label set to score: use --method ask")
    if engine == "llamacpp":
        raise AutoscopeError("llama.cpp's server returns no prompt log-probabilities, which --method channel needs: "
                             "use --embedded-engine batched (or a vLLM judge), or --method ask")
    return classes


def label_file(cfg: LabelConfig, judge: JudgeClient, progress: bool = True) -> dict:
    if cfg.feature not in SPECS:
        raise AutoscopeError(f"unknown LLM feature {cfg.feature!r}; built-in: {', '.join(SPECS)}")
    spec = SPECS[cfg.feature]
    labels = tuple(cfg.labels) if cfg.labels else spec.labels
    question = spec.ask(labels)
    classes = labelling_classes(spec, labels, cfg.method, judge.config.engine)
    rows = read_rows(Path(cfg.input), cfg.field)
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    done: set[str] = set()
    if out.exists():
        for line in out.read_text().splitlines():
            try:
                done.add(json.loads(line)["id"])
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut by a kill
    todo = [(i, t) for i, t in rows if i not in done]
    t0 = time.perf_counter()
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"labelling {cfg.feature}", unit="row")
    n_null = n_failed = 0
    first_error: str | None = None
    for start in range(0, len(todo), cfg.chunk):
        chunk = todo[start : start + cfg.chunk]
        texts = [t for _, t in chunk if t.strip()]
        res = (channel_label_many(judge, spec.name, classes, texts) if classes else
               label_many(judge, spec.name, question, labels, texts, spec.allow_null, spec.normaliser, cfg.batch))
        with out.open("a") as f:
            for i, t in chunk:
                o = res.get(t)
                rec = {"id": i, "text": t, "label": o.label if o else None, "raw": o.raw if o else None,
                       "model": judge.config.model, "error": (o.error if o else "empty text")}
                n_null += rec["label"] is None
                if rec["label"] is None and rec["error"] and rec["error"] != "empty text":
                    n_failed += 1
                    first_error = first_error or rec["error"]
                f.write(json.dumps(rec) + "\n")
        if bar:
            bar.update(len(chunk))
    if bar:
        bar.close()
    dt = time.perf_counter() - t0
    return {"rows": len(rows), "method": "channel" if classes else "ask", "labelled_now": len(todo), "already_done": len(done),
            "null": n_null, "failed": n_failed, "first_error": first_error, "seconds": dt,
            "rows_per_s": len(todo) / dt if dt > 0 and todo else 0.0, "judge_calls": judge.calls,
            "cache_hits": judge.cache.hits}


def check_method(method: str) -> str:
    """`--method` as the config takes it, or an error that names the choices."""
    if method not in ("auto", "ask", "channel"):
        raise AutoscopeError(f"unknown --method {method!r}: use auto, ask or channel")
    return method


def label_with_judge(cfg: LabelConfig, embedded_engine: str = "batched") -> dict:
    """`label_file` with the configured judge, or without a judge URL with the embedded judge
    started for this job alone (`embedded_engine`: batched or llamacpp) and stopped after."""
    with contextlib.ExitStack() as stack:
        if cfg.judge.base_url:
            client = JudgeClient(cfg.judge)
        else:
            from .judging.embedded_judge import EmbeddedJudge

            client = stack.enter_context(EmbeddedJudge(engine=embedded_engine)).client(cfg.judge)
        return label_file(cfg, client)


def stats_line(stats: dict) -> str:
    """The job's counts on one line (the first error is left to `nothing_labelled`)."""
    return " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items() if k != "first_error")


def nothing_labelled(stats: dict, output: str) -> str | None:
    """Why the job failed when every row it tried failed (None when any row was labelled)."""
    if stats["labelled_now"] and stats["failed"] == stats["labelled_now"]:
        return (f"no row was labelled: every one of the {stats['labelled_now']} rows failed "
                f"(first: {stats['first_error']}); see the error field of {output}")
    return None
