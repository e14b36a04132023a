"""The embedded judge as the agent uses it: a `serving.launch.EmbeddedServer` (started on a
free loopback port, supervised, restarted once, stopped with autoscope) that proves it can
answer — one real generation of a realistic prompt, not only a model list — before it is
used, hands out `JudgeClient`s pointed at it, and reports a server gone for good as
`JudgeUnavailable`.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from typing import Any

from scope_core.api import AutoscopeError
from serving.launch import BATCHED_CONCURRENCY, EmbeddedServer, ServerGone, describe_exit

from ..prompts import messages
from .judge import JudgeClient, JudgeUnavailable, Supervisor, response_format

PROBE_SCHEMA = {"type": "object", "properties": {"label": {"type": "string", "enum": ["harmful", "harmless"]}}, "required": ["label"]}


def probe(url: str, model: str, engine: str, proc: subprocess.Popen | None = None, timeout_s: float = 180.0) -> None:
    """One real generation of a realistic prompt (about 150 tokens in, a schema-constrained
    label out), as every later request will look. Listing models proves little: the
    llama.cpp judge built for another CPU answered `/models` and died with SIGILL on its
    first real prompt. Raises `AutoscopeError` saying what happened."""
    body = {"model": model, "max_tokens": 16, "temperature": 0.0,
            "messages": messages("probe", system="You answer only with JSON.",
                                 text="Write a short guide to growing tomatoes on a balcony, with a watering schedule"),
            "response_format": response_format(engine, PROBE_SCHEMA, "probe")}
    req = urllib.request.Request(url.rstrip("/") + "/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            answer = json.loads(r.read())
        text = answer["choices"][0]["message"]["content"] or ""
    except (OSError, KeyError, IndexError, ValueError) as e:
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            if proc.poll() is not None:
                raise AutoscopeError(f"the {engine} judge {describe_exit(proc.returncode)} on its first request") from None
        detail = e.read().decode(errors="replace")[:200] if isinstance(e, urllib.error.HTTPError) else str(e)[:200]
        raise AutoscopeError(f"the {engine} judge could not answer its first request ({e.__class__.__name__}: {detail})") from None
    if "harm" not in text:
        raise AutoscopeError(f"the {engine} judge answered its first request with {text[:120]!r}, not a label")



class EmbeddedJudge(EmbeddedServer, Supervisor):
    """Context manager: the embedded judge on a free port; `.url`, `.model`, `.engine`.

    `engine`: "batched" (torch, batches concurrent requests), "llamacpp", or "auto" —
    llama.cpp where llama-cpp-python is installed and answers its probe, else batched (the
    reason is said in one line). A server that dies mid-run is restarted once on the same
    port (`revive`, asked by the `JudgeClient` that `client()` builds); a second death ends
    the run with `JudgeUnavailable`. `commands` maps an engine to its start command
    (host, port) -> argv, for other builds of the same servers."""

    def probe(self) -> None:
        probe(self.url, self.model, self.engine, self.proc, timeout_s=self.probe_timeout_s)

    def revive(self) -> None:
        """Asked by a client that cannot reach this server: return to keep waiting (alive, or
        restarted once on the same port), raise `JudgeUnavailable` when it died again."""
        try:
            super().revive()
        except ServerGone as e:
            raise JudgeUnavailable(str(e)) from None

    def client_config(self, config: Any) -> Any:
        """`config` (a JudgeConfig) pointed at this server. The batched engine answers every
        request in flight in one batch, so unless the caller chose a concurrency it gets
        `BATCHED_CONCURRENCY` requests in flight."""
        update: dict[str, Any] = {"base_url": self.url, "model": self.model, "engine": self.engine, "identity": self.identity}
        if self.engine == "batched" and "concurrency" not in config.model_fields_set:
            update["concurrency"] = BATCHED_CONCURRENCY
        return config.model_copy(update=update)

    def client(self, config: Any, log: Any = None) -> JudgeClient:
        """A client for this server that revives it when it stops answering."""
        return JudgeClient(self.client_config(config), log=log, supervisor=self, notify=self.notify)
