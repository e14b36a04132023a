"""Run judge-written feature code safely.

Judge output is untrusted input: this is the one place where autoscope runs code that no
person wrote. Three walls, each of which must hold on its own:

1. **Static check** (`check_code`): the code is parsed and walked. Imports must name an
   allowed module and, for `from m import x`, an allowed name of it. Names and attributes
   that start with an underscore are refused (`().__class__.__base__.__subclasses__()`),
   as are the frame, generator, coroutine, code and traceback attributes that lead out of
   the feature without an underscore (`gi_frame`, `f_back`, `f_globals`, `tb_frame`, `co_*`,
   `mro`, ...), string constants containing "__" or one of those names, `str.format` on
   anything but a literal without attribute fields, `format_map`, classes, async code,
   `eval`, `exec`, `open`, `getattr` and friends. It must define `def feature(text)`.
2. **Curated namespaces**: feature code never sees a module. `import re` binds a read-only
   `Namespace` holding only the functions, classes and constants listed in `ALLOWED` (the
   one allow-list: the prompts quote it through `allowed_prompt_text()`), so
   `statistics.sys` or `json.codecs` do not exist; builtins are `SAFE_BUILTINS` only.
3. **Operating-system isolation** of the process that runs it. A fork server (`python -I
   -S agent/sandbox.py --zygote`, started once per agent process) imports the allowed
   modules, then enters its own network namespace (no interface but a down loopback) and
   mount namespace, and chroots into an empty read-only tmpfs. For every run it forks a
   child that closes every inherited descriptor, drops all privileges (uid nobody when
   started as root, else a user namespace; all capabilities; `no_new_privs`), sets
   rlimits (CPU, address space, file size 0, 4 descriptors, 0 processes, no core) and
   installs a seccomp-bpf **allow-list** of system calls: memory, signals to itself,
   clocks, exit, and writes to its result pipe. No `open`, `stat`, `socket`, `connect`,
   `fork`, `clone`, `execve`, `rename`, `unlink`, `mkdir`, `kill` of another process,
   `ptrace`, `io_uring` ...: each fails with EPERM. Only then does the child run the
   feature, under a wall-clock timeout enforced by the fork server.

Each layer is probed when the fork server starts and checked again in every child
(`isolation_report()`). If one is missing on this host (seccomp needs Linux on x86_64 or
aarch64; the namespaces need root or unprivileged user namespaces), the sandbox says so
once on stderr and **refuses** to run judge code, unless the user opts in with
`AUTOSCOPE_UNSAFE_WEAK_SANDBOX=1` (or `run_feature(..., allow_weak_isolation=True)`).

Every failure comes back as a `SandboxResult` with a message written for the judge, so
the agent loop can feed it back and go on.
"""

from __future__ import annotations

import ast
import atexit
import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import resource  # also needed by os.wait4 in the fork server, after its chroot
except ImportError:  # pragma: no cover - not POSIX
    resource = None  # type: ignore[assignment]

# -- the one allow-list ------------------------------------------------------------------
# Module -> the names feature code may use from it. Names missing from the running Python
# (math.cbrt before 3.11, itertools.batched before 3.12) are left out at run time.
# Nothing listed here may lead to a module, a code object, a frame or a file through
# non-underscore attributes (tests/test_sandbox_namespaces.py walks them).
ALLOWED: dict[str, tuple[str, ...]] = {
    "re": (
        "compile", "search", "match", "fullmatch", "findall", "finditer", "sub", "subn", "split", "escape",
        "error", "Pattern", "Match",
        "A", "ASCII", "I", "IGNORECASE", "M", "MULTILINE", "S", "DOTALL", "X", "VERBOSE", "U", "UNICODE", "NOFLAG",
    ),
    "string": (
        "ascii_letters", "ascii_lowercase", "ascii_uppercase", "digits", "hexdigits", "octdigits", "punctuation",
        "printable", "whitespace", "capwords",
    ),
    "math": (
        "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "cbrt", "ceil", "comb", "copysign", "cos", "cosh",
        "degrees", "dist", "e", "erf", "erfc", "exp", "exp2", "expm1", "fabs", "factorial", "floor", "fmod", "frexp",
        "fsum", "gamma", "gcd", "hypot", "inf", "isclose", "isfinite", "isinf", "isnan", "isqrt", "lcm", "ldexp",
        "lgamma", "log", "log10", "log1p", "log2", "modf", "nan", "nextafter", "perm", "pi", "pow", "prod", "radians",
        "remainder", "sin", "sinh", "sqrt", "tan", "tanh", "tau", "trunc", "ulp",
    ),
    "collections": ("Counter", "defaultdict", "OrderedDict", "deque", "namedtuple", "ChainMap"),
    "unicodedata": (
        "category", "name", "lookup", "normalize", "is_normalized", "bidirectional", "combining", "decimal", "digit",
        "numeric", "east_asian_width", "mirrored", "decomposition", "unidata_version",
    ),
    "itertools": (
        "accumulate", "batched", "chain", "combinations", "combinations_with_replacement", "compress", "count", "cycle",
        "dropwhile", "filterfalse", "groupby", "islice", "pairwise", "permutations", "product", "repeat", "starmap",
        "takewhile", "tee", "zip_longest",
    ),
    "functools": ("reduce", "partial", "lru_cache", "cache", "cmp_to_key"),
    "statistics": (
        "mean", "fmean", "geometric_mean", "harmonic_mean", "median", "median_low", "median_high", "median_grouped",
        "mode", "multimode", "pstdev", "pvariance", "stdev", "variance", "quantiles", "correlation", "covariance",
        "linear_regression", "StatisticsError",
    ),
    "difflib": ("SequenceMatcher", "get_close_matches", "ndiff", "unified_diff", "context_diff", "IS_CHARACTER_JUNK", "IS_LINE_JUNK"),
    "json": ("dumps", "loads", "JSONDecodeError"),
}
ALLOWED_MODULES = frozenset(ALLOWED)
# How the prompts abbreviate a module whose list is long and complete.
_PROMPT_ABBREVIATIONS = {"math": "its functions and constants", "itertools": "all its functions"}
_RE_FLAGS = ("A", "ASCII", "I", "IGNORECASE", "M", "MULTILINE", "S", "DOTALL", "X", "VERBOSE", "U", "UNICODE", "NOFLAG")

SAFE_BUILTINS = (
    "abs", "all", "any", "bool", "dict", "enumerate", "filter", "float", "frozenset", "int", "isinstance", "len",
    "list", "map", "max", "min", "range", "reversed", "round", "set", "sorted", "str", "sum", "tuple", "zip",
    "ord", "chr", "divmod", "pow", "hash", "iter", "next", "slice", "repr", "format", "bin", "hex", "oct", "callable",
    "ascii", "bytes", "print",
    "Exception", "ValueError", "KeyError", "IndexError", "TypeError", "StopIteration", "ZeroDivisionError",
    "AttributeError", "LookupError", "ArithmeticError", "OverflowError", "RuntimeError", "UnicodeError",
    "UnicodeDecodeError", "UnicodeEncodeError", "NotImplementedError",
    "True", "False", "None",
)
FORBIDDEN_NAMES = frozenset({
    "eval", "exec", "compile", "open", "input", "globals", "locals", "vars", "getattr", "setattr", "delattr",
    "breakpoint", "help", "exit", "quit", "memoryview", "__import__", "dir", "object", "type", "super", "classmethod",
    "staticmethod", "property", "license", "credits", "copyright",
})
# Attributes that lead from a value to frames, code, globals or builtins without an
# underscore. Refused as attributes and inside string constants (format-string fields).
FORBIDDEN_ATTRIBUTES = frozenset({
    "gi_frame", "gi_code", "gi_yieldfrom", "gi_running", "gi_suspended",
    "cr_frame", "cr_code", "cr_await", "cr_origin", "cr_running", "cr_suspended",
    "ag_frame", "ag_code", "ag_await", "ag_running",
    "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "f_trace", "f_lasti", "f_lineno", "f_trace_lines",
    "f_trace_opcodes",
    "tb_frame", "tb_next", "tb_lasti", "tb_lineno",
    "co_code", "co_consts", "co_names", "co_varnames", "co_filename", "co_name", "co_qualname", "co_freevars",
    "co_cellvars", "co_firstlineno", "co_lnotab", "co_linetable", "co_exceptiontable", "co_flags", "co_lines",
    "co_positions", "co_argcount", "co_nlocals", "co_stacksize", "co_kwonlyargcount", "co_posonlyargcount",
    "cell_contents", "mro", "format_map", "with_traceback", "func_globals", "func_code",
})
_FORBIDDEN_ATTRIBUTE_PREFIXES = ("gi_", "cr_", "ag_", "tb_", "co_")
MAX_CODE_CHARS = 20_000
_FORBIDDEN_IN_STRINGS = re.compile(r"\b(?:" + "|".join(sorted((a for a in FORBIDDEN_ATTRIBUTES if "_" in a), key=len, reverse=True)) + r")\b")

WEAK_ISOLATION_ENV = "AUTOSCOPE_UNSAFE_WEAK_SANDBOX"
LAYERS = {
    "netns": "no network: an own network namespace with no interface up",
    "empty_root": "no filesystem: chroot into an empty, read-only tmpfs in an own mount namespace",
    "privileges": "no privileges: uid nobody or an own user namespace, no capabilities, no_new_privs",
    "rlimits": "limits: CPU time, address space, file size 0, 4 descriptors, 0 new processes, no core dumps",
    "seccomp": "system-call allow-list: no open/stat, socket, fork/clone/exec, file changes or signals to others",
}


def allowed_prompt_text() -> str:
    """The allow-list as the prompts state it (rendered into propose.j2 and compile.j2)."""
    parts = []
    for mod, names in ALLOWED.items():
        if mod in _PROMPT_ABBREVIATIONS:
            parts.append(f"{mod} ({_PROMPT_ABBREVIATIONS[mod]})")
        elif mod == "re":
            parts.append("re (" + ", ".join(n for n in names if n not in _RE_FLAGS) + ", and the flags)")
        else:
            parts.append(f"{mod} ({', '.join(names)})")
    return "; ".join(parts) + " — only these names; no other module"


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


# -- 1. static check ---------------------------------------------------------------------

def _attr_refusal(attr: str) -> str | None:
    if attr.startswith("_"):
        return f"attribute {attr!r} is not allowed (no underscore attributes)"
    if attr in FORBIDDEN_ATTRIBUTES or attr.startswith(_FORBIDDEN_ATTRIBUTE_PREFIXES):
        return f"attribute {attr!r} is not allowed (no frame, code, traceback or class-hierarchy attributes)"
    return None


def _format_fields_refusal(fmt: str) -> str | None:
    import string

    try:
        parsed = list(string.Formatter().parse(fmt))
    except (ValueError, TypeError):
        return "malformed format string"
    for _lit, fname, spec, _conv in parsed:
        if fname and ("." in fname or "[" in fname):
            return "format fields may not use attributes or indexing ('{0.x}', '{0[k]}'); use an f-string"
        if spec and "{" in spec:
            r = _format_fields_refusal(spec)
            if r:
                return r
    return None


def check_code(src: str) -> None:
    """Raise CodeRejected with a reason the judge can act on, or return if the code may run."""
    if not isinstance(src, str):
        raise CodeRejected("the code must be a string")
    if len(src) > MAX_CODE_CHARS:
        raise CodeRejected(f"the code is too long ({len(src)} characters; at most {MAX_CODE_CHARS})")
    try:
        tree = ast.parse(src)
    except SyntaxError as e:
        raise CodeRejected(f"syntax error at line {e.lineno}: {e.msg}") from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise CodeRejected(f"the code cannot be parsed ({type(e).__name__}: {str(e)[:200]})") from None
    has_feature = False
    allowed_list = ", ".join(ALLOWED)
    try:
        nodes = list(ast.walk(tree))
    except RecursionError:
        raise CodeRejected("the code is nested too deeply") from None
    for node in nodes:
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name not in ALLOWED:
                    why = "submodules are not available" if a.name.split(".")[0] in ALLOWED else f"allowed modules: {allowed_list}"
                    raise CodeRejected(f"import of {a.name!r} is not allowed; {why}")
                if a.asname and a.asname.startswith("_"):
                    raise CodeRejected(f"the name {a.asname!r} is not allowed in feature code")
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                raise CodeRejected("relative imports are not allowed")
            if mod not in ALLOWED:
                raise CodeRejected(f"import of {mod!r} is not allowed; allowed modules: {allowed_list}")
            for a in node.names:
                if a.name == "*":
                    raise CodeRejected("'from ... import *' is not allowed")
                if a.name not in ALLOWED[mod]:
                    raise CodeRejected(f"{mod}.{a.name} is not available in the sandbox; {mod} offers: {', '.join(ALLOWED[mod])}")
                if a.asname and a.asname.startswith("_"):
                    raise CodeRejected(f"the name {a.asname!r} is not allowed in feature code")
        elif isinstance(node, ast.Name):
            if (node.id.startswith("_") and node.id != "_") or node.id in FORBIDDEN_NAMES:
                raise CodeRejected(f"the name {node.id!r} is not allowed in feature code")
        elif isinstance(node, ast.Attribute):
            why = _attr_refusal(node.attr)
            if why:
                raise CodeRejected(why)
            if node.attr == "format":
                if not (isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
                    raise CodeRejected("'.format' is only allowed on a string literal ('{}-{}'.format(a, b)); use an f-string")
                why = "string constants containing '__' are not allowed" if "__" in node.value.value else _format_fields_refusal(node.value.value)
                if why:
                    raise CodeRejected(why)
        elif isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            s = node.value if isinstance(node.value, str) else node.value.decode("latin-1")
            if "__" in s:
                raise CodeRejected("string constants containing '__' are not allowed")
            bad = _FORBIDDEN_IN_STRINGS.search(s)
            if bad:
                raise CodeRejected(f"string constants may not contain {bad.group(0)!r}")
        elif isinstance(node, ast.MatchClass):
            for a in node.kwd_attrs:  # `case C(attr=x)` reads attr without an Attribute node
                why = _attr_refusal(a) or (f"attribute {a!r} may not be matched in a class pattern" if a == "format" else None)
                if why:
                    raise CodeRejected(why)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            raise CodeRejected("global/nonlocal are not allowed")
        elif isinstance(node, (ast.AsyncFunctionDef, ast.Await, ast.AsyncFor, ast.AsyncWith)):
            raise CodeRejected("async code is not allowed")
        elif isinstance(node, ast.FunctionDef):
            if node.name.startswith("_"):
                raise CodeRejected(f"function name {node.name!r} may not start with an underscore")
            if node.name == "feature":
                has_feature = True
        elif isinstance(node, ast.ClassDef):
            raise CodeRejected("class definitions are not allowed; write plain functions")
        elif isinstance(node, ast.arg) and node.arg.startswith("_") and node.arg != "_":
            raise CodeRejected(f"the name {node.arg!r} is not allowed in feature code")
        elif isinstance(node, ast.keyword) and node.arg and node.arg.startswith("_"):
            raise CodeRejected(f"the keyword {node.arg!r} is not allowed in feature code")
    if not has_feature:
        raise CodeRejected("define a function `def feature(text):` that returns a short label (str) or None")


# -- 2. curated namespaces -------------------------------------------------------------------

class Namespace:
    """What feature code gets for `import m`: a read-only view of the allowed names of m."""

    __slots__ = ("_ns_module", "_ns_names")

    def __init__(self, module: str, names: dict[str, Any]):
        object.__setattr__(self, "_ns_module", module)
        object.__setattr__(self, "_ns_names", dict(names))

    def __getattr__(self, attr: str) -> Any:
        names = object.__getattribute__(self, "_ns_names")
        if attr in names:
            return names[attr]
        module = object.__getattribute__(self, "_ns_module")
        raise AttributeError(f"{module}.{attr} is not available in the sandbox; {module} offers: {', '.join(names)}")

    def __setattr__(self, attr: str, value: Any) -> None:
        raise AttributeError("sandboxed modules are read-only")

    def __delattr__(self, attr: str) -> None:
        raise AttributeError("sandboxed modules are read-only")

    def __dir__(self) -> list[str]:
        return list(object.__getattribute__(self, "_ns_names"))

    def __repr__(self) -> str:
        return f"<sandboxed module {object.__getattribute__(self, '_ns_module')!r}>"


def build_namespaces() -> dict[str, Namespace]:
    """One `Namespace` per allowed module, holding only its listed names that exist here."""
    import importlib

    out = {}
    for mod, names in ALLOWED.items():
        m = importlib.import_module(mod)
        out[mod] = Namespace(mod, {n: getattr(m, n) for n in names if hasattr(m, n)})
    return out


def _discard(*args: Any, **kwargs: Any) -> None:
    """`print` inside the sandbox: output goes nowhere."""


def build_builtins(namespaces: dict[str, Namespace]) -> dict[str, Any]:
    import builtins

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level or name not in namespaces:
            raise ImportError(f"import of {name!r} is not allowed; allowed modules: {', '.join(namespaces)}")
        return namespaces[name]

    safe = {k: getattr(builtins, k) for k in SAFE_BUILTINS}
    safe["print"] = _discard
    safe["__import__"] = guarded_import
    return safe


# -- 3. operating-system isolation (runs in the fork server and its children) --------------

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# Allowed system calls; anything else fails with EPERM. Numbers: asm/unistd_64.h (x86_64),
# asm-generic/unistd.h (aarch64).
_SYSCALLS = {
    "x86_64": dict(
        read=0, write=1, close=3, fstat=5, lseek=8, mmap=9, mprotect=10, munmap=11, brk=12, rt_sigaction=13,
        rt_sigprocmask=14, rt_sigreturn=15, readv=19, writev=20, sched_yield=24, mremap=25, madvise=28, nanosleep=35,
        getpid=39, exit=60, kill=62, getuid=102, getgid=104, geteuid=107, getegid=108, sigaltstack=131, gettid=186,
        futex=202, restart_syscall=219, clock_gettime=228, clock_getres=229, clock_nanosleep=230, exit_group=231,
        tgkill=234, prlimit64=302, getrandom=318, rseq=334, gettimeofday=96, capget=125, capset=126,
    ),
    "aarch64": dict(
        read=63, write=64, close=57, fstat=80, lseek=62, mmap=222, mprotect=226, munmap=215, brk=214, rt_sigaction=134,
        rt_sigprocmask=135, rt_sigreturn=139, readv=65, writev=66, sched_yield=124, mremap=216, madvise=233,
        nanosleep=101, getpid=172, exit=93, kill=129, getuid=174, getgid=176, geteuid=175, getegid=177, sigaltstack=132,
        gettid=178, futex=98, restart_syscall=128, clock_gettime=113, clock_getres=114, clock_nanosleep=115,
        exit_group=94, tgkill=131, prlimit64=261, getrandom=278, rseq=293, gettimeofday=169, capget=90, capset=91,
    ),
}
_PLAIN_ALLOWED = (
    "read", "readv", "close", "fstat", "lseek", "mmap", "mprotect", "munmap", "brk", "mremap", "madvise",
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "sched_yield", "nanosleep", "clock_nanosleep",
    "clock_gettime", "clock_getres", "gettimeofday", "getpid", "gettid", "getuid", "getgid", "geteuid", "getegid",
    "futex", "restart_syscall", "exit", "exit_group", "getrandom", "rseq", "capget",
)
_RESULT_FD = 3  # the child's result pipe; fds 0-2 are /dev/null
_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC, _CLONE_NEWUSER, _CLONE_NEWNET = 0x20000, 0x4000000, 0x8000000, 0x10000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REC, _MS_PRIVATE = 1, 2, 4, 8, 16384, 1 << 18
_NOBODY = 65534


def _seccomp_program(arch: str, pid: int) -> list[tuple[int, int, int, int]]:
    """A classic-BPF seccomp filter: right architecture, then the allow-list, else EPERM."""
    nr = _SYSCALLS[arch]
    LD, JEQ, RET = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K
    ALLOW, KILL, EPERM = 0x7FFF0000, 0x80000000, 0x00050000 | 1
    prog = [(LD, 0, 0, 4), (JEQ, 1, 0, _AUDIT_ARCH[arch]), (RET, 0, 0, KILL), (LD, 0, 0, 0)]
    for name in _PLAIN_ALLOWED:
        prog += [(JEQ, 0, 1, nr[name]), (RET, 0, 0, ALLOW)]

    def arg_in(name: str, arg: int, values: tuple[int, ...]) -> None:
        block = [(LD, 0, 0, 16 + 8 * arg)]  # low 32 bits of the argument (int-sized arguments)
        for v in values:
            block += [(JEQ, 0, 1, v & 0xFFFFFFFF), (RET, 0, 0, ALLOW)]
        block.append((RET, 0, 0, EPERM))
        prog.append((JEQ, 0, len(block), nr[name]))
        prog.extend(block)

    arg_in("write", 0, (1, 2, _RESULT_FD))
    arg_in("writev", 0, (1, 2, _RESULT_FD))
    arg_in("kill", 0, (pid,))
    arg_in("tgkill", 0, (pid,))
    # prlimit64(pid, resource, new, old): reading only (new == NULL, both halves)
    block = [(LD, 0, 0, 16 + 8 * 2), (JEQ, 0, 3, 0), (LD, 0, 0, 20 + 8 * 2), (JEQ, 0, 1, 0), (RET, 0, 0, ALLOW), (RET, 0, 0, EPERM)]
    prog.append((JEQ, 0, len(block), nr["prlimit64"]))
    prog.extend(block)
    prog.append((RET, 0, 0, EPERM))
    return prog


_PID_PLACEHOLDER = 0xFFFFFFF0  # no real pid; replaced by the child's own pid


class _Host:
    """What the fork server knows about its host, found out once; the ctypes structures
    and the seccomp filter are built here, so a child only fills in its pid."""

    def __init__(self) -> None:
        self.libc = None
        self.ctypes = None
        self.filter = None
        self.arch = os.uname().machine if hasattr(os, "uname") else ""
        try:
            import ctypes as ct
        except ImportError:
            return
        try:
            self.libc = ct.CDLL(None, use_errno=True)
        except OSError:
            return
        self.ctypes = ct

        class CapHeader(ct.Structure):
            _fields_ = [("version", ct.c_uint32), ("pid", ct.c_int)]

        class Filter(ct.Structure):
            _fields_ = [("code", ct.c_ushort), ("jt", ct.c_ubyte), ("jf", ct.c_ubyte), ("k", ct.c_uint32)]

        class Prog(ct.Structure):
            _fields_ = [("len", ct.c_ushort), ("filter", ct.POINTER(Filter))]

        self.CapHeader, self.CapData = CapHeader, (ct.c_uint32 * 3) * 2
        if sys.platform == "linux" and self.arch in _SYSCALLS and struct.calcsize("P") == 8:
            ins = _seccomp_program(self.arch, _PID_PLACEHOLDER)
            self.filter = (Filter * len(ins))(*[Filter(*i) for i in ins])
            self.filter_pid_slots = [i for i, x in enumerate(ins) if x[3] == _PID_PLACEHOLDER]
            self.prog = Prog(len(ins), ct.cast(self.filter, ct.POINTER(Filter)))

    def errno_text(self) -> str:
        e = self.ctypes.get_errno() if self.ctypes else 0
        return os.strerror(e) if e else "unknown error"


def _write_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _isolate_server(host: _Host, root_dir: str, skip: frozenset[str]) -> tuple[dict[str, str | None], str]:
    """In the fork server, once: own network + mount namespaces, chroot into an empty
    read-only tmpfs. Returns ({layer: None if in place else why not}, how the namespaces were
    entered: "root" (as real root), "userns" (in an own user namespace) or "none")."""
    res: dict[str, str | None] = {"netns": "not attempted", "empty_root": "not attempted"}
    libc = host.libc
    if sys.platform != "linux" or libc is None:
        why = "needs Linux namespaces (not this platform)" if sys.platform != "linux" else "ctypes/libc unavailable"
        return {"netns": why, "empty_root": why}, "none"
    euid, egid = os.geteuid(), os.getegid()
    flags = _CLONE_NEWNS | _CLONE_NEWIPC | _CLONE_NEWUTS | (0 if "netns" in skip else _CLONE_NEWNET)
    try:
        net_before = os.readlink("/proc/self/ns/net")
    except OSError:
        net_before = None
    entered, mode, errs = False, "none", []
    if "netns" in skip and "empty_root" in skip:
        return {"netns": "skipped (test)", "empty_root": "skipped (test)"}, "none"
    if euid == 0:
        if libc.unshare(flags) == 0:
            entered, mode = True, "root"
        else:
            errs.append(f"unshare as root: {host.errno_text()}")
    if not entered:
        if libc.unshare(flags | _CLONE_NEWUSER) == 0:
            try:
                _write_file("/proc/self/setgroups", "deny")
                _write_file("/proc/self/uid_map", f"{euid} {euid} 1")
                _write_file("/proc/self/gid_map", f"{egid} {egid} 1")
                entered, mode = True, "userns"
            except OSError as e:
                errs.append(f"user namespace id maps: {e.strerror}")
        else:
            errs.append(f"unshare of a user namespace: {host.errno_text()}")
    if "netns" in skip:
        res["netns"] = "skipped (test)"
    elif entered:
        try:
            res["netns"] = None if net_before is None or os.readlink("/proc/self/ns/net") != net_before else "network namespace unchanged"
        except OSError:
            res["netns"] = None
    else:
        res["netns"] = "; ".join(errs) or "unshare failed"
    if "empty_root" in skip:
        res["empty_root"] = "skipped (test)"
        return res, mode
    how = []
    if entered and libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) == 0:
        ro = _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
        if libc.mount(b"autoscope-sandbox", root_dir.encode(), b"tmpfs", ro, b"size=4k,nr_inodes=4,mode=0555") == 0:
            how.append("read-only tmpfs")
        else:
            how.append(f"tmpfs mount failed ({host.errno_text()}), plain empty folder")
    elif entered:
        how.append(f"mounts not private ({host.errno_text()}), plain empty folder")
    try:
        os.chdir(root_dir)
        os.chroot(".")
        os.chdir("/")
        if os.listdir("/"):
            res["empty_root"] = "the new root is not empty"
        else:
            res["empty_root"] = (None if how and how[0] == "read-only tmpfs"
                                 else ("chroot into an empty folder only: " + "; ".join(how or ["no mount namespace"])))
    except OSError as e:
        res["empty_root"] = f"chroot: {e.strerror}" + (f" ({'; '.join(errs)})" if errs else "")
    return res, mode


def _drop_privileges(host: _Host, mode: str) -> str | None:
    """In the child: uid nobody (when root outside a user namespace), no capabilities at
    all, no_new_privs."""
    try:
        if mode == "root" or (mode == "none" and os.geteuid() == 0):
            os.setgroups([])
            if hasattr(os, "setresuid"):
                os.setresgid(_NOBODY, _NOBODY, _NOBODY)
                os.setresuid(_NOBODY, _NOBODY, _NOBODY)
            else:  # pragma: no cover - not Linux
                os.setgid(_NOBODY)
                os.setuid(_NOBODY)
    except OSError as e:
        return f"could not change to uid nobody: {e.strerror}"
    if sys.platform != "linux" or host.libc is None or host.arch not in _SYSCALLS:
        return "no way to drop capabilities and set no_new_privs here (needs Linux on x86_64/aarch64 with ctypes)"
    ct = host.ctypes
    nr = _SYSCALLS[host.arch]
    hdr, data = host.CapHeader(0x20080522, 0), host.CapData()
    if host.libc.syscall(ct.c_long(nr["capset"]), ct.byref(hdr), ct.byref(data)) != 0:
        return f"capset: {host.errno_text()}"
    hdr, got = host.CapHeader(0x20080522, 0), host.CapData()
    if host.libc.syscall(ct.c_long(nr["capget"]), ct.byref(hdr), ct.byref(got)) != 0 or any(v for row in got for v in row):
        return "capabilities still present after capset"
    if host.libc.prctl(38, ct.c_ulong(1), ct.c_ulong(0), ct.c_ulong(0), ct.c_ulong(0)) != 0:  # PR_SET_NO_NEW_PRIVS
        return f"no_new_privs: {host.errno_text()}"
    return None


def _set_rlimits(lim: dict) -> str | None:
    if resource is None:
        return "the resource module is unavailable"
    try:
        r = resource
        r.setrlimit(r.RLIMIT_CPU, (lim["cpu"], lim["cpu"] + 1))
        r.setrlimit(r.RLIMIT_AS, (lim["mem"], lim["mem"]))
        r.setrlimit(r.RLIMIT_FSIZE, (0, 0))
        r.setrlimit(r.RLIMIT_CORE, (0, 0))
        r.setrlimit(r.RLIMIT_NOFILE, (_RESULT_FD + 1, _RESULT_FD + 1))
        if hasattr(r, "RLIMIT_NPROC"):
            r.setrlimit(r.RLIMIT_NPROC, (0, 0))
        else:
            return "RLIMIT_NPROC is unavailable"
    except (OSError, ValueError) as e:
        return f"setrlimit: {e}"
    return None


def _install_seccomp(host: _Host) -> str | None:
    if sys.platform != "linux" or host.libc is None:
        return "seccomp needs Linux and ctypes"
    if host.filter is None:
        return f"no system-call table for this architecture ({host.arch}, {8 * struct.calcsize('P')}-bit)"
    ct = host.ctypes
    pid = os.getpid()
    for i in host.filter_pid_slots:
        host.filter[i].k = pid
    prog = host.prog
    if host.libc.prctl(38, ct.c_ulong(1), ct.c_ulong(0), ct.c_ulong(0), ct.c_ulong(0)) != 0:
        return f"no_new_privs: {host.errno_text()}"
    if host.libc.prctl(22, ct.c_ulong(2), ct.byref(prog), ct.c_ulong(0), ct.c_ulong(0)) != 0:  # PR_SET_SECCOMP, FILTER
        return f"seccomp filter refused by the kernel: {host.errno_text()}"
    try:  # the filter must now refuse opening anything, even the (empty) root
        fd = os.open("/", os.O_RDONLY)
    except PermissionError:
        return None
    except OSError as e:
        return f"seccomp check: open('/') failed with {e.strerror} instead of EPERM"
    os.close(fd)
    return "seccomp check: open('/') still works after installing the filter"


_RISKS = {
    "seccomp": "the code could open and change files, open sockets and start processes with the rights left to it",
    "netns": "only the system-call filter would keep it off the network",
    "empty_root": "your files would be visible to it if the system-call filter had a hole",
    "privileges": "it would keep your uid and capabilities",
    "rlimits": "it could exhaust memory, CPU or processes",
}


def _risk_text(missing: dict[str, str]) -> str:
    return "; ".join(_RISKS.get(k, k) for k in missing)


def _refusal_message(missing: dict[str, str]) -> str:
    what = "; ".join(f"{k} ({v})" for k, v in missing.items())
    return (f"the sandbox cannot isolate judge code on this host: missing {what}. Judge-written Python features are "
            f"refused here (not a problem of the code): describe the feature as an llm hypothesis instead. "
            f"A user may set {WEAK_ISOLATION_ENV}=1 to run such code anyway, accepting that {_risk_text(missing)}")


def _describe_failure(status: int, rusage: Any, lim: dict, timed_out: bool, overflow: bool) -> str:
    if overflow:
        return f"output too large: the labels add up to more than {lim['max_out']} bytes; return short labels"
    if timed_out:
        return f"timed out after {lim['wall']:.0f} s of wall-clock time (an endless loop, or waiting forever?)"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        cpu = rusage.ru_utime + rusage.ru_stime if rusage is not None else 0.0
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= lim["cpu"] - 0.05):
            return f"CPU time limit exceeded ({lim['cpu']} s; an endless loop or a very slow feature?)"
        if sig == getattr(signal, "SIGSYS", -1):
            return "killed by the system-call filter (the code tried something the sandbox forbids)"
        if sig == signal.SIGKILL:
            return "killed (memory or CPU limit)"
        if sig == signal.SIGXFSZ:
            return "tried to write a file"
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"the feature process was killed by {name}"
    return f"the feature process exited with code {os.WEXITSTATUS(status)} without a result"


class _Server:
    """The fork server's state: prepared once, then one forked child per run."""

    def __init__(self, opts: dict) -> None:
        self.opts = opts
        self.skip = frozenset(opts.get("skip", ()))
        for m in opts.get("preload", ()):  # tests only: modules the raw mode may use
            __import__(m)
        import codecs

        for enc in ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be", "utf-7", "latin-1", "ascii",
                    "cp1252", "idna", "punycode", "unicode-escape", "raw-unicode-escape", "rot13"):
            try:
                codecs.lookup(enc)
            except LookupError:
                pass
        self.namespaces = build_namespaces()
        self.safe_builtins = build_builtins(self.namespaces)
        self.host = _Host()
        self.devnull = os.open(os.devnull, os.O_RDWR)
        self.layers, self.mode = _isolate_server(self.host, os.getcwd(), self.skip)
        import gc

        gc.collect()
        gc.freeze()  # children's garbage collections leave the server's objects (and their pages) alone

    # -- in the child ---------------------------------------------------------------------
    def child(self, req: dict, wfd: int) -> None:
        os.dup2(self.devnull, 0)
        os.dup2(self.devnull, 1)
        os.dup2(self.devnull, 2)
        if wfd != _RESULT_FD:
            os.dup2(wfd, _RESULT_FD)
        os.closerange(_RESULT_FD + 1, 1 << 16)
        lim, skip = req["limits"], self.skip
        if self.host.libc is not None and sys.platform == "linux":
            self.host.libc.prctl(1, self.host.ctypes.c_ulong(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG: dies with the server
        layers = dict(self.layers)
        layers["privileges"] = "skipped (test)" if "privileges" in skip else _drop_privileges(self.host, self.mode)
        layers["rlimits"] = "skipped (test)" if "rlimits" in skip else _set_rlimits(lim)
        layers["seccomp"] = "skipped (test)" if "seccomp" in skip else _install_seccomp(self.host)
        for k in self.opts.get("simulate_missing", ()):  # tests only: the refusal path on a capable host
            layers[k] = "simulated as missing (test)"
        missing = {k: v for k, v in layers.items() if v is not None and not v.startswith("skipped")}
        if req.get("probe"):
            out = {"ok": True, "labels": []}
        elif missing and not req.get("allow_weak"):
            out = {"ok": False, "error": _refusal_message(missing), "refused": True}
        else:
            out = self.execute(req, lim)
        out["layers"] = layers
        data = json.dumps(out).encode()
        view = memoryview(data)
        while view:
            n = os.write(_RESULT_FD, view)
            view = view[n:]

    def execute(self, req: dict, lim: dict) -> dict:
        import builtins

        env = {"__builtins__": builtins.__dict__ if req.get("raw") else self.safe_builtins, "__name__": "feature_module"}
        try:
            exec(compile(req["code"], "<feature>", "exec"), env)
            fn = env.get("feature")
            if not callable(fn):
                raise NameError("the code defines no function `feature(text)`")
            labels: list[str | None] = []
            total = 0
            for t in req["texts"]:
                v = fn(t)
                if v is not None and not isinstance(v, (str, int, float, bool)):
                    raise TypeError(f"feature must return a str, number, bool or None, got {type(v).__name__}")
                s = None if v is None else str(v)
                total += 8 if s is None else len(s) + 8
                if total > lim["max_out"]:
                    return {"ok": False, "error": f"output too large: the labels add up to more than {lim['max_out']} bytes; return short labels"}
                labels.append(s)
            return {"ok": True, "labels": labels}
        except MemoryError:
            return {"ok": False, "error": f"MemoryError: the feature used more than the memory limit ({lim['mem'] >> 20} MB)"}
        except RecursionError:
            return {"ok": False, "error": "RecursionError: too deep (recursion or nesting)" + _where(sys.exc_info()[2])}
        except BaseException as e:  # noqa: BLE001 - everything goes back to the judge
            try:
                msg = str(e)[:300]
            except BaseException:  # noqa: BLE001
                msg = "?"
            return {"ok": False, "error": f"{type(e).__name__}: {msg}{_where(sys.exc_info()[2])}"}

    # -- in the server ---------------------------------------------------------------------
    def run(self, req: dict) -> dict:
        lim = req["limits"]
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r)
                self.child(req, w)
            finally:
                os._exit(0)
        os.close(w)
        deadline = time.monotonic() + lim["wall"]
        cap = lim["max_out"] + 65536 + 2 * sum(len(t) for t in req.get("texts", ()))  # JSON escapes
        chunks, size, timed_out, overflow = [], 0, False, False
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                ready, _, _ = select.select([r], [], [], left)
                if not ready:
                    continue
                chunk = os.read(r, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > cap:
                    overflow = True
                    break
        finally:
            os.close(r)
        status, rusage, late = self.reap(pid, deadline, kill=timed_out or overflow)
        timed_out = timed_out or late
        raw = b"".join(chunks)
        if timed_out or overflow or not raw:
            return {"ok": False, "error": _describe_failure(status, rusage, lim, timed_out, overflow)}
        try:
            out = json.loads(raw)
        except (ValueError, RecursionError):
            return {"ok": False, "error": "the feature process returned no valid result (" + _describe_failure(status, rusage, lim, False, False) + ")"}
        if not isinstance(out, dict) or not isinstance(out.get("ok"), bool):
            return {"ok": False, "error": "the feature process returned no valid result"}
        clean: dict[str, Any] = {"ok": out["ok"], "layers": out.get("layers") if isinstance(out.get("layers"), dict) else {}}
        if out["ok"]:
            labels = out.get("labels")
            if not isinstance(labels, list) or not all(x is None or isinstance(x, str) for x in labels):
                return {"ok": False, "error": "the feature process returned no valid result"}
            clean["labels"] = labels
        else:
            clean["error"] = str(out.get("error") or "unknown error")[:2000]
            clean["refused"] = bool(out.get("refused"))
        return clean


    @staticmethod
    def reap(pid: int, deadline: float, kill: bool) -> tuple[int, Any, bool]:
        """Wait for the child until `deadline` (it may close its pipe and go on), then kill it."""
        late = False
        if not kill:
            delay = 0.0002
            while True:
                got, status, rusage = os.wait4(pid, os.WNOHANG)
                if got:
                    return status, rusage, False
                if time.monotonic() >= deadline:
                    late = kill = True
                    break
                time.sleep(delay)
                delay = min(delay * 2, 0.02)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, status, rusage = os.wait4(pid, 0)
        return status, rusage, late


def _where(tb: Any) -> str:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<feature>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (line {line})" if line else ""


def _send(fd: int, obj: dict) -> None:
    data = json.dumps(obj).encode()
    data = struct.pack(">Q", len(data)) + data
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _recv_exact(fd: int, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _zygote_main(opts: dict) -> None:
    """`python -I -S agent/sandbox.py --zygote OPTS`: serve runs until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rfd, wfd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    server = _Server(opts)
    probe = server.run({"probe": True, "code": "", "texts": [], "limits": {"cpu": 5, "mem": 512 << 20, "wall": 20.0, "max_out": 1 << 20}})
    layers = probe.get("layers") or dict(server.layers)
    for k in opts.get("simulate_missing", ()):
        layers[k] = "simulated as missing (test)"
    _send(wfd, {"hello": True, "layers": layers, "probe_error": probe.get("error"),
                "platform": f"{sys.platform} {server.host.arch}", "uid": os.getuid()})
    while True:
        head = _recv_exact(rfd, 8)
        if head is None:
            return
        body = _recv_exact(rfd, struct.unpack(">Q", head)[0])
        if body is None:
            return
        _send(wfd, server.run(json.loads(body)))


# -- the agent side ---------------------------------------------------------------------------

class SandboxUnavailable(RuntimeError):
    pass


class _Zygote:
    """Handle on one fork server (a child process of the agent)."""

    def __init__(self, opts: dict | None = None) -> None:
        self.opts = opts or {}
        self.root = tempfile.mkdtemp(prefix="autoscope-sandbox-root-")
        os.chmod(self.root, 0o555)
        self.err = tempfile.TemporaryFile()
        env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "LANG": "C.UTF-8"}
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", str(Path(__file__).resolve()), "--zygote", json.dumps(self.opts)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, cwd=self.root, env=env, close_fds=True,
            start_new_session=True,
        )
        self.pid_owner = os.getpid()
        hello = self._recv(60.0)
        if hello is None or not hello.get("hello"):
            why = self._stderr_tail()
            self.close()
            raise SandboxUnavailable(f"the sandbox fork server did not start: {why}")
        self.hello = hello

    def _stderr_tail(self) -> str:
        try:
            self.err.seek(0)
            lines = self.err.read().decode(errors="replace").strip().splitlines()
            return lines[-1][:300] if lines else f"exit code {self.proc.poll()}"
        except (OSError, ValueError):
            return "no diagnostics"

    def _recv(self, timeout: float) -> dict | None:
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        buf = bytearray()
        need = 8
        length = None
        while len(buf) < need:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, need - len(buf))
            if not chunk:
                return None
            buf += chunk
            if length is None and len(buf) >= 8:
                length = struct.unpack(">Q", bytes(buf[:8]))[0]
                need = 8 + length
        return json.loads(bytes(buf[8:]))

    def alive(self) -> bool:
        return self.proc.poll() is None and self.pid_owner == os.getpid()

    def call(self, req: dict, timeout: float) -> dict | None:
        try:
            _send(self.proc.stdin.fileno(), req)
        except OSError:
            return None
        out = self._recv(timeout)
        if out is None:
            self.close()
        return out

    def close(self) -> None:
        if self.pid_owner != os.getpid():
            return
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdout, self.err):
            try:
                if f:
                    f.close()
            except OSError:
                pass
        try:
            os.chmod(self.root, 0o755)
            os.rmdir(self.root)
        except OSError:
            shutil.rmtree(self.root, ignore_errors=True)


_LOCK = threading.Lock()
_ZYGOTE: _Zygote | None = None
_WARNED = False


def _zygote() -> _Zygote:
    global _ZYGOTE
    if _ZYGOTE is None or not _ZYGOTE.alive():
        if _ZYGOTE is not None:
            _ZYGOTE.close()
        _ZYGOTE = _Zygote()
        _warn_once(_ZYGOTE.hello)
    return _ZYGOTE


@atexit.register
def _shutdown() -> None:
    global _ZYGOTE
    if _ZYGOTE is not None:
        _ZYGOTE.close()
        _ZYGOTE = None


def _missing(layers: dict) -> dict[str, str]:
    return {k: str(v) for k, v in layers.items() if v is not None}


def _warn_once(hello: dict) -> None:
    global _WARNED
    missing = _missing(hello.get("layers", {}))
    if missing and not _WARNED:
        _WARNED = True
        weak = _weak_allowed(None)
        print(f"autoscope sandbox: isolation incomplete on this host ({hello.get('platform')}): "
              + "; ".join(f"{k}: {v}" for k, v in missing.items())
              + (f". {WEAK_ISOLATION_ENV}=1 is set: judge code runs anyway, so {_risk_text(missing)}."
                 if weak else f". Judge-written Python features will be refused; set {WEAK_ISOLATION_ENV}=1 to run them "
                 f"anyway, accepting that {_risk_text(missing)}."),
              file=sys.stderr)


def _weak_allowed(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    return os.environ.get(WEAK_ISOLATION_ENV, "").strip().lower() in ("1", "true", "yes")


def isolation_report() -> dict:
    """Which isolation layers are in place here: {"complete", "layers": {name: {"ok", "detail",
    "what"}}, "platform", "weak_allowed"}. Starts the fork server if it is not running."""
    try:
        with _LOCK:
            hello = _zygote().hello
    except SandboxUnavailable as e:
        hello = {"layers": {k: str(e) for k in LAYERS}, "platform": sys.platform}
    layers = hello.get("layers", {})
    return {
        "complete": not _missing(layers),
        "platform": hello.get("platform"),
        "weak_allowed": _weak_allowed(None),
        "layers": {k: {"ok": layers.get(k) is None, "detail": layers.get(k), "what": LAYERS[k]} for k in LAYERS},
    }


def isolation_summary() -> str:
    """One line for the CLI to print."""
    rep = isolation_report()
    if rep["complete"]:
        return "sandbox: all isolation layers in place (" + ", ".join(LAYERS) + ")"
    bad = [f"{k} ({v['detail']})" for k, v in rep["layers"].items() if not v["ok"]]
    tail = f"judge code runs anyway ({WEAK_ISOLATION_ENV}=1)" if rep["weak_allowed"] else f"judge code is refused unless {WEAK_ISOLATION_ENV}=1"
    return "sandbox: missing " + "; ".join(bad) + "; " + tail


def _call(z: _Zygote, code: str, texts: list[str], limits: SandboxLimits, allow_weak: bool, raw: bool = False) -> SandboxResult:
    lim = {"cpu": int(limits.cpu_seconds), "mem": int(limits.memory_mb) * 1024 * 1024, "wall": float(limits.wall_seconds),
           "max_out": int(limits.max_output_bytes)}
    out = z.call({"code": code, "texts": texts, "limits": lim, "allow_weak": allow_weak, "raw": raw}, limits.wall_seconds + 30.0)
    if out is None:
        return SandboxResult(ok=False, error=f"timed out after {limits.wall_seconds:.0f} s of wall-clock time (the sandbox stopped answering)")
    if not out.get("ok"):
        return SandboxResult(ok=False, error=out.get("error") or "unknown error")
    labels = out.get("labels") or []
    if len(labels) != len(texts):
        return SandboxResult(ok=False, error="wrong number of labels")
    return SandboxResult(ok=True, labels=labels)


def run_feature(code: str, texts: list[str], workdir: Path | None = None, limits: SandboxLimits | None = None, *,
                allow_weak_isolation: bool | None = None) -> SandboxResult:
    """Check `code`, then run its `feature(text)` on every text in an isolated process.

    `workdir` is accepted for compatibility; nothing is written anywhere. With a missing
    isolation layer the code is refused unless `allow_weak_isolation` (default: the
    AUTOSCOPE_UNSAFE_WEAK_SANDBOX environment variable) is true."""
    limits = limits or SandboxLimits()
    try:
        check_code(code)
    except CodeRejected as e:
        return SandboxResult(ok=False, error=f"rejected before running: {e}")
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        return SandboxResult(ok=False, error="texts must be strings")
    weak = _weak_allowed(allow_weak_isolation)
    with _LOCK:
        try:
            z = _zygote()
        except SandboxUnavailable as e:
            return SandboxResult(ok=False, error=str(e))
        return _call(z, code, texts, limits, weak)


if __name__ == "__main__" and sys.argv[1:2] == ["--zygote"]:
    _zygote_main(json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
elif os.name != "posix":  # pragma: no cover
    raise ImportError("the sandbox needs a POSIX system (resource limits, fork)")
