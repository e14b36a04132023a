import pytest
import numpy as np
import torch

from scope_core.fcr import chance_levels, empirical_fcr, fcr, gap_ci


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


def _toy(kernel: str, eps: float = 0.3, n_prior: int = 4000, seed: int = 0):
    """A prior of 1-D points with labels; the query sits at 0. P(x; ẑ) ∝ P(x)·k(d) is known in
    closed form over the prior sample: FCR* = Σ k(d_i) 1{y_i = y_q} / Σ k(d_i)."""
    import random

    from scope_core.distances import kernel_weight

    rng = random.Random(seed)
    xs = [rng.uniform(0, 1) for _ in range(n_prior)]
    ys = ["near" if x < 0.2 else "mid" if x < 0.5 else "far" for x in xs]
    k = kernel_weight(torch.tensor(xs), eps, kernel).tolist()
    exact = sum(ki for ki, y in zip(k, ys) if y == "near") / sum(k)
    return xs, ys, k, exact, rng


@pytest.mark.parametrize("kernel", ["gaussian", "hard"])
def test_generator_samples_are_not_weighted_by_the_kernel_again(kernel):
    """Samples drawn from P(x)·k(d), as a trained generator draws them, give the exact FCR
    unweighted; weighting them by k again estimates P(x)·k² and misses (gaussian kernel)."""
    from scope_core.fcr import generator_weights
    from scope_core.sample import Sample

    xs, ys, k, exact, rng = _toy(kernel)
    draws = rng.choices(range(len(xs)), weights=k, k=20000)
    samples = [Sample(text=str(i), distance=xs[i], weight=k[i], accepted=xs[i] < 0.3, is_copy=False) for i in draws]
    labels = [ys[i] for i in draws]
    unweighted = fcr(["near"], [labels], [generator_weights(samples, kernel)], prior_labels=ys)
    assert unweighted.fcr == pytest.approx(exact, abs=0.01)
    double = fcr(["near"], [labels], [[s.weight for s in samples]], prior_labels=ys)
    if kernel == "gaussian":
        assert abs(double.fcr - exact) > 0.05  # k² puts too much mass near the query
    else:
        assert double.fcr == pytest.approx(unweighted.fcr)  # 0/1 weights: the same test


def test_the_empirical_reference_weights_prior_neighbours_by_the_kernel_and_shares_p0():
    xs, ys, k, exact, _ = _toy("gaussian")
    pool = torch.tensor([[1.0, x] for x in xs])
    # euclidean distance from (1, 0) is x: the kernel sees the toy's distances
    res = empirical_fcr(["near"], torch.tensor([[1.0, 0.0]]), pool, ys, 0.3, "euclidean", "gaussian")
    assert res.fcr == pytest.approx(exact, abs=1e-6)
    shared = empirical_fcr(["near"], torch.tensor([[1.0, 0.0]]), pool, ys, 0.3, "euclidean", "gaussian", prior_labels=["near", "far"])
    assert shared.p0 == pytest.approx(0.5) and shared.fcr == res.fcr


def test_kappa_ci_covers_zero_for_content_free_labels_and_resamples_p0():
    import random

    rng = random.Random(0)
    covered = 0
    for trial in range(20):
        q = [rng.randrange(4) for _ in range(30)]
        s = [[rng.randrange(4) for _ in range(8)] for _ in q]
        r = fcr(q, s, [[1] * 8 for _ in q], [rng.randrange(4) for _ in range(48)], seed=trial)
        covered += r.kappa_ci_low <= 0 <= r.kappa_ci_high
    assert covered >= 17  # 95% nominal
    # a small p0 pool widens κ's CI: p0 is an estimate too
    q = [i % 3 for i in range(30)]
    s = [[x] * 5 + [(x + 1) % 3] * 3 for x in q]
    small = fcr(q, s, [[1] * 8] * 30, [i % 3 for i in range(12)])
    large = fcr(q, s, [[1] * 8] * 30, [i % 3 for i in range(1200)])
    assert (small.kappa_ci_high - small.kappa_ci_low) > (large.kappa_ci_high - large.kappa_ci_low)


def test_a_gated_feature_reports_the_conditional_chance_level(tiny_scope):
    """A feature undefined on harmless prompts, scored on harmful queries (--only harmful):
    the marginal p0 counts the harmless majority as never matching; the conditional p0 is
    the chance level among harmful prompts, and is higher."""
    scope = tiny_scope
    harmful = {e.text for e in scope.data.examples if e.labels.get("harmfulness") == "harmful"}

    def gated_first_word(texts):
        return [t.split()[0].lower() if t in harmful and t.split() else None for t in texts]

    where = lambda labels: labels.get("harmfulness") == "harmful"  # noqa: E731
    site = scope.site("L2")
    idx = scope.heldout_indices(where, 6)
    run = scope.sample(site, indices=idx, n=2, eps=scope.eps(site, eps=2.0), seed=0)
    rep = scope.score(gated_first_word, "gated", run, site, empirical=False, where=where)
    n_harmful_train = sum(1 for i in scope.data.train if scope.data.examples[i].labels.get("harmfulness") == "harmful")
    assert rep.n_conditional == n_harmful_train
    assert rep.conditional_p0 > rep.generator.p0
    assert rep.conditional_kappa is not None and rep.conditional_kappa <= rep.generator.kappa
    # harmfulness itself on harmful queries: among harmful prompts every one matches (p0 = 1), and
    # the table says so rather than printing a dash
    from agent.fcr_report import _cell, report_rows

    harmfulness = lambda texts: ["harmful" if t in harmful else "harmless" for t in texts]  # noqa: E731
    rep = scope.score(harmfulness, "harmfulness", run, site, where=where)
    assert rep.conditional_degenerate and rep.conditional_kappa is None and not rep.generator.degenerate
    row = report_rows([rep])[0]
    assert row["conditional_degenerate"] and _cell(row, "conditional p0 / κ [95% CI]") == "1.000 / degenerate"
    # the empirical row is read against the same conditional population
    assert rep.conditional_empirical_degenerate and _cell(row, "conditional empirical κ [95% CI]") == "degenerate"
    assert row["empirical_p0"] is not None and row["empirical_n_queries"] == rep.empirical.n_queries and "n_undefined" in row


def test_a_ci_that_collapses_at_fcr_one_is_widened_to_the_queries_wilson_interval():
    """16 queries that all keep a label the prior gives 92.5% of prompts: FCR 1 on every
    query, so every bootstrap resample is 1. The CI must still say that 16 queries cannot
    tell this from chance (κ's lower bound below 0), not read κ 1.00 [1.00, 1.00]."""
    from agent.hypotheses import Hypothesis, Score, ScoredHypothesis, SearchNull, is_confirmed

    prior = ["none"] * 37 + [f"name{i}" for i in range(3)]  # P(none) = 0.925
    q = ["none"] * 15 + ["name0"]
    res = fcr(q, [[lab] * 8 for lab in q], [[1.0] * 8 for _ in q], prior_labels=prior)
    assert res.fcr == 1.0 and res.kappa == pytest.approx(1.0)
    assert res.ci_low < 0.85 and res.ci_high == 1.0  # Wilson 16/16: about 0.81
    assert res.kappa_ci_low < 0 < res.kappa_ci_high
    score = Score(**res.model_dump(include=set(Score.model_fields)))
    h = ScoredHypothesis(id=0, round=0, site="L2", hypothesis=Hypothesis(name="n", statement="s", kind="python"),
                         status="scored", score=score, confirmation=score)
    assert not is_confirmed(h, SearchNull(max_kappa=0.0))


def test_a_mid_range_ci_is_the_bootstrap_alone():
    import numpy as np

    from scope_core.fcr import bootstrap_ci

    rng = np.random.default_rng(0)
    q = [str(rng.integers(0, 3)) for _ in range(24)]
    samples = [[lab if rng.random() < 0.6 else "other" for _ in range(8)] for lab in q]
    res = fcr(q, samples, [[1.0] * 8 for _ in q], prior_labels=[str(i % 4) for i in range(40)])
    assert 0.05 < res.ci_low and res.ci_high < 0.95
    assert (res.ci_low, res.ci_high) == bootstrap_ci(np.array(res.per_query))


def _dense_weights(zq, pool, eps, metric, kernel, mean, exclude):
    """The empirical reference's weights as they were computed before issue 22: dense [Q, N]."""
    from scope_core.distances import kernel_weight, pairwise_distance

    w = torch.cat([kernel_weight(pairwise_distance(zq[i: i + 256], pool, metric, mean), eps, kernel) for i in range(0, len(zq), 256)])
    for q, idx in enumerate(exclude):
        if idx is not None:
            w[q, idx] = 0.0
    return w


@pytest.mark.parametrize("metric", ["cosine", "centred_cosine", "euclidean", "norm_euclidean"])
@pytest.mark.parametrize("kernel", ["hard", "gaussian"])
def test_sparse_neighbour_lists_equal_the_dense_weights(metric, kernel):
    from scope_core.distances import pairwise_distance
    from scope_core.fcr import neighbour_lists

    g = torch.Generator().manual_seed(0)
    pool = 5.0 + torch.randn(400, 12, generator=g)
    mean = pool.mean(0)
    zq = pool[:300]  # more than one block of 256 queries
    exclude = [i if i % 3 else None for i in range(300)]
    eps = float(pairwise_distance(pool[:100], pool[:100], metric, mean).quantile(0.05))
    dense = _dense_weights(zq, pool, eps, metric, kernel, mean, exclude)
    lists = neighbour_lists(zq, pool, eps, metric, kernel, mean, exclude)
    for q, (idx, w) in enumerate(lists):
        nz = torch.nonzero(dense[q] > 1e-12).squeeze(1)
        assert idx.tolist() == nz.tolist() and w.tolist() == dense[q, nz].tolist()
    small = neighbour_lists(zq, pool, eps, metric, kernel, mean, exclude, budget=4000)  # 10 queries a block
    assert all(len(a[0]) == len(b[0]) or abs(len(a[0]) - len(b[0])) <= 1 for a, b in zip(lists, small))
    labels = [i % 4 for i in range(400)]
    new = empirical_fcr([labels[i] for i in range(300)], zq, pool, labels, eps, metric, kernel, mean, exclude)
    old_lab = [[labels[j] for j in torch.nonzero(dense[q] > 1e-12).squeeze(1).tolist()] for q in range(300)]
    old_w = [dense[q, torch.nonzero(dense[q] > 1e-12).squeeze(1)].tolist() for q in range(300)]
    assert new == fcr([labels[i] for i in range(300)], old_lab, old_w, labels)


def test_kappa_bootstrap_draws_label_counts_for_a_large_pool_same_distribution(monkeypatch):
    import numpy as np

    from scope_core import fcr as fcr_module
    from scope_core.fcr import kappa_bootstrap

    rng = np.random.default_rng(0)
    prior = [None if x == 3 else int(x) for x in rng.integers(0, 4, 3000)]
    queries = [int(x) for x in rng.integers(0, 3, 40)]
    rates = rng.uniform(0.2, 0.9, 40)
    literal = kappa_bootstrap(rates, queries, prior, n_boot=2000, seed=1, interval="expanded")
    # the literal resampling, as it was before the multinomial path existed
    ids: dict = {}
    q_ids = np.array([ids.setdefault(lab, len(ids)) for lab in queries])
    p_ids = np.array([ids.setdefault(lab, len(ids)) if lab is not None else -1 for lab in prior])
    r = np.random.default_rng(2)
    qi = r.integers(0, 40, (2000, 40))
    drawn = p_ids[r.integers(0, len(p_ids), (2000, len(p_ids)))]
    freq = np.stack([(drawn == k).mean(1) for k in range(len(ids))], 1)
    p0 = np.take_along_axis(freq, q_ids[qi], 1).mean(1)
    kappas = (rates[qi].mean(1) - p0) / (1 - p0)
    lo, hi = fcr_module.expanded_tails(40)
    assert literal == (float(np.quantile(kappas, lo)), float(np.quantile(kappas, hi)))
    monkeypatch.setattr(fcr_module, "BOOT_DRAWS_AT_ONCE", 1000)
    counted = kappa_bootstrap(rates, queries, prior, n_boot=2000, seed=1, interval="expanded")
    assert counted != literal and all(abs(a - b) < 0.02 for a, b in zip(counted, literal))


def test_against_chance_reads_one_fcr_against_another_population_as_scoring_again_would():
    from scope_core.fcr import against_chance

    rng = np.random.default_rng(3)
    q = [None] + [int(x) for x in rng.integers(0, 3, 30)]
    s_lab = [[int(x) for x in rng.integers(0, 3, 6)] for _ in q]
    w = [[1.0] * 6 for _ in q]
    w[5] = [0.0] * 6  # a query without accepted samples: not counted, so not in the chance level
    marginal = fcr(q, s_lab, w, [0] * 50 + [1] * 30 + [2] * 20)
    other = [0] * 10 + [1] * 10 + [2] * 80 + [None] * 5
    assert against_chance(marginal, q, other) == fcr(q, s_lab, w, other)
    assert against_chance(marginal, q, []).kappa is None


def test_bca_tails_are_the_percentile_levels_for_a_centred_unaccelerated_bootstrap():
    from scope_core.fcr import bca_tails

    reps = np.random.default_rng(0).normal(0.3, 0.1, 200_001)
    lo, hi = bca_tails(reps, float(np.median(reps)), 0.0)
    assert lo == pytest.approx(0.025, abs=1e-3) and hi == pytest.approx(0.975, abs=1e-3)
    # replicates mostly above the estimate (a biased bootstrap): both levels move down
    lo_b, hi_b = bca_tails(reps, 0.25, 0.0)
    assert lo_b < 0.025 and hi_b < 0.975
    assert bca_tails(reps, 10.0, 0.0) is None  # every replicate on one side: no BCa


def test_jackknife_acceleration_of_a_mean_is_its_closed_form():
    from scope_core.fcr import jackknife_acceleration

    x = np.random.default_rng(1).exponential(1.0, 50)
    n = len(x)
    d = x - x.mean()
    closed = (d ** 3).sum() / (6 * (d ** 2).sum() ** 1.5)
    assert jackknife_acceleration([((x.sum() - x) / (n - 1), np.ones(n), n)]) == pytest.approx(closed)


def test_kappa_acceleration_groups_the_pool_by_label_as_leaving_out_each_prompt_would():
    """The pool's jackknife is computed once per label; it must equal leaving out each prompt."""
    from scope_core.fcr import _kappa_acceleration, jackknife_acceleration

    rng = np.random.default_rng(2)
    prior = [None if x == 3 else int(x) for x in rng.integers(0, 4, 60)]
    queries = [int(x) for x in rng.integers(0, 3, 12)]
    rates = rng.uniform(0.1, 0.9, 12)

    def kappa(r, qs, pool):
        p0 = np.mean([sum(1 for p in pool if p == lab) / len(pool) for lab in qs])
        return (r.mean() - p0) / (1 - p0)

    q_jack = np.array([kappa(np.delete(rates, i), queries[:i] + queries[i + 1:], prior) for i in range(12)])
    p_jack = np.array([kappa(rates, queries, prior[:j] + prior[j + 1:]) for j in range(60)])
    brute = jackknife_acceleration([(q_jack, np.ones(12), 12), (p_jack, np.ones(60), 60)])
    ids: dict = {}
    q_ids = np.array([ids.setdefault(lab, len(ids)) for lab in queries])
    p_ids = np.array([ids.setdefault(lab, len(ids)) if lab is not None else -1 for lab in prior])
    counts = np.bincount(p_ids + 1, minlength=len(ids) + 1)
    assert _kappa_acceleration(rates, q_ids, counts) == pytest.approx(brute, rel=1e-9)
    assert brute != 0


def test_bca_expanded_moves_the_expanded_levels_as_bca_moves_the_plain_ones():
    """`auto` reads BCa from Hesterberg's expanded levels: wider than BCa on few queries, the
    same skew correction, and the same as BCa where the expansion vanishes."""
    from scope_core.fcr import AUTO_INTERVAL, kappa_bootstrap

    assert AUTO_INTERVAL == "bca_expanded"
    rng = np.random.default_rng(4)
    shares = [0.6, 0.2, 0.1, 0.1]
    prior = [int(x) for x in rng.choice(4, 400, p=shares)]
    queries = [int(x) for x in rng.choice(4, 15, p=shares)]
    rates = np.clip(rng.normal(0.85, 0.15, 15), 0, 1)
    auto = kappa_bootstrap(rates, queries, prior, seed=5)
    assert auto == kappa_bootstrap(rates, queries, prior, seed=5, interval="bca_expanded")
    bca = kappa_bootstrap(rates, queries, prior, seed=5, interval="bca")
    expanded = kappa_bootstrap(rates, queries, prior, seed=5, interval="expanded")
    assert auto[0] < bca[0] and auto[1] > bca[1]  # wider than BCa at 15 queries
    assert auto != expanded  # and not the expanded percentile interval: the skew moved it


def test_expanded_tails_widen_small_samples_and_vanish_for_large_ones():
    from scope_core.fcr import expanded_tails

    lo22, hi22 = expanded_tails(22)
    assert 0.014 < lo22 < 0.018 and abs(lo22 + hi22 - 1) < 1e-12  # Φ(−√(22/21)·t₂₁) ≈ 0.0166
    assert expanded_tails(10)[0] < lo22 < expanded_tails(100)[0] < 0.025
    assert abs(expanded_tails(1_000_000)[0] - 0.025) < 1e-4
    assert expanded_tails(1) == pytest.approx((0.025, 0.975))


def test_a_content_free_feature_kappa_ci_covers_0_about_95_percent_with_few_queries():
    """The null check of issue 20 at L24: 22 counted queries with 1–12 accepted samples each
    (the real run's counts). Labels are independent of everything, so κ's CI must cover 0 in
    about 95% of draws; the plain percentile interval missed in 7.3% of 1,000 draws (bench/kappa_ci_coverage.py)."""
    import numpy as np

    counts = [7, 4, 5, 12, 4, 2, 1, 6, 6, 4, 10, 12, 1, 9, 11, 4, 12, 10, 9, 2, 3, 5]
    rng = np.random.default_rng(0)
    trials, miss = 300, 0
    for t in range(trials):
        q = [int(x) for x in rng.integers(0, 4, len(counts))]
        samples = [[int(x) for x in rng.integers(0, 4, c)] for c in counts]
        prior = [int(x) for x in rng.integers(0, 4, 400)]
        res = fcr(q, samples, [[1.0] * c for c in counts], prior, n_boot=1000, seed=t)
        miss += not (res.kappa_ci_low <= 0 <= res.kappa_ci_high)
    assert miss / trials <= 0.075


def test_the_gap_ci_is_paired_over_the_queries_either_row_scored():
    """Generator minus empirical FCR over the same queries: known answers at the extremes, the
    positions each row counted, and pairing that resolves a gap two separate CIs would not."""
    import numpy as np

    ones = fcr(["a"] * 20, [["a"] * 4] * 20, [[1] * 4] * 20, ["a", "b"])
    zeros = fcr(["a"] * 20, [["b"] * 4] * 20, [[1] * 4] * 20, ["a", "b"])
    # every query at 1 (or 0) has no bootstrap spread: each row's CI is widened to Wilson's, and the
    # gap's to the difference of the two, so 1 against 1 is not a gap of exactly 0 [0, 0]
    assert ones.ci_widened and zeros.ci_widened
    lo, hi = gap_ci(ones, ones)
    assert lo == pytest.approx(ones.ci_low - 1.0) and hi == pytest.approx(1.0 - ones.ci_low) and lo < 0 < hi
    lo, hi = gap_ci(ones, zeros)
    assert hi == 1.0 and lo == pytest.approx(ones.ci_low - zeros.ci_high) and lo < 1.0
    one_query = fcr(["a"], [["a", "b"]], [[1, 1]], ["a", "b"])
    assert gap_ci(one_query, one_query) == (None, None)  # one query: nothing to resample
    # a query without accepted samples is not counted, and its position is left out of the pairing
    gappy = fcr(["a", "a", "a"], [["a"], ["b"], ["a"]], [[1], [0], [1]], ["a", "b"])
    assert gappy.counted == [0, 2] and gappy.per_query == [1.0, 1.0]
    # per-query rates that share most of their variation: the generator's sit 0.05 above the ball's
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, 60)
    n = 40

    def row(rates):
        hits = [int(round(r * n)) for r in rates]
        return fcr(["a"] * 60, [["a"] * h + ["b"] * (n - h) for h in hits], [[1] * n] * 60, ["a", "b"])

    gen, emp = row(np.clip(base + 0.05, 0, 1)), row(base)
    lo, hi = gap_ci(gen, emp)
    assert lo > 0 and lo <= gen.fcr - emp.fcr <= hi
    assert gen.ci_low < emp.ci_high  # separately, the two CIs overlap
    assert gap_ci(ones, fcr([None], [["a"]], [[1]], ["a"])) == (None, None)


def test_the_gap_ci_covers_the_true_gap_about_95_percent():
    """Two samplers of the same per-query consistency (true gap 0), 30 queries of 8 samples each:
    the paired interval covers 0 in about 95% of draws."""
    import numpy as np

    rng = np.random.default_rng(1)
    trials, miss = 300, 0
    for t in range(trials):
        p = rng.uniform(0.1, 0.9, 30)
        g = fcr(["a"] * 30, [["a" if u < pi else "b" for u in rng.random(8)] for pi in p], [[1] * 8] * 30, ["a", "b"])
        e = fcr(["a"] * 30, [["a" if u < pi else "b" for u in rng.random(8)] for pi in p], [[1] * 8] * 30, ["a", "b"])
        lo, hi = gap_ci(g, e, n_boot=1000, seed=t)
        miss += not (lo <= 0 <= hi)
    assert 0.01 <= miss / trials <= 0.08


def test_a_scored_run_reports_its_gap_with_the_paired_ci(tiny_scope):
    """`Scope.score` pairs the generator and the empirical reference over the queries both
    counted (at ε 2, all of them) and reports the gap inside its CI."""
    scope = tiny_scope
    site = scope.site("L2")
    idx = scope.heldout_indices(None, 8)
    run = scope.sample(site, indices=idx, n=3, eps=scope.eps(site, eps=2.0), seed=0)
    rep = scope.score(lambda texts: [str(len(t.split()) > 8) for t in texts], "long", run, site)
    assert rep.generator.counted == list(range(len(idx))) == rep.empirical.counted
    lo, hi = rep.gap_ci
    assert lo is not None and lo <= rep.gap <= hi and hi - lo > 0


def test_the_reference_ball_is_the_ball_verification_accepts_for_norm_euclidean():
    """norm_euclidean divides by the centre's norm in the search as in `distance(z, ẑ)`, so the
    empirical reference counts exactly the prompts a sample at their place would be accepted as."""
    from scope_core.distances import distance
    from scope_core.fcr import neighbour_lists

    g = torch.Generator().manual_seed(3)
    pool = torch.randn(300, 8, generator=g) * torch.rand(300, 1, generator=g) * 4  # norms that differ a lot
    zq = torch.randn(20, 8, generator=g)
    eps = 0.9
    for q, (idx, _) in enumerate(neighbour_lists(zq, pool, eps, "norm_euclidean", "hard")):
        accepted = torch.nonzero(distance(pool, zq[q], "norm_euclidean") < eps).squeeze(1).tolist()
        assert idx.tolist() == accepted


def test_no_prior_prompt_means_no_chance_level_and_one_query_is_not_a_point():
    """An empty p0 population gives no p0 and no κ (not p0 = 0, κ = FCR); a single counted
    query's FCR interval is Wilson's over one unit, not [r, r]."""
    res = fcr(["a", "b"], [["a", "b"], ["b", "b"]], [[1, 1], [1, 1]], [])
    assert res.fcr == 0.75 and res.p0 is None and res.kappa is None and not res.degenerate
    one = fcr(["a"], [["a", "b"]], [[1, 1]], ["a", "b", "c"])
    assert one.fcr == 0.5 and one.ci_low < 0.2 and one.ci_high > 0.8 and one.ci_widened
    assert one.kappa_ci_low is not None and one.kappa_ci_low <= one.kappa <= one.kappa_ci_high


def test_a_hash_of_the_prompt_has_a_kappa_ci_covering_0_and_a_constant_feature_is_degenerate(tiny_scope):
    """The issue's content-free feature through the whole scoring path: each salt hashes the
    prompt into 4 buckets, so the samples' buckets are independent of the query's. κ's CI must
    cover 0 for nearly every salt (5% may miss by design), for the generator and the empirical
    row alike; a feature constant on the prior is degenerate, never κ = 1."""
    import hashlib

    scope = tiny_scope
    site = scope.site("L2")
    run = scope.sample(site, indices=scope.heldout_indices(None, 12), n=4, eps=scope.eps(site, eps=2.0), seed=1)

    def hashed(salt: int):
        return lambda texts: [str(hashlib.sha256(f"{salt}:{t}".encode()).digest()[0] % 4) for t in texts]

    covers = {"generator": 0, "empirical": 0}
    for salt in range(20):
        rep = scope.score(hashed(salt), f"hash4_{salt}", run, site, seed=salt)
        for row, res in (("generator", rep.generator), ("empirical", rep.empirical)):
            if res.kappa_ci_low is not None:
                covers[row] += res.kappa_ci_low <= 0 <= res.kappa_ci_high
    assert covers["generator"] >= 17 and covers["empirical"] >= 17, covers
    const = scope.score(lambda texts: ["x"] * len(texts), "constant", run, site)
    assert const.generator.degenerate and const.generator.kappa is None and const.empirical.degenerate


def test_against_chance_refuses_a_result_saved_without_its_per_query_rates():
    from scope_core.errors import AutoscopeError
    from scope_core.fcr import FCRResult, against_chance

    old = FCRResult(fcr=0.5, ci_low=0.3, ci_high=0.7, p0=0.25, kappa=0.33, degenerate=False, n_queries=10, n_undefined=0, n_no_weight=0)
    with pytest.raises(AutoscopeError, match="score the run again"):
        against_chance(old, ["a"] * 10, ["a", "b"])


def test_two_queries_read_without_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = fcr(["a", "b"], [["a", "b"], ["b", "b"]], [[1.0, 1.0], [1.0, 1.0]], ["a", "b", "b", "c"])
    assert res.ci_low <= res.fcr <= res.ci_high and res.kappa_ci_low <= res.kappa <= res.kappa_ci_high
