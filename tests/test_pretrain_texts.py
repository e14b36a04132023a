"""The pre-training texts of `bench/pretrain_texts.py` are edits of the prior's own prompts: each must be
an ordered subset of a source prompt's words (so the target's re-run gives an exact pair of real text),
never the prompt itself, and reproducible from the seed."""

from bench.pretrain_texts import edits, truncations

TEXTS = [
    "Write a short poem about the sea at night",
    "Explain how vaccines train the immune system",
    "Hi there",                                   # under four words: no edits
    "List three uses of baking soda",
]


def _is_ordered_subset(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(w in it for w in short)


def test_truncations_keep_at_least_half_and_drop_at_least_one_word() -> None:
    cuts = truncations(TEXTS, seed=0)
    assert len(cuts) == 3
    for cut, src in zip(cuts, [t for t in TEXTS if len(t.split()) >= 4]):
        n, m = len(cut.split()), len(src.split())
        assert (m + 1) // 2 <= n < m and src.startswith(cut)


def test_edits_are_three_ordered_word_subsets_of_each_long_prompt() -> None:
    out = edits(TEXTS, seed=3)
    long = [t for t in TEXTS if len(t.split()) >= 4]
    assert len(out) == 3 * len(long)
    for text in out:
        words = text.split()
        sources = [s for s in long if _is_ordered_subset(words, s.split()) and len(words) < len(s.split())]
        assert sources, f"{text!r} is not an edit of any prompt"
        assert len(words) >= 3
    deletions = out[len(long):]
    for i, src in enumerate(long):
        one, span = deletions[2 * i], deletions[2 * i + 1]
        assert len(one.split()) == len(src.split()) - 1
        assert len(span.split()) in (len(src.split()) - 2, len(src.split()) - 3)


def test_edits_are_reproducible_from_the_seed() -> None:
    assert edits(TEXTS, seed=1) == edits(TEXTS, seed=1)
    assert edits(TEXTS * 5, seed=1) != edits(TEXTS * 5, seed=2)
