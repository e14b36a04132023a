"""`bench/prefix_probe.py`: a row's forced opening is what its sample starts with, the rest is drawn
under the row's own condition (as `decode_in_batches` draws it, rows leaving the batch included),
openings come from the query's candidates up to the share, and only sparse balls keep them."""

import torch

from bench.prefix_probe import decode_forced


def test_forced_openings_start_each_sample_and_the_rest_is_drawn(tiny_scope) -> None:
    scope = tiny_scope
    bb = scope.inverter.backbone
    z = scope.acts(scope.site("L2"))[:3].repeat_interleave(2, 0)
    openings = [bb.encode([t], 16)[0][:-1] for t in ("write a poem about the sea", "how to make bread")]
    forced = [openings[0][:3], [], openings[1], openings[1][:1], [], openings[0]]
    out = decode_forced(scope, "L2", z, forced, temperature=1.0, max_new_tokens=12, batch_size=4, seed=0)
    assert len(out) == len(forced)
    for toks, f in zip(out, forced):
        assert toks[: len(f)] == f
        assert len(toks) <= 12 and (toks[-1] == bb.end_id or len(toks) == 12)
        assert bb.end_id not in toks[:-1]
    # seeded: the same rows, forced openings and seed give the same samples
    assert out == decode_forced(scope, "L2", z, forced, temperature=1.0, max_new_tokens=12, batch_size=4, seed=0)
    assert any(len(toks) > len(f) for toks, f in zip(out, forced) if f)  # something was written after the openings


def test_with_nothing_forced_it_decodes_as_the_plain_sampler(tiny_scope) -> None:
    """At a temperature near 0 both decoders take each row's most likely token, so the condition,
    cache and dropped rows are checked against `decode_in_batches` token for token."""
    from scope_core.decoding import decode_in_batches

    inv = tiny_scope.inverter
    z = tiny_scope.acts(tiny_scope.site("L2"))[:6]
    plain = decode_in_batches(inv, inv.site_index("L2"), z, list(range(6)), 0.0, 12, 4, torch.Generator().manual_seed(0), 0.0,
                              None, False, None)
    assert decode_forced(tiny_scope, "L2", z, [[] for _ in range(6)], temperature=1e-6, max_new_tokens=12, batch_size=4, seed=0) == plain


def test_rows_keep_their_openings_and_conditions_as_others_leave_the_batch(tiny_scope) -> None:
    """Rows 0 and 2 end at once (a forced end token); rows 1 and 3 must still get their own
    openings and, after them, what each decodes alone under its own condition."""
    bb = tiny_scope.inverter.backbone
    z = tiny_scope.acts(tiny_scope.site("L2"))[:4]
    a, b = (bb.encode([t], 16)[0][:-1] for t in ("write a poem about the sea", "how to make bread"))
    forced = [[bb.end_id], a, [bb.end_id], b]
    out = decode_forced(tiny_scope, "L2", z, forced, temperature=1e-6, max_new_tokens=12, batch_size=4, seed=0)
    assert out[0] == out[2] == [bb.end_id]
    for r in (1, 3):
        alone = decode_forced(tiny_scope, "L2", z[r:r + 1], [forced[r]], temperature=1e-6, max_new_tokens=12, batch_size=1, seed=0)
        assert out[r] == alone[0] and out[r][: len(forced[r])] == forced[r]


def test_a_forced_end_token_ends_the_row(tiny_scope) -> None:
    bb = tiny_scope.inverter.backbone
    z = tiny_scope.acts(tiny_scope.site("L2"))[:2]
    out = decode_forced(tiny_scope, "L2", z, [[bb.end_id], []], temperature=1.0, max_new_tokens=6, batch_size=2, seed=1)
    assert out[0] == [bb.end_id]  # nothing is drawn after a forced end
    assert 1 <= len(out[1]) <= 6 and (out[1][-1] == bb.end_id or len(out[1]) == 6)


def test_openings_are_the_first_tokens_of_a_candidate_up_to_the_share(tiny_scope) -> None:
    import numpy as np

    from bench.prefix_probe import forced_openings

    scope = tiny_scope
    bb, train = scope.inverter.backbone, list(scope.data.train)
    lists = [np.array([0, 1, 2]), np.array([5]), np.zeros(0, dtype=np.int64)]
    forced = forced_openings(scope, lists, n=8, share=0.5, seed=0)
    assert len(forced) == 24
    assert all(f == [] for f in forced[16:])  # an empty ball: every sample is the plain one
    texts = {int(m): bb.encode([scope.data.examples[train[int(m)]].text], scope.sample_token_cap)[0][:-1] for m in (0, 1, 2, 5)}
    for q, members in enumerate(lists[:2]):
        for f in forced[q * 8:(q + 1) * 8]:
            if f:
                src = [texts[int(m)] for m in members if texts[int(m)][: len(f)] == f]
                assert src and any(len(f) <= max(1, -(-len(s) // 2)) for s in src)
    assert any(forced[:16]) and not all(forced[:16])  # both ẑ itself and members are drawn
    assert forced == forced_openings(scope, lists, n=8, share=0.5, seed=0)


def test_sparse_only_keeps_openings_where_the_ball_holds_fewer_than_n_prompts(tiny_scope) -> None:
    import numpy as np

    from bench.prefix_probe import candidates, sparse_only

    scope = tiny_scope
    site = scope.site("L2")
    idx = scope.heldout_indices(limit=3)
    zq = scope.acts(site)[torch.tensor(idx)]
    lists = [np.array([0, 1]), np.array([2]), np.array([3, 4, 5])]
    wide, tight = scope.eps(site, eps=2.5), scope.eps(site, eps=1e-9)  # every training prompt within ε / none
    assert all(len(m) == 0 for m in sparse_only(scope, site, zq, idx, wide, lists, 16))
    assert [m.tolist() for m in sparse_only(scope, site, zq, idx, tight, lists, 16)] == [m.tolist() for m in lists]
    # the boundary: a ball of exactly n prompts is full (§34's strata), one of n − 1 is sparse
    mid = scope.eps(site, eps=0.5 * float(scope.eps(site).eps))
    sizes = [len(b) for b in candidates(scope, site, zq, idx, mid, "ball", 16)]
    assert any(sizes)
    for q, size in enumerate(sizes):
        if size:
            assert len(sparse_only(scope, site, zq, idx, mid, lists, size)[q]) == 0
            assert sparse_only(scope, site, zq, idx, mid, lists, size + 1)[q].tolist() == lists[q].tolist()


def test_the_forced_share_is_read_on_the_random_queries_only() -> None:
    from bench.prefix_probe import forced_share

    forced = [[1], [2], [], []] + [[], [], [], []]  # query 10: half forced; query 11: none
    assert forced_share(forced, [10, 11], [10], 4) == 0.5
    assert forced_share(forced, [10, 11], [11], 4) == 0.0
    assert forced_share(forced, [10, 11], [10, 11], 4) == 0.25
