"""The prior's density at each query: nearest training prompts, the lookup, and the ε-ball strata."""

import math

import pytest
import torch

from scope_core.distances import distance, pairwise_distance
from scope_core.eps import EpsChoice
from scope_core.errors import AutoscopeError
from scope_core.prior_density import density_summary, describe_density, nearest_prior, stratum
from scope_core.sample import QueryResult, Sample, SampleRun, summarise, with_eps


@pytest.mark.parametrize("metric", ["cosine", "centred_cosine", "euclidean", "norm_euclidean"])
def test_nearest_prior_is_the_sorted_head_of_verifications_distances_with_the_own_row_left_out(metric):
    g = torch.Generator().manual_seed(0)
    pool = torch.randn(50, 8, generator=g) * torch.linspace(0.5, 3, 50)[:, None]  # norms differ: norm_euclidean's centre matters
    zq = torch.cat([pool[[3, 17]], torch.randn(2, 8, generator=g)])
    mean = pool.mean(0)
    exclude = [3, 17, None, None]
    got = nearest_prior(zq, pool, metric, 5, mean, exclude=exclude, budget=60)  # 1 query a block: the blocks must agree
    for q, e in enumerate(exclude):
        d = distance(pool, zq[q], metric, mean)  # what verification computes, ẑ the centre
        if e is not None:
            d[e] = math.inf
        assert got[q] == pytest.approx(torch.sort(d).values[:5].tolist(), abs=1e-5)
    assert got[0][0] > 1e-4  # a prior prompt's own activation is not its own neighbour


def test_nearest_prior_caps_at_the_pool_per_query():
    pool = torch.randn(3, 4)
    got = nearest_prior(torch.cat([pool[:1], torch.randn(1, 4)]), pool, "cosine", 16, exclude=[0, None])
    assert [len(r) for r in got] == [2, 3]  # the left-out row is missing only where it was left out
    assert nearest_prior(torch.randn(2, 4), pool[:0], "cosine", 16) == [[], []]


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
    assert "refusal_ball_empty" not in wide  # no query there: no rate, rather than a NaN in the report's JSON
    assert s["lookup_refusal_ball_empty"] == 1.0 and s["lookup_refusal_ball_sparse"] == pytest.approx(2 / 4)
    assert s["lookup_refusal_ball_full"] == 0.0


def test_a_prompt_at_exactly_eps_is_outside_for_the_lookup_and_the_strata():
    eps = 0.1
    q = _query([0.1, 0.1], [0.1, 0.1], eps)  # d == ε: refused as a sample, so as a lookup candidate
    s = summarise(_run([q], eps))
    assert s["refusal_rate"] == 1.0 and s["lookup_refusal_rate"] == 1.0 and s["queries_ball_empty"] == 1.0


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
    assert "1 has no training prompt within ε (refused 1.00)" in text and "1 has 4 or more training prompts within ε (refused 0.00)" in text
    assert "Copying each query's 4 nearest" in text
    many = describe_density(summarise(_run(queries + queries, eps)), 4, 4)
    assert "2 have no training prompt within ε" in many and "2 have 4 or more training prompts" in many
    single = describe_density(summarise(_run(queries[1:], eps)), 1, 4)
    assert single.startswith("The prior near this query: 4 or more training prompts within ε (refused 0.00). Copying its 4 nearest")
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
        d = distance(scope.acts(site)[train], scope.acts(site)[i], "cosine")
        assert q.prior_nearest == pytest.approx(torch.sort(d).values[:3].tolist(), abs=1e-5)
    assert "lookup_refusal_rate" in scope.sampler_summary(run)
    own = scope.data.train[5]  # a training prompt as the query: its own row is left out
    inner = scope.sample(site, indices=[own], n=2, eps=eps)
    d = distance(scope.acts(site)[train], scope.acts(site)[own], "cosine")
    d[5] = math.inf
    assert inner.queries[0].prior_nearest == pytest.approx(torch.sort(d).values[:2].tolist(), abs=1e-5)
    free = scope.sample(site, texts=[scope.data.examples[own].text], n=2, eps=eps)
    assert free.queries[0].prior_nearest[0] == pytest.approx(0.0, abs=1e-5)  # a free text equal to a training prompt: it is in the prior
    mixed = run.model_copy(update={"queries": [q.model_copy(update={"prior_nearest": None}) for q in run.queries] + free.queries})
    again = scope.with_prior_nearest(mixed, site)  # samples saved without them: by index from the cache, free text through the target
    for a, b in zip(again.queries, run.queries + free.queries):
        assert a.prior_nearest == pytest.approx(b.prior_nearest, abs=1e-5)
    wrong = run.model_copy(update={"queries": [run.queries[0].model_copy(update={"query": "not this prompt", "prior_nearest": None})]})
    with pytest.raises(AutoscopeError, match="another split or run"):
        scope.with_prior_nearest(wrong, site)


def test_train_check_reads_refusal_beside_the_lookup(tiny_scope):
    from agent.train_check import check_run

    check = check_run(tiny_scope.run_dir, None, None, queries=3, n=4)
    (site,) = check.sites
    assert site.lookup_refusal_rate is not None and 0 <= site.lookup_refusal_rate <= 1
    assert "copying the 4 nearest training prompts" in check.verdict()


def test_train_check_puts_a_refusal_the_lookup_shares_down_to_eps(tiny_scope, monkeypatch):
    """At an ε no training prompt and no sample can reach, the lookup is refused as often as the
    sampler: the verdict says ε is tighter than the prior's spacing, and not that the inverter is weak."""
    from agent.train_check import check_run
    from scope_core.scope import Scope

    real_eps = Scope.eps
    monkeypatch.setattr(Scope, "eps", lambda self, site, *a, **k: real_eps(self, site, eps=1e-9))
    check = check_run(tiny_scope.run_dir, None, None, queries=3, n=4)
    assert check.tight and not check.weak
    assert check.verdict().startswith("ε IS TIGHTER THAN THIS PRIOR'S SPACING") and "WEAK INVERTER" not in check.verdict()
    assert "100% of samples fall outside ε, and so do 100% of the 4 training prompts nearest each query" in check.verdict()
