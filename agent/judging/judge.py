"""The judge: chat completions against any OpenAI-compatible server, with structured
output, validation retries, transient-failure retries, a persistent cache and bounded
concurrency — behind one small interface (`JudgeClient.ask`, `JudgeClient.ask_many`).

Structured output is requested per engine: vLLM and OpenAI take
`response_format={"type": "json_schema", ...}`; llama-cpp-python's server (the embedded
engine) takes `{"type": "json_object", "schema": ...}` and rejects json_schema; the batched
embedded engine (`serving.batch_server`) takes json_schema. The
answer is always validated by pydantic; an invalid answer is retried with the validation
error shown to the model, and after the last try the failure is a typed `JudgeFailure`,
never a fake answer.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError
from tenacity import RetryCallState, Retrying, retry_if_exception

T = TypeVar("T", bound=BaseModel)
Engine = Literal["vllm", "openai", "llamacpp", "batched"]


class JudgeConfig(BaseModel):
    """Where the judge is and how to ask it. Environment: AUTOSCOPE_JUDGE_URL, _KEY, _MODEL, _ENGINE."""

    base_url: str | None = None
    api_key: str = "not-needed"
    model: str = "judge"
    engine: Engine = "vllm"
    temperature: float = 0.0
    max_tokens: int = 512
    timeout_s: float = 120.0
    max_attempts: int = 4  # transient failures (timeout, 429, 5xx)
    outage_s: float = Field(300.0, ge=0, description="how long to wait for an unreachable judge (connection refused or reset) "
                            "before giving up; a restarted server is picked up where the run was")
    identity: str | None = Field(None, description="what the server is (engine, weights), for the answer cache; default: URL and model")
    validation_retries: int = 2  # invalid answers shown back to the model
    concurrency: int = 4
    cache_path: str | None = Field(None, description="sqlite file; default $AUTOSCOPE_CACHE_DIR (~/.cache/autoscope)/judge_cache.sqlite")

    @classmethod
    def from_env(cls, **overrides: Any) -> JudgeConfig:
        env = {
            "base_url": os.environ.get("AUTOSCOPE_JUDGE_URL"),
            "api_key": os.environ.get("AUTOSCOPE_JUDGE_KEY"),
            "model": os.environ.get("AUTOSCOPE_JUDGE_MODEL"),
            "engine": os.environ.get("AUTOSCOPE_JUDGE_ENGINE"),
        }
        data = {k: v for k, v in env.items() if v}
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)


class JudgeFailure(Exception):
    """The judge could not give a valid answer; `reason` says why (shown in reports)."""

    def __init__(self, reason: str, raw: str | None = None):
        super().__init__(reason)
        self.reason, self.raw = reason, raw


class JudgeUnavailable(JudgeFailure):
    """The judge could not be reached within `outage_s`, or its process died twice. Unlike
    an invalid answer this says nothing about the input, so callers stop (keeping what is
    done) instead of recording a failed label or hypothesis."""


class Answer(BaseModel, Generic[T]):
    value: T | None = None
    raw: str | None = None
    cached: bool = False
    error: str | None = None


class JudgeCache:
    """Persistent answers keyed on (server identity, messages, sampling parameters, schema).
    The identity is the engine and weights for the embedded judges (stable across ports) and
    URL plus served model for any other server, so two servers behind one alias never share
    answers."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, raw TEXT NOT NULL, created REAL)")
        self._db.commit()
        self.hits = self.misses = 0

    @staticmethod
    def key(server: str, messages: Sequence[dict], params: dict, schema: dict | None) -> str:
        blob = json.dumps({"server": server, "messages": list(messages), "params": params, "schema": schema}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT raw FROM answers WHERE key = ?", (key,)).fetchone()
            if row:
                self.hits += 1
            else:
                self.misses += 1
        return row[0] if row else None

    def put(self, key: str, raw: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?)", (key, raw, time.time()))
            self._db.commit()


_BOUNDS = {"maxLength", "minLength", "maxItems", "minItems"}


def unbounded_paths(schema: dict) -> list[str]:
    """Where a JSON schema lets an answer run on: strings without maxLength (and no enum or
    const) and arrays without maxItems. A grammar-constrained engine closes a bounded string
    or list when the bound is reached; an unbounded one runs to max_tokens."""
    defs = schema.get("$defs", {})
    out: list[str] = []

    def walk(node: Any, path: str, seen: frozenset[str]) -> None:
        if isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]", seen)
            return
        if not isinstance(node, dict):
            return
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.rsplit("/", 1)[-1]
            if name not in seen:
                walk(defs.get(name, {}), f"{path}->{name}", seen | {name})
        bounded_value = "enum" in node or "const" in node
        if node.get("type") == "string" and not bounded_value and "maxLength" not in node:
            out.append(path or "/")
        if node.get("type") == "array" and "maxItems" not in node:
            out.append(path or "/")
        for key in ("properties", "$defs"):
            for k, v in (node.get(key) or {}).items():
                if key == "properties":
                    walk(v, f"{path}.{k}", seen)
        for key in ("items", "anyOf", "oneOf", "allOf", "additionalProperties"):
            if key in node:
                walk(node[key], f"{path}.{key}", seen)

    walk(schema, "", frozenset())
    return out


DEFAULT_MAX_CHARS, DEFAULT_MAX_ITEMS = 1000, 32


def bounded(node: Any) -> Any:
    """`node` with a maxLength on every free string and a maxItems on every array that has
    none (DEFAULT_MAX_CHARS, DEFAULT_MAX_ITEMS), so no schema sent can leave an answer
    open-ended. autoscope's own answer models carry tighter bounds of their own."""
    if isinstance(node, list):
        return [bounded(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: bounded(v) if k not in ("enum", "const", "default", "examples") else v for k, v in node.items()}
    if out.get("type") == "string" and "enum" not in out and "const" not in out:
        out.setdefault("maxLength", DEFAULT_MAX_CHARS)
    if out.get("type") == "array":
        out.setdefault("maxItems", DEFAULT_MAX_ITEMS)
    return out


LLAMACPP_MAX_CHARS = 1000


def _clamp_bounds(node: Any, limit: int = LLAMACPP_MAX_CHARS) -> Any:
    """Length bounds for llama.cpp's grammar compiler, which unrolls them into nested rules:
    measured on the embedded server, a string bound of 1,000 compiles and 1,600 kills the
    request. Bounds stay (clamped), so its answers are closed too; pydantic checks the rest."""
    if isinstance(node, dict):
        return {k: (min(v, limit) if k in _BOUNDS and isinstance(v, int) else _clamp_bounds(v, limit)) for k, v in node.items()}
    if isinstance(node, list):
        return [_clamp_bounds(v, limit) for v in node]
    return node


def response_format(engine: str, schema: dict, name: str) -> dict:
    """The structured-output request for `engine`, with every string and list bounded:
    llama.cpp takes `json_object` + schema (bounds clamped for its grammar compiler), the
    others `json_schema`."""
    schema = bounded(schema)
    if engine == "llamacpp":
        return {"type": "json_object", "schema": _clamp_bounds(schema)}
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": False}}


def _transient(exc: BaseException | None) -> bool:
    import openai

    if isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError, openai.InternalServerError)):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


def unreachable(exc: BaseException | None) -> bool:
    """Nobody answers (refused, reset, a proxy's 502/503): the server is down or restarting.
    A timeout is not an outage: the server is there and slow, and it is retried like a 5xx."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return False
    if isinstance(exc, openai.APIConnectionError):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code in (502, 503)


class Supervisor:
    """What a client asks when its judge stops answering: `revive()` returns when waiting
    makes sense (the process lives, or was restarted) and raises `JudgeUnavailable` when it
    does not (a server autoscope started died again). `EmbeddedJudge` is one."""

    def revive(self) -> None:  # pragma: no cover - interface
        return None


def _stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


def _validate(schema: type[T], raw: str) -> T:
    """Validate an answer; raw newlines inside strings (grammar-constrained servers emit
    them) are accepted, as JSON's non-strict mode does."""
    text = _extract_json(raw)
    try:
        return schema.model_validate_json(text)
    except ValidationError as first:
        try:
            data = json.loads(text, strict=False)
        except json.JSONDecodeError:
            raise first from None
        return schema.model_validate(data)


def _extract_json(text: str) -> str:
    """Some servers wrap JSON in prose or code fences; take the outermost object."""
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`")
        text = text[text.find("\n") + 1 :] if "\n" in text else text
    a, b = text.find("{"), text.rfind("}")
    return text[a : b + 1] if a >= 0 and b > a else text


class JudgeClient:
    """`supervisor` (optional) is asked to revive a server autoscope started when it stops
    answering; `notify` hears, at most every 15 s, that the client is waiting for the judge."""

    def __init__(self, config: JudgeConfig, log: Any = None, supervisor: Supervisor | None = None, notify: Any = None):
        import openai

        if not config.base_url:
            raise JudgeFailure("no judge URL configured: set AUTOSCOPE_JUDGE_URL or start `autoscope judge serve`")
        self.config = config
        self._client = openai.OpenAI(base_url=config.base_url, api_key=config.api_key, timeout=config.timeout_s, max_retries=0)
        from scope_core.api import autoscope_cache_dir

        path = Path(config.cache_path) if config.cache_path else autoscope_cache_dir() / "judge_cache.sqlite"
        self.cache = JudgeCache(path)
        self.log = log  # callable(record: dict) for the run log, optional
        self.calls = 0
        self._calls_lock = threading.Lock()
        self.supervisor = supervisor
        self.notify = notify or _stderr
        self._last_note = 0.0
        self.identity = config.identity or f"{config.base_url.rstrip('/')}|{config.model}"

    def _complete(self, messages: list[dict], schema: dict, name: str, max_tokens: int | None, temperature: float | None = None) -> str:
        def call() -> str:
            with self._calls_lock:
                self.calls += 1
            resp = self._client.chat.completions.create(
                model=self.config.model, messages=messages, temperature=self.config.temperature if temperature is None else temperature,
                max_tokens=max_tokens or self.config.max_tokens, response_format=response_format(self.config.engine, schema, name),  # type: ignore[arg-type]
            )
            return resp.choices[0].message.content or ""

        return self._retrying()(call)

    def _retrying(self) -> Retrying:
        """Retries shared by every call. A timeout, 429 or 5xx is retried `max_attempts`
        times; an unreachable judge is waited for with backoff (at most 10 s apart) for up
        to `outage_s`, reviving a server autoscope started, and saying that it waits."""
        cfg = self.config

        def stop(rs: RetryCallState) -> bool:
            exc = rs.outcome.exception() if rs.outcome else None
            if unreachable(exc):
                return rs.seconds_since_start is not None and rs.seconds_since_start >= cfg.outage_s
            return rs.attempt_number >= cfg.max_attempts

        def wait(rs: RetryCallState) -> float:
            exc = rs.outcome.exception() if rs.outcome else None
            return min(10.0 if unreachable(exc) else 8.0, max(0.2, 0.5 * 2 ** (rs.attempt_number - 1)))

        def before_sleep(rs: RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome else None
            if not unreachable(exc):
                return
            if self.supervisor is not None:
                self.supervisor.revive()  # raises JudgeUnavailable when the server is gone for good
            now = time.monotonic()
            if now - self._last_note >= 15.0:
                self._last_note = now
                self.notify(f"waiting for the judge at {cfg.base_url}: unreachable for {rs.seconds_since_start or 0:.0f} s "
                            f"({exc.__class__.__name__}); giving up after {cfg.outage_s:.0f} s (--judge-wait)")

        return Retrying(retry=retry_if_exception(_transient), stop=stop, wait=wait, before_sleep=before_sleep, reraise=True)

    def _server_error(self, e: Exception, record: dict) -> JudgeFailure:
        """The failure a caller sees once retries are spent; an outage is `JudgeUnavailable`."""
        self._log({**record, "error": f"{e.__class__.__name__}: {e}"})
        if unreachable(e):
            return JudgeUnavailable(f"the judge at {self.config.base_url} was unreachable for {self.config.outage_s:.0f} s "
                                    f"({e.__class__.__name__}); start it again and rerun to continue, or raise --judge-wait")
        return JudgeFailure(f"judge server error after retries: {e.__class__.__name__}: {str(e)[:200]}")

    def ask(self, messages: list[dict], schema: type[T], max_tokens: int | None = None, purpose: str = "",
            temperature: float | None = None) -> T:
        """One structured answer, validated; cached on disk; raises JudgeFailure.
        `temperature` overrides the configured one for this request (it is part of the cache key)."""
        return self._ask(messages, schema, max_tokens, purpose, temperature)[0]

    def _ask(self, messages: list[dict], schema: type[T], max_tokens: int | None, purpose: str,
             temperature: float | None = None) -> tuple[T, str]:
        """The validated answer and the judge's raw text (kept in the cache, so a rerun has it too)."""
        import openai

        temp = self.config.temperature if temperature is None else temperature
        js = schema.model_json_schema()
        params = {"temperature": temp, "max_tokens": max_tokens or self.config.max_tokens, "engine_format": self.config.engine}
        key = self.cache.key(self.identity, messages, params, js)
        raw = self.cache.get(key)
        if raw is not None:
            try:
                return _validate(schema, raw), raw
            except (ValidationError, ValueError):
                pass  # schema changed since; ask again
        convo = list(messages)
        last_error = ""
        for attempt in range(self.config.validation_retries + 1):
            try:
                raw = self._complete(convo, js, schema.__name__, max_tokens, temp)
            except openai.APIError as e:
                raise self._server_error(e, {"purpose": purpose, "messages": convo}) from None
            try:
                value = _validate(schema, raw)
            except ValidationError as e:
                last_error = str(e).splitlines()[0:3]
                last_error = "; ".join(last_error) if isinstance(last_error, list) else str(last_error)
                self._log({"purpose": purpose, "messages": convo, "raw": raw, "invalid": last_error, "attempt": attempt})
                convo = list(messages) + [
                    {"role": "assistant", "content": raw},
                    {"role": "user", "content": f"That answer is not valid JSON for the required schema ({last_error}). "
                                                "Answer again with only the JSON object."},
                ]
                continue
            self.cache.put(key, raw)
            self._log({"purpose": purpose, "messages": messages, "raw": raw, "attempt": attempt})
            return value, raw
        raise JudgeFailure(f"no valid answer after {self.config.validation_retries + 1} tries: {last_error}", raw)

    def ask_many(self, requests: Sequence[tuple[list[dict], type[T]]], max_tokens: int | None = None, purpose: str = "",
                 progress: bool = False) -> list[Answer[T]]:
        """Many structured answers with bounded concurrency; failures come back as Answer.error."""

        def one(req: tuple[list[dict], type[T]]) -> Answer[T]:
            try:
                value, raw = self._ask(req[0], req[1], max_tokens, purpose)
                return Answer(value=value, raw=raw)
            except JudgeUnavailable:
                raise  # no answer about this input: the caller stops and keeps what is done
            except JudgeFailure as e:
                return Answer(error=e.reason, raw=e.raw)

        out: list[Answer[T]] = []
        with ThreadPoolExecutor(max_workers=max(1, self.config.concurrency)) as pool:
            it = pool.map(one, requests)
            if progress:
                from tqdm.auto import tqdm

                it = tqdm(it, total=len(requests), desc=purpose or "judge", unit="req")
            out.extend(it)
        return out

    def loglikelihoods(self, contexts: Sequence[str], continuation: str, purpose: str = "") -> list[float]:
        """log P(continuation | context) under the judge, for each context: one legacy
        completions request with `echo` and `logprobs` (the lm-evaluation-harness protocol;
        vLLM and the batched engine serve it), summing the log-probabilities of the tokens
        that start at or after the context's end. Cached on disk like answers."""
        import openai

        if self.config.engine == "llamacpp":
            raise JudgeFailure("llama.cpp's server returns no prompt log-probabilities: score with the batched engine "
                               "(`--embedded-engine batched`) or vLLM, or ask instead (`--method ask`)")
        prompts = [c + continuation for c in contexts]
        key = self.cache.key(self.identity, [{"role": "score", "content": p} for p in prompts], {"echo": True}, None)
        raw = self.cache.get(key)
        if raw is not None:
            return [float(x) for x in json.loads(raw)]

        def call() -> Any:
            with self._calls_lock:
                self.calls += 1
            return self._client.completions.create(model=self.config.model, prompt=prompts, echo=True, logprobs=1,
                                                   max_tokens=1, temperature=0.0)

        try:
            resp = self._retrying()(call)
        except openai.APIError as e:
            raise self._server_error(e, {"purpose": purpose, "prompts": prompts}) from None
        choices = sorted(resp.choices, key=lambda c: c.index)
        if len(choices) != len(prompts):
            raise JudgeFailure(f"the judge scored {len(choices)} of {len(prompts)} prompts")
        sums = []
        for ctx, prompt, ch in zip(contexts, prompts, choices):
            lp = ch.logprobs
            if lp is None or lp.text_offset is None or lp.token_logprobs is None:
                raise JudgeFailure("the judge returned no prompt log-probabilities: it must support echo with logprobs "
                                   "on /v1/completions (vLLM and the batched engine do)")
            span = [v for off, v in zip(lp.text_offset, lp.token_logprobs) if len(ctx) <= off < len(prompt)]
            if not span or any(v is None for v in span):
                raise JudgeFailure(f"no log-probabilities for the continuation after {ctx[-40:]!r}")
            sums.append(float(sum(span)))
        self.cache.put(key, json.dumps(sums))
        self._log({"purpose": purpose, "prompts": prompts, "loglikelihoods": sums})
        return sums

    def _log(self, record: dict) -> None:
        if self.log is not None:
            self.log({"time": time.time(), "model": self.config.model, **record})
