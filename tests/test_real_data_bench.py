"""`bench/real_data_bench.py`'s query draw: the issue's population, whatever else the prior holds."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from bench.real_data_bench import PLUS_SOURCES, REAL, pick_queries, prior_for
from scope_core.data import RunData
from scope_core.priors.base import Example


def _scope(sources: list[str]) -> SimpleNamespace:
    examples = [Example(f"prompt {i}", {"harmfulness": "harmful" if i % 5 == 0 else "harmless"}, s) for i, s in enumerate(sources)]
    n = len(examples)
    return SimpleNamespace(data=RunData(examples, train=list(range(n // 2)), heldout=list(range(n // 2, n))))


def test_added_prompts_never_become_queries_and_the_rest_draw_as_before():
    issue = ["harmless_val.json", "harmful_test.json"] * 100
    plain = _scope(issue)
    plus = _scope([s if i < 100 or i % 3 else next(iter(PLUS_SOURCES)) for i, s in enumerate(issue)])
    rand, harm = pick_queries(plus, 30, 10, seed=0)
    for i in rand + harm:
        assert plus.data.examples[i].source not in PLUS_SOURCES
        assert i in plus.data.heldout
    assert all(plus.data.examples[i].labels["harmfulness"] == "harmful" for i in harm) and len(harm) == 10
    # a prior without the added files: the draw is the one made over every held-out prompt, as
    # recorded results were drawn before the filter existed
    assert pick_queries(plain, 30, 10, seed=3)[0] == sorted(random.Random(3).sample(list(plain.data.heldout), 30))


def test_real_plus_adds_the_alpaca_split_and_holds_out_more():
    if not REAL.exists():
        pytest.skip(f"the real prompt sets are not at {REAL}")
    real, plus = prior_for("real"), prior_for("real_plus")
    assert plus.data[: len(real.data)] == real.data
    assert [p.rsplit("/", 1)[-1].split(":")[0] for p in plus.data[len(real.data):]] == sorted(PLUS_SOURCES)
    assert (real.heldout, plus.heldout) == (500, 2000)
