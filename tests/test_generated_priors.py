"""Behaviour of the generated task priors: refusal, IOI and ICL (fast, standard library only)."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from scope_core.priors import icl, refusal
from scope_core.priors.base import Example
from scope_core.priors.icl import (
    DICTIONARY,
    DIRECTIONS,
    generate_icl,
    input_of,
    task_of,
)
from scope_core.priors.ioi import (
    NAMES,
    generate_ioi,
    max_distinct_ioi,
    object_of,
    subject_of,
)
from scope_core.priors.refusal import (
    METHODS,
    REASON_CATEGORIES,
    draw_refusal,
    generate_refusal,
    max_distinct_refusal,
)


def _check_surface(texts: list[str]) -> None:
    for t in texts:
        assert "{" not in t and "}" not in t, t
        assert "^" not in t, t
        assert "  " not in t, t
        assert t == t.strip(), t
        assert 4 <= len(t.split()) <= 40, t


# ----------------------------------------------------------------------------------- refusal


@pytest.fixture(scope="module")
def refusal_40k() -> list[Example]:
    return generate_refusal(40_000, seed=0)


def test_refusal_categories_and_methods_are_fixed():
    assert set(REASON_CATEGORIES) == {
        "cybercrime", "fraud", "violence", "weapons", "drugs", "hate_harassment",
        "misinformation", "self_harm", "privacy", "theft",
    }
    assert all(isinstance(v, str) and v for v in REASON_CATEGORIES.values())
    assert 18 <= len(METHODS) <= 25
    assert len(set(METHODS)) == len(METHODS)
    assert all(m == m.lower() and m.strip() == m for m in METHODS)


def test_refusal_exact_n_distinct_and_deterministic():
    a = generate_refusal(500, seed=7)
    b = generate_refusal(500, seed=7)
    c = generate_refusal(500, seed=8)
    assert len(a) == 500
    assert len({e.text for e in a}) == 500
    assert [(e.text, e.labels) for e in a] == [(e.text, e.labels) for e in b]
    assert [e.text for e in a] != [e.text for e in c]
    assert generate_refusal(0) == []
    assert all(isinstance(e, Example) and e.source == "generated" for e in a)


def test_refusal_grammar_supports_40k_distinct(refusal_40k):
    assert len(refusal_40k) == 40_000
    assert len({e.text for e in refusal_40k}) == 40_000
    assert max_distinct_refusal() >= 40_000


def test_refusal_too_many_raises():
    with pytest.raises(ValueError):
        generate_refusal(10**8)
    with pytest.raises(ValueError):
        generate_refusal(-1)
    with pytest.raises(ValueError):
        generate_refusal(10, harmful_fraction=1.5)


@pytest.mark.parametrize("fraction", [0.4, 0.1, 0.5, 0.8])
def test_refusal_harmful_fraction(fraction):
    ex = generate_refusal(2000, seed=3, harmful_fraction=fraction)
    share = sum(e.labels["harmfulness"] == "harmful" for e in ex) / len(ex)
    assert abs(share - fraction) <= 0.03


def test_refusal_draws_are_the_grammar_with_repeats(refusal_40k):
    """`draw_refusal` is the distribution `generate_refusal` de-duplicates: seeded, repeats
    kept (some frames have few fillers), the same surface and labels, and its fresh draws
    land on prompts of a de-duplicated prior of the same grammar (the copy rate a faithful
    sampler would show, bench/prior_copy_rate.py)."""
    draws = draw_refusal(6000, seed=1, harmful_fraction=0.4)
    assert [e.text for e in draws] == [e.text for e in draw_refusal(6000, seed=1, harmful_fraction=0.4)]
    assert [e.text for e in draws] != [e.text for e in draw_refusal(6000, seed=2, harmful_fraction=0.4)]
    texts = [e.text for e in draws]
    assert len(set(texts)) < len(texts)
    _check_surface(texts)
    share = sum(e.labels["harmfulness"] == "harmful" for e in draws) / len(draws)
    assert abs(share - 0.4) <= 0.03
    for e in draws:
        assert e.labels["method"] in METHODS
        assert (e.labels["reason"] is None) == (e.labels["harmfulness"] == "harmless")
    prior = {e.text for e in refusal_40k}
    assert 0.05 < sum(t in prior for t in texts) / len(texts) < 0.95
    with pytest.raises(ValueError):
        draw_refusal(-1)
    with pytest.raises(ValueError):
        draw_refusal(10, harmful_fraction=-0.1)


def test_refusal_labels(refusal_40k):
    ex = refusal_40k
    for e in ex:
        assert set(e.labels) == {"harmfulness", "reason", "method"}
        assert e.labels["method"] in METHODS
        if e.labels["harmfulness"] == "harmful":
            assert e.labels["reason"] in REASON_CATEGORIES
        else:
            assert e.labels["harmfulness"] == "harmless"
            assert e.labels["reason"] is None
    share = sum(e.labels["harmfulness"] == "harmful" for e in ex) / len(ex)
    assert abs(share - 0.4) <= 0.03
    # every category and every method is used, and every method by both polarities
    assert {e.labels["reason"] for e in ex} - {None} == set(REASON_CATEGORIES)
    for polarity in ("harmful", "harmless"):
        assert {e.labels["method"] for e in ex if e.labels["harmfulness"] == polarity} == set(METHODS)
    # harmful and harmless prompts are mixed, not blocked
    first = [e.labels["harmfulness"] for e in ex[:200]]
    assert 0 < first.count("harmful") < 200


def test_refusal_surface(refusal_40k):
    texts = [e.text for e in refusal_40k]
    _check_surface(texts)
    for t in texts:
        assert t[0].isupper(), t
        assert 6 <= len(t.split()) <= 30, t


def test_refusal_balanced_categories(refusal_40k):
    counts = Counter(e.labels["reason"] for e in refusal_40k if e.labels["reason"])
    assert max(counts.values()) < 1.5 * min(counts.values())


def test_refusal_grammar_inflection():
    # only main verbs are inflected: "to ^verb" would give "convincing X to shares ..."
    for acts in (refusal._HARMFUL_ACTS, refusal._HARMLESS_ACTS):
        for group in acts.values():
            for template, _, _ in group:
                assert "to ^" not in template, template
    assert refusal._inflect("^break into {x} and ^steal {y}", "s") == "breaks into {x} and steals {y}"
    assert refusal._inflect("^shoplift from {x}", "ing") == "shoplifting from {x}"
    assert refusal._inflect("^cyberbully {x}", "s") == "cyberbullies {x}"
    assert refusal._inflect("^repot {x}", "ing") == "repotting {x}"


def test_refusal_examples_read_like_instructions():
    ex = generate_refusal(3000, seed=11)
    texts = {e.text for e in ex}
    # no double modifiers or broken agreement
    for t in texts:
        assert not re.search(r"without [^,]* without ", t), t
        assert not re.search(r"\bto (shares|sells|tries|installs|collects)\b", t), t


# ----------------------------------------------------------------------------------- IOI


def test_ioi_exact_n_distinct_and_deterministic():
    a = generate_ioi(3000, seed=1)
    assert len(a) == 3000
    assert len({e.text for e in a}) == 3000
    assert [(e.text, e.labels) for e in a] == [(e.text, e.labels) for e in generate_ioi(3000, seed=1)]
    assert [e.text for e in a] != [e.text for e in generate_ioi(3000, seed=2)]
    _check_surface([e.text for e in a])
    with pytest.raises(ValueError):
        generate_ioi(max_distinct_ioi() + 1)


def test_ioi_labels_agree_with_rules():
    for e in generate_ioi(3000, seed=4):
        s, o = e.labels["subject"], e.labels["object"]
        assert set(e.labels) == {"subject", "object"}
        assert s in NAMES and o in NAMES and s != o
        words = re.findall(r"[A-Za-z]+", e.text)
        assert words.count(o) == 1, e.text
        assert words.count(s) == 2, e.text
        assert subject_of(e.text) == s
        assert object_of(e.text) == o
        assert e.text.endswith(" to"), e.text


def test_ioi_uses_all_templates_and_both_orders():
    ex = generate_ioi(1600, seed=0)
    firsts = Counter()
    for e in ex:
        first = next(w for w in re.findall(r"[A-Z][a-z]+", e.text) if w in NAMES)
        firsts[first == e.labels["subject"]] += 1
    assert firsts[True] > 300 and firsts[False] > 300  # ABB and BAB orders both present
    prefixes = {e.text.split()[0] for e in ex}
    assert {"When", "Then,", "After", "While", "Afterwards,", "The", "Friends"} <= prefixes


def test_ioi_rule_functions_reject_other_patterns():
    assert subject_of("Mary went to the store.") is None
    assert object_of("Mary and John went to the store.") is None
    assert subject_of("Mary and John met Tom. Mary gave a book to") is None
    assert object_of("Mary gave Mary a book. Mary said") is None
    assert subject_of("When Mary and John went to the park, John gave a ring to") == "John"
    assert object_of("When Mary and John went to the park, John gave a ring to") == "Mary"


# ----------------------------------------------------------------------------------- ICL

_ICL_FORMAT = re.compile(
    r"Input: (\S+), Output: (\S+)\nInput: (\S+), Output: (\S+)\nInput: (\S+), Output: (\S+)\n"
    r"Input: (\S+), Output: (\S+)\nInput: (\S+), Output:"
)


def test_icl_dictionary():
    assert len(DICTIONARY) >= 120
    spellings = [w for row in DICTIONARY for w in row]
    assert len(set(spellings)) == len(spellings)  # no spelling shared within or across languages
    for w in spellings:
        assert w == w.lower() and " " not in w and w.isalpha(), w
    assert len(DIRECTIONS) == 6 and len(set(DIRECTIONS)) == 6
    assert ("dog", "chien", "perro") in DICTIONARY and ("house", "maison", "casa") in DICTIONARY


def test_icl_exact_n_distinct_and_deterministic():
    a = generate_icl(600, seed=5)
    assert len(a) == 600 and len({e.text for e in a}) == 600
    assert [(e.text, e.labels) for e in a] == [(e.text, e.labels) for e in generate_icl(600, seed=5)]
    assert [e.text for e in a] != [e.text for e in generate_icl(600, seed=6)]
    _check_surface([e.text.replace("\n", " ") for e in a])


def test_icl_directions_and_rules():
    ex = generate_icl(600, seed=0)
    tasks = Counter(e.labels["task"] for e in ex)
    assert set(tasks) == {icl.task_label(s, t) for s, t in DIRECTIONS}
    assert "English-to-French translation" in tasks
    for e in ex:
        assert set(e.labels) == {"task", "input"}
        m = _ICL_FORMAT.fullmatch(e.text)
        assert m, e.text
        inputs = m.groups()[0::2]
        assert len(set(inputs)) == 5  # 5 distinct words
        assert input_of(e.text) == e.labels["input"] == inputs[-1]
        assert task_of(e.text) == e.labels["task"]
        assert len(e.text.split()) == 19  # 4 x "Input: w, Output: t" + "Input: w, Output:"


def test_icl_rule_functions_edge_cases():
    assert input_of("no demonstrations here") is None
    assert task_of("Input: foo, Output: bar\nInput: dog, Output:") is None
    assert task_of("Input: dog, Output:") is None
    assert task_of("Input: dog, Output: chien\nInput: cat, Output:") == "English-to-French translation"
    assert task_of("Input: perro, Output: chien\nInput: gato, Output:") == "Spanish-to-French translation"
    # inconsistent demonstrations -> None
    assert task_of("Input: dog, Output: chien\nInput: cat, Output: gato\nInput: cow, Output:") is None
