"""Hostile feature code is contained with a clear message; good code runs."""

import pytest

from agent import sandbox as S
from agent.sandbox import CodeRejected, SandboxLimits, check_code, run_feature


@pytest.fixture(autouse=True)
def benign_code_runs_even_where_isolation_is_weak(monkeypatch):
    """These tests run our own benign code: on a host that lacks an isolation layer (the
    sandbox then refuses judge code), accept the weaker isolation for them."""
    if not S.isolation_report()["complete"]:
        monkeypatch.setenv(S.WEAK_ISOLATION_ENV, "1")

GOOD = '''
import re
from collections import Counter

def feature(text):
    words = re.findall(r"[a-z]+", text.lower())
    if not words:
        return None
    return Counter(words).most_common(1)[0][0]
'''

HOSTILE = {
    "import os": ("import os\ndef feature(t):\n    return os.getcwd()", "import of 'os' is not allowed"),
    "import sys": ("import sys\ndef feature(t):\n    return 1", "import of 'sys'"),
    "subprocess": ("import subprocess\ndef feature(t):\n    return subprocess.run(['ls'])", "import of 'subprocess'"),
    "socket": ("from socket import socket\ndef feature(t):\n    return 1", "import of 'socket'"),
    "open write": ("def feature(t):\n    open('x.txt', 'w').write(t)\n    return 1", "name 'open'"),
    "dunder escape": ("def feature(t):\n    return ().__class__.__base__.__subclasses__()", "no underscore attributes"),
    "__import__": ("def feature(t):\n    return __import__('os').system('id')", "name '__import__'"),
    "eval": ("def feature(t):\n    return eval('1+1')", "name 'eval'"),
    "exec": ("def feature(t):\n    exec('x=1')\n    return 1", "name 'exec'"),
    "getattr escape": ("def feature(t):\n    return getattr(t, 'upper')()", "name 'getattr'"),
    "os.fork via string": ("import importlib\ndef feature(t):\n    return 1", "import of 'importlib'"),
    "format dunder": ("def feature(t):\n    return '{0.__class__}'.format(t)", "'__'"),
    "no feature": ("def label(t):\n    return 1", "def feature"),
    "syntax": ("def feature(t) return 1", "syntax error"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_static_check_rejects_hostile_code(name):
    code, fragment = HOSTILE[name]
    with pytest.raises(CodeRejected, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        check_code(code)
    res = run_feature(code, ["hello"])
    assert not res.ok and "rejected before running" in res.error


def test_good_code_runs_and_returns_labels():
    res = run_feature(GOOD, ["the cat and the dog", "", "Sea sea SEA"])
    assert res.ok and res.labels == ["the", None, "sea"]


@pytest.mark.parametrize(
    "code, fragment",
    [
        ("def feature(t):\n    while True:\n        pass", "CPU time limit"),
        ("def feature(t):\n    x = 'a' * (10 * 1024 ** 3)\n    return x", "MemoryError"),
        ("def feature(t):\n    return 1 / 0", "ZeroDivisionError"),
        ("def feature(t):\n    return [t]", "must return a str"),
        ("import json\ndef feature(t):\n    return json.loads('{')", "JSONDecodeError"),
    ],
)
def test_runtime_failures_are_contained(code, fragment, tmp_path):
    res = run_feature(code, ["x"], workdir=tmp_path, limits=SandboxLimits(cpu_seconds=2, memory_mb=512, wall_seconds=20))
    assert not res.ok and fragment in res.error
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_nothing_can_be_written_even_by_code_that_reaches_open(tmp_path):
    """The static check refuses `open` and the namespaces hide `json.codecs.open`; below both,
    the operating system refuses the write itself (code run raw: real builtins, no check)."""
    target = tmp_path / "written.txt"
    res = run_feature(f"import json\ndef feature(t):\n    json.codecs.open({str(target)!r}, 'w').write(t)\n    return 'x'",
                      ["x"], workdir=tmp_path)
    assert not res.ok and "json.codecs is not available" in res.error
    if not S.isolation_report()["complete"]:
        pytest.skip("isolation layers missing on this host: " + S.isolation_summary())
    z = S._zygote()
    for body in (f"open({str(target)!r}, 'w').write(t)", f"open({str(tmp_path)!r} + '/other', 'x')"):
        res = S._call(z, f"def feature(t):\n    {body}\n    return 'x'", ["x"], SandboxLimits(), allow_weak=False, raw=True)
        assert not res.ok and "PermissionError" in res.error, res
    assert list(tmp_path.iterdir()) == []
    # and code that only computes (json.dumps) runs and leaves nothing behind
    res = run_feature("import json\ndef feature(t):\n    return json.dumps({'a': t})", ["x"], workdir=tmp_path)
    assert res.ok and res.labels == ['{"a": "x"}']
    assert list(tmp_path.iterdir()) == []


def test_imports_inside_the_sandbox_are_limited_even_dynamically():
    """The static check is the first wall; the runtime import hook is the second. Bypass the
    first (an internal call) to reach the second."""
    code = "import subprocess\ndef feature(t):\n    return str(subprocess.run(['true']))"
    with pytest.raises(CodeRejected):
        check_code(code)
    res = S._call(S._zygote(), code, ["x"], SandboxLimits(), allow_weak=True)
    assert not res.ok and "import of 'subprocess' is not allowed" in res.error
