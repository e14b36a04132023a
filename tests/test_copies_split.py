"""Near copies of the prior, one sample run judged at several ε, and the early-stopping split."""

from __future__ import annotations

import json

import pytest

from scope_core.copies import NearCopyIndex, edit_distance, words
from scope_core.data import RunData, split_indices, split_validation
from scope_core.eps import EpsChoice
from scope_core.priors.base import Example
from scope_core.sample import QueryResult, Sample, SampleRun, summarise, with_eps

TRAIN = ["Write a poem about the sea.", "Explain how vaccines work.", "Give three tips for staying healthy."]


def test_word_edit_distance() -> None:
    assert edit_distance(words("a b c"), words("a x c"), 2) == 1
    assert edit_distance(words("a b c"), words("a c"), 2) == 1
    assert edit_distance(words("a b c"), words("c b a"), 5) == 2
    assert edit_distance(words("a b c d e"), words("v w x y z"), 1) == 2  # stops once past the limit


@pytest.mark.parametrize("text,near", [
    ("Write a poem about the sea.", True),            # exact
    ("Write a poem about the moon.", True),           # one word substituted
    ("write a poem about the sea", True),             # case and one mark: one edit
    ("Write a short poem about the sea.", True),      # one word inserted
    ("Write a poem the sea.", True),                  # one word deleted
    ("Write a song about the moon.", False),          # two words changed
    ("Describe the water cycle.", False),
])
def test_near_copy_index(text: str, near: bool) -> None:
    assert NearCopyIndex(TRAIN).is_near_copy(text) is near


def _run(samples: list[tuple[str, float]], query: str = "Explain how vaccines work in children.") -> SampleRun:
    eps = EpsChoice(site="L18", metric="cosine", eps=0.1, source="absolute")
    ss = [Sample(text=t, distance=d, weight=float(d < 0.1), accepted=d < 0.1, is_copy=t in TRAIN) for t, d in samples]
    return SampleRun(site="L18", eps=eps, metric="cosine", kernel="hard", temperature=1.0,
                     queries=[QueryResult(query=query, index=0, samples=ss)], timing={})


def test_near_copy_summary_counts_query_and_prior_copies() -> None:
    run = _run([("Explain how vaccines work.", 0.01), ("Explain how vaccines work in kids.", 0.02),
                ("Describe the water cycle in detail.", 0.05), ("Tell me a joke.", 0.5)])
    s = NearCopyIndex(TRAIN).summarise(run)
    assert s["near_copy_rate"] == 0.25  # the exact training prompt only
    assert s["query_copy_rate"] == 0.25  # one word from the query ("children" -> "kids")
    assert s["accepted_far_novel_per_100"] == 25.0  # the water cycle: accepted, novel and far from both
    assert summarise(run)["accepted_novel_per_100"] == 50.0  # the exact-match count calls the query copy novel


def test_with_eps_rethresholds_without_resampling() -> None:
    run = _run([("a", 0.03), ("b", 0.08), ("c", 0.12), ("d", float("inf"))])
    assert summarise(run)["refusal_rate"] == 0.5
    wide = with_eps(run, EpsChoice(site="L18", metric="cosine", eps=0.15, source="absolute"))
    narrow = with_eps(run, EpsChoice(site="L18", metric="cosine", eps=0.05, source="absolute"))
    assert summarise(wide)["refusal_rate"] == 0.25 and summarise(narrow)["refusal_rate"] == 0.75
    assert [s.weight for s in wide.queries[0].samples] == [1.0, 1.0, 1.0, 0.0]
    assert wide.eps.eps == 0.15 and run.eps.eps == 0.1  # the original is untouched


def test_validation_split_is_disjoint_and_saved(tmp_path) -> None:
    train, held = split_indices(1000, 100, 0)
    train, valid = split_validation(train, 192, 0)
    assert len(valid) == 90  # at most a tenth of the training part
    assert not set(valid) & set(held) and not set(valid) & set(train)
    assert sorted(train + valid + held) == list(range(1000))
    ex = [Example(f"p{i}", {}, "") for i in range(1000)]
    RunData(ex, train, held, valid).save(tmp_path)
    back = RunData.load(tmp_path)
    assert back.valid == valid and not back.valid_is_heldout


def test_runs_without_a_validation_split_stop_on_their_heldout(tmp_path) -> None:
    ex = [Example(f"p{i}", {}, "") for i in range(10)]
    RunData(ex, list(range(8)), [8, 9]).save(tmp_path)
    assert "valid" not in json.loads((tmp_path / "split.json").read_text())
    back = RunData.load(tmp_path)
    assert back.valid == [8, 9] and back.valid_is_heldout
