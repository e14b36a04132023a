"""Every snippet of the hostile corpus (tests/hostile_corpus.py) is contained, twice:

- through `run_feature`, as the agent loop runs judge code (static check, curated
  namespaces, OS isolation): the outcome is the one the corpus expects, with a message the
  judge can act on, and the sandbox keeps working afterwards;
- raw: no static check, the real builtins and modules (os, socket, ctypes, subprocess ...
  preloaded), so only the operating-system layers stand between the code and the host.

Either way nothing may happen: no file in cwd, the run folder, $HOME or /tmp, the victim
file neither deleted, renamed nor changed, no connection or datagram to a listener the
test opened on 127.0.0.1, no process carrying the test's token, no secret in a label.
"""

from __future__ import annotations

import time

import pytest
from hostile_corpus import HOSTILE_CORPUS, cleanup, make_context, open_listeners, render, violations

from agent import sandbox as S

LIMITS = S.SandboxLimits(cpu_seconds=1, memory_mb=256, wall_seconds=5, max_output_bytes=1_000_000)
GOOD = "import re\ndef feature(text):\n    return str(len(re.findall(r'\\w+', text)))"
PRELOAD = ["socket", "ctypes", "gc", "_thread", "time", "resource", "subprocess", "signal"]


def test_the_corpus_is_large_and_covers_every_allowed_module():
    assert len(HOSTILE_CORPUS) >= 40
    codes = "\n".join(h.code for h in HOSTILE_CORPUS.values())
    for mod in S.ALLOWED:
        assert f"{mod}." in codes, f"no attribute chain through {mod}"
    kinds = {a for h in HOSTILE_CORPUS.values() for a in h.attempts}
    assert {"file", "delete", "rename", "modify", "socket", "process", "read", "kill", "cpu", "memory", "output",
            "recursion", "hang"} <= kinds
    # some get past the static check, so the layers behind it are exercised too
    assert sum(h.expect != "rejected" for h in HOSTILE_CORPUS.values()) >= 15


@pytest.fixture(scope="module")
def report():
    return S.isolation_report()


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    tcp, udp = open_listeners()
    c = make_context(tmp_path, tcp.getsockname()[1])
    monkeypatch.chdir(c.cwd)
    yield c, tcp, udp
    cleanup(c)
    tcp.close()
    udp.close()


@pytest.fixture(scope="module")
def raw_zygote(report):
    if not report["complete"]:
        pytest.skip("isolation layers missing on this host; hostile code is not run raw: " + S.isolation_summary())
    z = S._Zygote({"preload": PRELOAD})
    yield z
    z.close()


def _hinted(h, error: str, fragment: str | None = None) -> bool:
    """The message says what happened; on a busy host the wall clock may run out before
    the CPU limit does, which says so too."""
    fragment = h.hint if fragment is None else fragment
    return fragment in error or ("cpu" in h.attempts and "timed out" in error)


def _roots() -> list:
    return [S.Path(S._ZYGOTE.root)] if S._ZYGOTE is not None else []


@pytest.mark.parametrize("name", list(HOSTILE_CORPUS))
def test_contained_through_run_feature(name, ctx, report):
    c, tcp, udp = ctx
    h = HOSTILE_CORPUS[name]
    t = time.monotonic()
    res = S.run_feature(render(h, c), ["hello world", "second text"], workdir=c.run_dir, limits=LIMITS)
    took = time.monotonic() - t
    assert violations(c, tcp, udp, res.labels, roots=_roots()) == []
    assert took < LIMITS.wall_seconds + 5
    weak = S._weak_allowed(None)
    if h.expect == "rejected":
        assert not res.ok and res.error.startswith("rejected before running: "), res
    elif not report["complete"] and not weak:
        assert not res.ok and "cannot isolate judge code" in res.error and S.WEAK_ISOLATION_ENV in res.error
    elif h.expect == "error":
        assert not res.ok, res
    else:
        assert res.ok, res
    if not res.ok:  # a message the judge can act on
        assert res.error and len(res.error) < 2500
        if report["complete"] or h.expect == "rejected":
            assert _hinted(h, res.error), res.error
    # the loop goes on: the sandbox still runs good code
    after = S.run_feature(GOOD, ["a b c"], limits=LIMITS)
    assert after.ok == (report["complete"] or weak) and (not after.ok or after.labels == ["3"])


@pytest.mark.parametrize("name", list(HOSTILE_CORPUS))
def test_contained_raw_by_the_operating_system(name, ctx, raw_zygote):
    """No static check, no curated namespaces: the real builtins and modules."""
    c, tcp, udp = ctx
    h = HOSTILE_CORPUS[name]
    t = time.monotonic()
    res = S._call(raw_zygote, render(h, c), ["hello world"], LIMITS, allow_weak=False, raw=True)
    took = time.monotonic() - t
    assert violations(c, tcp, udp, res.labels, roots=[S.Path(raw_zygote.root)]) == [], res
    assert took < LIMITS.wall_seconds + 5
    assert res.ok or res.error
    if "kill" in h.attempts or "process" in h.attempts:
        assert raw_zygote.alive()
    for kind, fragment in (("cpu", "CPU time limit"), ("memory", "MemoryError"), ("recursion", "RecursionError"),
                           ("output", "output too large")):
        if h.attempts == (kind,) and h.expect == "error":
            assert not res.ok and _hinted(h, res.error, fragment), res
    if h.attempts == ("hang",) and "time" in h.code:
        assert not res.ok and "timed out" in res.error
    # the fork server survives every snippet
    after = S._call(raw_zygote, GOOD, ["a b c"], LIMITS, allow_weak=False)
    assert after.ok and after.labels == ["3"]
