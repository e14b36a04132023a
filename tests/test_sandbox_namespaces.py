"""Feature code sees curated namespaces, never modules; typical judge features still work;
the prompts quote the sandbox's own allow-list."""

from __future__ import annotations

import io
import sys
import types

import pytest

from agent.hypotheses import Hypothesis

from agent import sandbox as S
from agent.prompts import prompts_dir


@pytest.fixture(autouse=True)
def benign_code_runs_even_where_isolation_is_weak(monkeypatch):
    """These tests run our own benign code: on a host that lacks an isolation layer (the
    sandbox then refuses judge code), accept the weaker isolation for them."""
    if not S.isolation_report()["complete"]:
        monkeypatch.setenv(S.WEAK_ISOLATION_ENV, "1")

BAD_TYPES = (types.ModuleType, types.CodeType, types.FrameType, types.TracebackType, io.IOBase)
# names on the list that older Pythons lack (they are left out at run time)
VERSION_DEPENDENT = {"batched", "cbrt", "exp2", "NOFLAG", "correlation", "covariance", "linear_regression"}


def _walk(roots: dict, depth: int):
    """Everything reachable from `roots` through attributes feature code may use (and the
    items of containers), up to `depth` steps; yields (path, value)."""
    seen = set()
    frontier = list(roots.items())
    for _ in range(depth):
        nxt = []
        for path, obj in frontier:
            children = []
            try:
                names = dir(obj)
            except Exception:  # noqa: BLE001
                names = []
            for name in names:
                if S._attr_refusal(name):
                    continue
                try:
                    children.append((f"{path}.{name}", getattr(obj, name)))
                except Exception:  # noqa: BLE001 - properties that need an instance etc.
                    continue
            if isinstance(obj, (dict, types.MappingProxyType)):
                children += [(f"{path}[{k!r}]", v) for k, v in list(obj.items())[:200]]
            elif isinstance(obj, (list, tuple, set, frozenset)):
                children += [(f"{path}[{i}]", v) for i, v in enumerate(list(obj)[:200])]
            for p, v in children:
                if id(v) in seen:
                    continue
                seen.add(id(v))
                yield p, v
                nxt.append((p, v))
        frontier = nxt


def test_nothing_reachable_from_the_namespaces_or_builtins_is_a_module_code_frame_or_file():
    ns = S.build_namespaces()
    roots = {name: ns_obj for name, ns_obj in ns.items()}
    roots.update({f"builtins.{k}": v for k, v in S.build_builtins(ns).items() if not k.startswith("_")})
    n = 0
    for path, value in _walk(roots, depth=3):
        n += 1
        assert not isinstance(value, BAD_TYPES), f"{path} is a {type(value).__name__}"
        assert not isinstance(value, S.Namespace) or path.count(".") == 0, path
    assert n > 1000  # the walk did walk


def test_every_listed_name_exists_or_is_version_dependent():
    ns = S.build_namespaces()
    for mod, names in S.ALLOWED.items():
        assert set(names) == set(S.ALLOWED[mod])
        missing = [n for n in names if n not in dir(ns[mod])]
        assert set(missing) <= VERSION_DEPENDENT, (mod, missing)
        assert not any(isinstance(getattr(ns[mod], n), types.ModuleType) for n in dir(ns[mod]))


def test_a_namespace_is_read_only_and_explains_what_it_offers():
    ns = S.build_namespaces()
    with pytest.raises(AttributeError, match=r"statistics.sys is not available in the sandbox; statistics offers: mean"):
        ns["statistics"].sys  # noqa: B018
    with pytest.raises(AttributeError, match="read-only"):
        ns["re"].compile = None
    with pytest.raises(AttributeError):
        ns["json"].__name__  # noqa: B018 - no module name: `from json import x` cannot fall back to sys.modules
    assert repr(ns["re"]) == "<sandboxed module 're'>"


TYPICAL = r'''
import re, math, json, statistics, difflib, unicodedata, string, itertools, functools
from collections import Counter, defaultdict, namedtuple
from re import IGNORECASE

Stats = namedtuple("Stats", "words upper")

def shape(word):
    return "".join("X" if c.isupper() else "x" if c.islower() else "d" if c.isdigit() else c for c in word)

def feature(text):
    words = re.findall(r"[A-Za-z']+", text)
    if not words:
        return None
    counts = Counter(w.lower() for w in words)
    by_len = defaultdict(int)
    for _ in words:
        by_len[len(_)] += 1
    st = Stats(len(words), sum(w[0].isupper() for w in words))
    mean = statistics.mean(len(w) for w in words)
    ratio = difflib.SequenceMatcher(None, text.lower(), "write an email").ratio()
    cats = {unicodedata.category(c) for c in text}
    punct = sum(c in string.punctuation for c in text)
    pairs = len(list(itertools.pairwise(words)))
    total = functools.reduce(lambda a, b: a + b, by_len.values())
    ent = -sum(v / len(words) * math.log(v / len(words)) for v in counts.values())
    js = json.dumps({"n": st.words}, sort_keys=True)
    asks = bool(re.search(r"\b(how|write)\b", text, IGNORECASE))
    enc = len(text.encode("utf-16"))
    match st.upper:
        case 0:
            kind = "lower"
        case _:
            kind = "mixed"
    label = "{}-{}".format(kind, "ask" if asks else "say")
    return f"{label}|{mean:.1f}|{ratio > 0.3}|{'Lu' in cats}|{punct}|{pairs}|{total}|{ent:.2f}|{js}|{enc}|{shape(words[0])}"
'''


def test_typical_judge_features_work():
    res = S.run_feature(TYPICAL, ["Write an email, please!", "how are you", "1234"])
    assert res.ok, res.error
    assert res.labels[0] == 'mixed-ask|4.5|True|True|2|3|4|1.39|{"n": 4}|48|Xxxxx'
    assert res.labels[1].startswith("lower-ask|") and res.labels[2] is None


def test_the_runtime_import_hook_is_the_second_wall():
    """With the static check bypassed, the namespaces and the import hook still refuse."""
    z = S._zygote()
    lim = S.SandboxLimits(cpu_seconds=2, wall_seconds=10)
    res = S._call(z, "import os\ndef feature(t):\n    return os.getcwd()", ["x"], lim, allow_weak=True)
    assert not res.ok and "import of 'os' is not allowed" in res.error
    res = S._call(z, "import re\ndef feature(t):\n    return str(re.enum)", ["x"], lim, allow_weak=True)
    assert not res.ok and "re.enum is not available" in res.error
    res = S._call(z, "def feature(t):\n    return str(open)", ["x"], lim, allow_weak=True)
    assert not res.ok and "NameError" in res.error


@pytest.mark.parametrize("name", ["propose", "compile"])
def test_the_prompts_quote_the_sandbox_allow_list(name):
    """One list: the prompts render the sandbox's own `allowed_prompt_text()`, no copy."""
    from agent.prompts import render

    text = S.allowed_prompt_text()
    h = Hypothesis(name="x", statement="s", kind="python")
    data = {"propose": dict(site="L18", site_description="attention output", eps="0.1", queries=[], scored=[], also_tested=[],
                            n_hypotheses=3, repeats=[]),
            "compile": dict(hypothesis=h, error=None, examples=["a"])}[name]
    assert text in render(name, **data)
    assert "sandbox_allowed" in (prompts_dir() / f"{name}.j2").read_text() and text not in (prompts_dir() / f"{name}.j2").read_text()


def test_allowed_modules_is_the_allow_list():
    assert S.ALLOWED_MODULES == frozenset(S.ALLOWED)
    assert set(sys.stdlib_module_names) >= S.ALLOWED_MODULES
