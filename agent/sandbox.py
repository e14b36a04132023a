"""Run judge-written feature code safely.

Two layers, because either alone is easy to get wrong:

1. **Static check** (`check_code`): the code is parsed and walked. Imports must be in
   `ALLOWED_MODULES`; names and attributes that start with an underscore are refused
   (closing `().__class__.__base__.__subclasses__()`-style escapes), as are string
   constants containing "__"; `eval`, `exec`, `open`, `getattr` and friends are refused.
   It must define `def feature(text)`.
2. **A separate, limited process** (`run_feature`): `python -I` with CPU-time, address
   space and file-size limits (RLIMIT_FSIZE = 0: no file can grow), at most a few open
   files, a wall-clock timeout, cwd in a scratch folder, restricted builtins with an
   import hook that admits only the allow-list, and — where `unshare` works — no network
   namespace at all.

Every failure comes back as a `SandboxResult` with a message written for the judge, so
the agent loop can feed it back and go on.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ALLOWED_MODULES = frozenset({"re", "string", "math", "collections", "unicodedata", "itertools", "functools", "statistics", "difflib", "json"})
FORBIDDEN_NAMES = frozenset({
    "eval", "exec", "compile", "open", "input", "globals", "locals", "vars", "getattr", "setattr", "delattr",
    "breakpoint", "help", "exit", "quit", "memoryview", "__import__", "dir", "object", "type", "super", "classmethod",
    "staticmethod", "property", "license", "credits", "copyright",
})


@dataclass
class SandboxLimits:
    cpu_seconds: int = 10
    memory_mb: int = 1024
    wall_seconds: float = 30.0
    max_output_bytes: int = 8_000_000


@dataclass
class SandboxResult:
    ok: bool
    labels: list[str | None] = field(default_factory=list)
    error: str | None = None

    def feedback(self) -> str:
        return "ok" if self.ok else f"the feature code failed: {self.error}"


class CodeRejected(Exception):
    pass


def check_code(src: str) -> None:
    """Raise CodeRejected with a reason the judge can act on, or return if the code may run."""
    try:
        tree = ast.parse(src)
    except SyntaxError as e:
        raise CodeRejected(f"syntax error at line {e.lineno}: {e.msg}") from None
    has_feature = False
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for n in names:
                if n.split(".")[0] not in ALLOWED_MODULES:
                    raise CodeRejected(f"import of {n!r} is not allowed; allowed modules: {', '.join(sorted(ALLOWED_MODULES))}")
            if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
                raise CodeRejected("'from ... import *' is not allowed")
            if isinstance(node, ast.ImportFrom) and node.level:
                raise CodeRejected("relative imports are not allowed")
        elif isinstance(node, ast.Name):
            if node.id.startswith("_") or node.id in FORBIDDEN_NAMES:
                raise CodeRejected(f"the name {node.id!r} is not allowed in feature code")
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("_"):
                raise CodeRejected(f"attribute {node.attr!r} is not allowed (no underscore attributes)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "__" in node.value:
            raise CodeRejected("string constants containing '__' are not allowed")
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            raise CodeRejected("global/nonlocal are not allowed")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.name.startswith("_"):
                raise CodeRejected(f"function name {node.name!r} may not start with an underscore")
            if node.name == "feature" and isinstance(node, ast.FunctionDef):
                has_feature = True
        elif isinstance(node, ast.ClassDef):
            raise CodeRejected("class definitions are not allowed; write plain functions")
        elif isinstance(node, (ast.AsyncFunctionDef, ast.Await, ast.AsyncFor, ast.AsyncWith)):
            raise CodeRejected("async code is not allowed")
    if not has_feature:
        raise CodeRejected("define a function `def feature(text):` that returns a short label (str) or None")


_RUNNER = r'''
import json, sys, resource
lim = json.loads(sys.argv[1])
resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu"], lim["cpu"] + 1))
resource.setrlimit(resource.RLIMIT_AS, (lim["mem"], lim["mem"]))
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
payload = json.loads(sys.stdin.read())
allowed = set(lim["modules"])
preloaded = {m: __import__(m) for m in allowed}
resource.setrlimit(resource.RLIMIT_NOFILE, (8, 8))
def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    root = name.split(".")[0]
    if level or root not in allowed:
        raise ImportError("import of %r is not allowed" % name)
    return preloaded[root]
import builtins as B
safe = {k: getattr(B, k) for k in lim["builtins"]}
safe["__import__"] = guarded_import
env = {"__builtins__": safe, "__name__": "feature_module"}
out = sys.stdout
sys.stdout = sys.stderr
try:
    exec(compile(payload["code"], "<feature>", "exec"), env)
    fn = env["feature"]
    labels = []
    for t in payload["texts"]:
        v = fn(t)
        if v is not None and not isinstance(v, (str, int, float, bool)):
            raise TypeError("feature must return a str, number, bool or None, got %s" % type(v).__name__)
        labels.append(None if v is None else str(v))
    out.write(json.dumps({"ok": True, "labels": labels}))
except MemoryError:
    out.write(json.dumps({"ok": False, "error": "MemoryError: the feature used more than the memory limit"}))
except RecursionError:
    out.write(json.dumps({"ok": False, "error": "RecursionError: too deep"}))
except BaseException as e:
    out.write(json.dumps({"ok": False, "error": "%s: %s" % (type(e).__name__, str(e)[:300])}))
'''

SAFE_BUILTINS = (
    "abs", "all", "any", "bool", "dict", "enumerate", "filter", "float", "frozenset", "int", "isinstance", "len",
    "list", "map", "max", "min", "range", "reversed", "round", "set", "sorted", "str", "sum", "tuple", "zip",
    "ord", "chr", "divmod", "pow", "hash", "iter", "next", "slice", "repr", "format", "bin", "hex", "oct", "callable",
    "Exception", "ValueError", "KeyError", "IndexError", "TypeError", "StopIteration", "ZeroDivisionError",
    "AttributeError", "True", "False", "None",
)


def _unshare_prefix() -> list[str]:
    """`unshare --net` when it works here (root, or user namespaces): no network at all."""
    exe = shutil.which("unshare")
    if not exe:
        return []
    try:
        r = subprocess.run([exe, "--net", "--map-root-user", "true"], capture_output=True, timeout=5)
        if r.returncode == 0:
            return [exe, "--net", "--map-root-user"]
        r = subprocess.run([exe, "--net", "true"], capture_output=True, timeout=5)
        return [exe, "--net"] if r.returncode == 0 else []
    except (OSError, subprocess.SubprocessError):
        return []


_UNSHARE: list[str] | None = None


def run_feature(code: str, texts: list[str], workdir: Path | None = None, limits: SandboxLimits | None = None) -> SandboxResult:
    """Check `code`, then run its `feature(text)` on every text in a limited subprocess."""
    global _UNSHARE
    limits = limits or SandboxLimits()
    try:
        check_code(code)
    except CodeRejected as e:
        return SandboxResult(ok=False, error=f"rejected before running: {e}")
    if _UNSHARE is None:
        _UNSHARE = _unshare_prefix()
    lim = {"cpu": limits.cpu_seconds, "mem": limits.memory_mb * 1024 * 1024, "modules": sorted(ALLOWED_MODULES), "builtins": [b for b in SAFE_BUILTINS if b not in ("True", "False", "None")]}
    scratch = Path(tempfile.mkdtemp(prefix="sandbox-", dir=workdir))
    env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "LANG": "C.UTF-8"}
    try:
        proc = subprocess.run(
            [*_UNSHARE, sys.executable, "-I", "-S", "-c", _RUNNER, json.dumps(lim)],
            input=json.dumps({"code": code, "texts": texts}), capture_output=True, text=True,
            timeout=limits.wall_seconds, cwd=scratch, env=env,
        )
    except subprocess.TimeoutExpired:
        return SandboxResult(ok=False, error=f"timed out after {limits.wall_seconds:.0f} s of wall-clock time (an endless loop?)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if len(proc.stdout) > limits.max_output_bytes:
        return SandboxResult(ok=False, error="output too large")
    if proc.returncode != 0 and not proc.stdout:
        sig = -proc.returncode if proc.returncode < 0 else None
        why = {24: "CPU time limit exceeded (an endless loop?)", 9: "killed (memory or CPU limit)", 25: "tried to write a file"}.get(sig or 0, f"exit code {proc.returncode}")
        tail = proc.stderr.strip().splitlines()[-1:] if proc.stderr.strip() else []
        return SandboxResult(ok=False, error=why + (f" ({tail[0][:200]})" if tail else ""))
    try:
        res = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return SandboxResult(ok=False, error="the feature process returned no result")
    if not res.get("ok"):
        return SandboxResult(ok=False, error=res.get("error", "unknown error"))
    labels = res["labels"]
    if len(labels) != len(texts):
        return SandboxResult(ok=False, error="wrong number of labels")
    return SandboxResult(ok=True, labels=labels)


if os.name != "posix":  # pragma: no cover
    raise ImportError("the sandbox needs a POSIX system (resource limits)")
