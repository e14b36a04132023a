"""The prior's density at each query: nearest training prompts, the lookup, and the ε-ball strata."""

import math

import pytest
import torch

from scope_core.distances import pairwise_distance
from scope_core.eps import EpsChoice
from scope_core.prior_density import density_summary, describe_density, nearest_prior, stratum
from scope_core.sample import QueryResult, Sample, SampleRun, summarise, with_eps


@pytest.mark.parametrize("metric", ["cosine", "centred_cosine", "euclidean", "norm_euclidean"])
def test_nearest_prior_is_the_sorted_head_of_all_distances_with_the_own_row_left_out(metric):
    g = torch.Generator().manual_seed(0)
    pool = torch.randn(50, 8, generator=g)
    zq = torch.cat([pool[[3, 17]], torch.randn(2, 8, generator=g)])
    mean = pool.mean(0)
    exclude = [3, 17, None, None]
    got = nearest_prior(zq, pool, metric, 5, mean, exclude=exclude, budget=60)  # 1 query a block: the blocks must agree
    full = pairwise_distance(zq, pool, metric, mean)
    for q, e in enumerate(exclude):
        d = full[q].clone()
        if e is not None:
            d[e] = math.inf
        assert got[q].tolist() == pytest.approx(torch.sort(d).values[:5].tolist(), abs=1e-5)
    assert got[0, 0] > 1e-4  # a prior prompt's own activation is not its own neighbour


def test_nearest_prior_caps_k_at_the_pool():
    pool = torch.randn(3, 4)
    assert nearest_prior(pool[:1], pool, "cosine", 16, exclude=[0]).shape == (1, 2)
    assert nearest_prior(torch.randn(2, 4), pool, "cosine", 16).shape == (2, 3)


def _query(distances: list[float], nearest: list[float] | None, eps: float) -> QueryResult:
    return QueryResult(query="q", samples=[Sample(text=f"s{i}", distance=d, weight=1.0, accepted=d < eps, is_copy=False)
                                           for i, d in enumerate(distances)], prior_nearest=nearest)


def _run(queries: list[QueryResult], eps: float) -> SampleRun:
    return SampleRun(site="L2", eps=EpsChoice(site="L2", metric="cosine", eps=eps, source="absolute"), metric="cosine",
                     kernel="hard", temperature=1.0, queries=queries, timing={})


def test_strata_and_lookup_are_read_at_the_runs_eps():
    eps = 0.1
    empty = _query([0.2, 0.3, 0.05, 0.4], [0.12, 0.2, 0.3, 0.4], eps)  # no prompt within ε; 1 of 4 samples accepted
    sparse = _query([0.05, 0.2, 0.2, 0.2], [0.01, 0.08, 0.15, 0.3], eps)  # 2 within ε
    full = _query([0.01, 0.02, 0.03, 0.5], [0.01, 0.02, 0.03, 0.04, 0.3], eps)  # 4 of its 4 nearest within ε (a fifth is ignored)
    assert [stratum(q.prior_nearest, eps, 4) for q in (empty, sparse, full)] == ["empty", "sparse", "full"]
    s = summarise(_run([empty, sparse, full], eps))
    assert s["lookup_refusal_rate"] == pytest.approx((4 + 2 + 0) / 12)
    assert s["refusal_ball_empty"] == pytest.approx(3 / 4) and s["refusal_ball_sparse"] == pytest.approx(3 / 4)
    assert s["refusal_ball_full"] == pytest.approx(1 / 4)
    assert s["queries_ball_empty"] == s["queries_ball_sparse"] == s["queries_ball_full"] == pytest.approx(1 / 3)
    wide = summarise(with_eps(_run([empty, sparse, full], eps), EpsChoice(site="L2", metric="cosine", eps=0.35, source="absolute")))
    assert wide["lookup_refusal_rate"] == pytest.approx(1 / 12)  # only the first query's 0.4 stays outside
    assert wide["queries_ball_full"] == pytest.approx(2 / 3) and wide["queries_ball_empty"] == 0
    assert math.isnan(wide["refusal_ball_empty"])


def test_runs_without_nearest_prompts_summarise_as_before():
    s = summarise(_run([_query([0.05, 0.2], None, 0.1)], 0.1))
    assert "lookup_refusal_rate" not in s and s["refusal_rate"] == 0.5
    assert density_summary([], 0.1) == {}
    assert describe_density(s, 1, 2) is None


def test_the_sentence_names_the_strata_present_and_the_lookup():
    eps = 0.1
    queries = [_query([0.2] * 4, [0.3] * 4, eps), _query([0.01] * 4, [0.01] * 4, eps)]
    s = summarise(_run(queries, eps))
    text = describe_density(s, 2, 4)
    assert "1 with no training prompt within ε (refused 1.00)" in text and "1 with 4 or more (refused 0.00)" in text
    assert "1–3" not in text  # no sparse query, no clause
    assert "would be refused 0.50" in text and "this sampler: 0.50" in text


def test_sampled_queries_carry_their_nearest_training_prompts(tiny_scope):
    scope = tiny_scope
    site = scope.site("L2")
    idx = scope.heldout_indices(limit=2)
    eps = scope.eps(site, eps=0.3)
    run = scope.sample(site, indices=idx, n=3, eps=eps)
    train = torch.tensor(scope.data.train)
    for q, i in zip(run.queries, idx):
        d = pairwise_distance(scope.acts(site)[[i]], scope.acts(site)[train], "cosine")[0]
        assert q.prior_nearest == pytest.approx(torch.sort(d).values[:3].tolist(), abs=1e-5)
    assert "lookup_refusal_rate" in scope.sampler_summary(run)
    free = scope.sample(site, texts=[scope.data.examples[scope.data.train[0]].text], n=2, eps=eps)
    assert free.queries[0].prior_nearest[0] == pytest.approx(0.0, abs=1e-5)  # a free text equal to a training prompt: it is in the prior
    again = scope.with_prior_nearest(run.model_copy(update={"queries": [q.model_copy(update={"prior_nearest": None}) for q in run.queries]}), site)
    for a, b in zip(again.queries, run.queries):  # a run saved without them gets them back
        assert a.prior_nearest == pytest.approx(b.prior_nearest, abs=1e-6)


def test_train_check_reads_refusal_beside_the_lookup(tiny_scope):
    from agent.train_check import MAX_REFUSAL, check_run

    check = check_run(tiny_scope.run_dir, None, None, queries=3, n=4)
    (site,) = check.sites
    assert site.lookup_refusal_rate is not None and 0 <= site.lookup_refusal_rate <= 1
    assert "copying the 4 nearest training prompts" in check.verdict()
    spacing = [p for p in check.problems if "tighter than the prior's own spacing" in p]
    assert bool(spacing) == (site.refusal_rate > MAX_REFUSAL and site.lookup_refusal_rate > MAX_REFUSAL)
