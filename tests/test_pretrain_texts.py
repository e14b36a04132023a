"""The pre-training texts of `bench/pretrain_texts.py` are edits of the prior's own prompts: each is
an ordered subset of its source prompt's words (so the target's re-run gives an exact pair of real
text), never the prompt itself, and reproducible from the seed."""

import pytest

from bench.pretrain_texts import edits, truncations

TEXTS = [
    "Write a short poem about the sea at night",
    "Explain how vaccines train the immune system",
    "Hi there",                                   # under four words: no edits
    "Name four rainy cities",                     # four words: the span deletion may only drop one
    "List three uses of baking soda",
]
LONG = [t for t in TEXTS if len(t.split()) >= 4]


def _deletions(src: list[str], k: int) -> set[str]:
    """Every text `src` becomes with one contiguous span of k words removed."""
    return {" ".join(src[:j] + src[j + k:]) for j in range(len(src) - k + 1)}


def test_truncations_keep_at_least_half_and_drop_at_least_one_word() -> None:
    cuts = truncations(TEXTS, seed=0)
    assert len(cuts) == len(LONG)
    for cut, src in zip(cuts, LONG):
        n, m = len(cut.split()), len(src.split())
        assert (m + 1) // 2 <= n < m and src.split()[:n] == cut.split()


@pytest.mark.parametrize("seed", range(20))
def test_edits_are_a_truncation_and_two_deletions_of_each_long_prompt(seed: int) -> None:
    out = edits(TEXTS, seed=seed)
    assert len(out) == 3 * len(LONG)
    assert out[: len(LONG)] == truncations(TEXTS, seed + 1)
    deletions = out[len(LONG):]
    for i, src in enumerate(LONG):
        words = src.split()
        one, span = deletions[2 * i], deletions[2 * i + 1]
        assert one in _deletions(words, 1)
        spans = _deletions(words, 1) if len(words) == 4 else _deletions(words, 2) | _deletions(words, 3)
        assert span in spans and len(span.split()) >= 3
        assert src not in (one, span)


def test_edits_are_reproducible_from_the_seed() -> None:
    assert edits(TEXTS, seed=1) == edits(TEXTS, seed=1)
    assert edits(TEXTS * 5, seed=1) != edits(TEXTS * 5, seed=2)
