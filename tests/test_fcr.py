import pytest
import torch

from scope_core.fcr import chance_levels, empirical_fcr, fcr


def test_fcr_hand_computed():
    # query 1: label a, samples a,b,a with weights 1,1,2 -> (1+2)/4 = 0.75
    # query 2: label b, samples b,None with weights 1,1 -> 0.5 (undefined sample never matches)
    res = fcr(["a", "b"], [["a", "b", "a"], ["b", None]], [[1, 1, 2], [1, 1]], prior_labels=["a", "a", "b", None])
    assert res.fcr == pytest.approx((0.75 + 0.5) / 2)
    # p0: P(a) = 2/4, P(b) = 1/4 -> mean 0.375
    assert res.p0 == pytest.approx(0.375)
    assert res.kappa == pytest.approx((0.625 - 0.375) / (1 - 0.375))
    assert res.n_queries == 2 and not res.degenerate
    assert res.ci_low <= res.fcr <= res.ci_high


def test_undefined_queries_and_weightless_queries_are_skipped_and_counted():
    res = fcr([None, "a", "a"], [["a"], ["a"], ["a", "a"]], [[1], [0], [1, 0]], prior_labels=["a", "b"])
    assert res.n_undefined == 1 and res.n_no_weight == 1 and res.n_queries == 1
    assert res.fcr == 1.0


def test_constant_feature_is_degenerate_not_kappa_one():
    res = fcr(["x", "x"], [["x"], ["x"]], [[1], [1]], prior_labels=["x"] * 10)
    assert res.fcr == 1.0 and res.p0 == 1.0
    assert res.degenerate and res.kappa is None
    assert "degenerate" in res.line()


def test_no_usable_query_gives_undefined_fcr():
    res = fcr([None], [["a"]], [[1]], prior_labels=["a"])
    assert res.fcr is None and res.n_undefined == 1


def test_chance_levels():
    assert chance_levels(["a", "c"], ["a", "b", "a", None]) == [0.5, 0.0]


def test_empirical_fcr_counts_real_neighbours_within_eps():
    # three clusters in 2-D; each query's neighbours share its label except one outlier
    pool = torch.tensor([[1.0, 0.0], [1.0, 0.01], [1.0, -0.01], [0.0, 1.0], [0.01, 1.0], [1.0, 0.005]])
    labels = ["a", "a", "a", "b", "b", "b"]  # the last one sits in cluster a but is labelled b
    zq = pool[[0, 3]]
    res = empirical_fcr(["a", "b"], zq, pool, labels, eps=0.01, metric="cosine", kernel="hard", exclude=[0, 3])
    # query 0: neighbours 1, 2, 5 -> 2/3; query 3: neighbour 4 -> 1
    assert res.per_query == pytest.approx([2 / 3, 1.0])
