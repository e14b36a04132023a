"""Sampling and verification on a tiny trained run, through the public Scope API."""

import math

import numpy as np
import pytest
import torch

from features.registry import get_feature
from scope_core.extract import extract
from scope_core.sample import generate, summarise
from scope_core.errors import AutoscopeError


@pytest.fixture()
def scope(tiny_scope):
    return tiny_scope


def test_generate_gives_n_samples_per_query_and_respects_max_tokens(scope):
    inv = scope.inverter
    z = scope.acts(scope.site("L2"))[:3]
    out = generate(inv, "L2", z, 3, n=5, max_new_tokens=4, batch_size=4, seed=0)
    assert [len(x) for x in out] == [5, 5, 5]
    for ss in out:
        for t in ss:
            assert len(inv.backbone.tokenizer(t, add_special_tokens=False).input_ids) <= 4
    again = generate(inv, "L2", z, 3, n=5, max_new_tokens=4, batch_size=4, seed=0)
    assert out == again  # seeded


def test_finished_rows_leave_the_batch_without_changing_results(scope):
    """Dropping finished rows from the KV cache must not change what live rows produce:
    batch size 1 (no dropping) and a large batch give the same greedy samples."""
    inv = scope.inverter
    z = scope.acts(scope.site("L2"))[:4]
    a = generate(inv, "L2", z, 4, n=1, temperature=0, max_new_tokens=12, batch_size=1)
    b = generate(inv, "L2", z, 4, n=1, temperature=0, max_new_tokens=12, batch_size=4)
    assert a == b


def test_samples_are_verified_against_the_target(scope):
    site = scope.site("L2")
    idx = scope.heldout_indices(limit=3)
    eps = scope.eps(site, eps=0.5)
    run = scope.sample(site, indices=idx, n=4, eps=eps, kernel="hard")
    assert run.eps.eps == 0.5 and len(run.queries) == 3
    zq = scope.acts(site)[torch.tensor(idx)]
    for q, z in zip(run.queries, zq):
        texts = [s.text for s in q.samples if s.text.strip()]
        if not texts:
            continue
        acts = extract(scope.target, texts, [site])[site]
        d = 1 - torch.nn.functional.cosine_similarity(acts, z[None], dim=-1)
        got = [s.distance for s in q.samples if s.text.strip()]
        assert got == pytest.approx(d.tolist(), abs=1e-5)
        for s in q.samples:
            assert s.accepted == (s.distance < 0.5)
            assert s.is_copy == (s.text in scope.train_texts)
    summ = summarise(run)
    assert 0 <= summ["refusal_rate"] <= 1 and summ["distinct_per_query"] >= 1


def test_free_text_queries_and_fcr_report(scope):
    site = scope.site("L2")
    run = scope.sample(site, texts=["write an email", "hack into the bank database"], n=3, eps=scope.eps(site, eps=2.0))
    assert all(q.index is None for q in run.queries)
    assert all(s.accepted for q in run.queries for s in q.samples if math.isfinite(s.distance))
    feat = get_feature("first_word")
    rep = scope.score(feat, feat.name, run, site, empirical=True)
    assert rep.empirical is None  # free-text queries have no cached neighbours
    idx = scope.heldout_indices(limit=4)
    run2 = scope.sample(site, indices=idx, n=3, eps=scope.eps(site, eps=2.0))
    rep2 = scope.score(feat, feat.name, run2, site)
    assert rep2.generator.n_queries == 4 and rep2.empirical is not None and rep2.empirical.fcr is not None


def test_score_with_a_pool_limit_labels_only_that_many_prior_prompts(scope):
    from features.base import Feature

    site = scope.site("L2")
    idx = scope.heldout_indices(limit=3)
    run = scope.sample(site, indices=idx, n=2, eps=scope.eps(site, eps=2.0))
    seen: list[str] = []

    def counting(texts: list[str]) -> list[str | None]:
        seen.extend(texts)
        return [t.split()[0].lower() if t.split() else None for t in texts]

    rep = scope.score(Feature("first", "first word", counting), "first", run, site, pool_limit=40)
    extra = {q.query for q in run.queries} | {s.text for q in run.queries for s in q.samples}
    assert len(seen) <= 40 + len(extra) and len(seen) >= 40
    assert rep.generator.p0 is not None and rep.empirical is not None and rep.empirical.n_queries == 3


def test_samples_are_capped_just_past_the_longest_training_prompt(scope):
    """The prior has no mass beyond its longest prompt; a sample may run a few tokens past it, no more."""
    longest = max(scope.target.text_token_counts(sorted(scope.train_texts)))
    assert scope.sample_token_cap == longest + 1 + scope.SAMPLE_TOKEN_MARGIN
    site = scope.site("L2")
    run = scope.sample(site, indices=scope.heldout_indices(limit=3), n=4, eps=scope.eps(site, eps=0.5))
    tok = scope.inverter.backbone.tokenizer
    for q in run.queries:
        for s in q.samples:
            assert len(tok(s.text, add_special_tokens=False).input_ids) <= scope.sample_token_cap


def test_draw_follows_the_row_probabilities_and_never_picks_an_impossible_token():
    from scope_core.decoding import draw

    probs = torch.tensor([[0.0, 0.2, 0.8, 0.0], [0.5, 0.0, 0.0, 0.5]]).repeat(20000, 1)
    g = torch.Generator().manual_seed(0)
    idx = draw(probs, g)
    first, second = idx[0::2], idx[1::2]
    assert set(first.tolist()) <= {1, 2} and set(second.tolist()) <= {0, 3}
    assert abs((first == 2).float().mean().item() - 0.8) < 0.01
    assert abs((second == 3).float().mean().item() - 0.5) < 0.01


def test_ball_anchors_are_the_query_and_its_prior_neighbours(scope):
    """At an ε no prior prompt reaches every anchor is ẑ; at ε 2 (every prompt) anchors are ẑ or
    training prompts' activations — never another held-out prompt's (those may be confirmation
    queries) — seeded."""
    site = scope.site("L2")
    idx = scope.heldout_indices(limit=3)
    acts = scope.acts(site)
    zq = acts[torch.tensor(idx)]
    none = scope.ball_anchors(site, zq, idx, scope.eps(site, eps=1e-9), n=6)
    assert none.shape == (3, 6, zq.shape[1]) and torch.equal(none, zq[:, None].expand(-1, 6, -1))
    wide = scope.ball_anchors(site, zq, idx, scope.eps(site, eps=2.0), n=64, seed=3)
    assert torch.equal(wide, scope.ball_anchors(site, zq, idx, scope.eps(site, eps=2.0), n=64, seed=3))
    train = acts[torch.tensor(scope.data.train)]
    held = acts[torch.tensor(scope.data.heldout)]
    held = held[~(held[:, None] == train[None]).all(-1).any(-1)]  # held-out activations no training prompt shares
    assert len(held) > 0
    for q, i in enumerate(idx):
        others = train
        picked_prior = 0
        for a in wide[q]:
            is_query = torch.equal(a, zq[q])
            in_pool = bool((others == a).all(-1).any())
            assert is_query or in_pool
            picked_prior += in_pool and not is_query
            assert is_query or not bool((held == a).all(-1).any())
        assert picked_prior > 48  # ẑ is one of ~230 candidates


def test_ball_anchored_samples_are_verified_against_the_query_not_the_anchor(scope):
    site = scope.site("L2")
    idx = scope.heldout_indices(limit=2)
    eps = scope.eps(site, eps=2.0)
    run = scope.sample(site, indices=idx, n=4, eps=eps, anchors="ball", seed=1)
    assert run.anchors == "ball" and run.anchor_eps == 2.0 and [len(q.samples) for q in run.queries] == [4, 4]
    zq = scope.acts(site)[torch.tensor(idx)]
    for q, z in zip(run.queries, zq):
        texts = [s.text for s in q.samples if s.text.strip()]
        if texts:
            d = 1 - torch.nn.functional.cosine_similarity(extract(scope.target, texts, [site])[site], z[None], dim=-1)
            assert [s.distance for s in q.samples if s.text.strip()] == pytest.approx(d.tolist(), abs=1e-5)
    plain = scope.sample(site, indices=idx, n=4, eps=eps, seed=1)
    assert plain.anchors == "query" and plain.anchor_eps is None
    # at an ε no prior prompt reaches, ball anchoring is the plain sampler, sample for sample
    tight = scope.eps(site, eps=1e-9)
    assert ([s.text for q in scope.sample(site, indices=idx, n=4, eps=tight, anchors="ball", seed=1).queries for s in q.samples]
            == [s.text for q in scope.sample(site, indices=idx, n=4, eps=tight, seed=1).queries for s in q.samples])


def test_auto_anchors_follow_how_the_generator_was_trained(scope, monkeypatch):
    """`auto` draws a share 1 − m of anchors from the ball, m the share of ball neighbours the
    site's generator was trained on: all of them after noise alone (mix 0), 0.3 after the
    default 0.7, none where the run never recorded its mix; the mix is read from the run's
    training summary."""
    import json

    site = scope.site("L2")
    summary = json.loads((scope.run_dir / "inverter" / "train_summary.json").read_text())
    assert scope.neighbour_mix(site) == summary["neighbour_mix_per_site"]["L2"]
    for mix, share, want in ((0.0, 1.0, "ball"), (0.7, 0.3, "ball"), (1.0, 0.0, "query"), (None, 0.0, "query")):
        monkeypatch.setattr(scope, "neighbour_mix", lambda s, m=mix: m)
        assert scope.ball_share(site, "auto") == pytest.approx(share)
        assert scope.anchors_for(site, "auto") == want
        assert scope.anchors_for(site, "query") == "query" and scope.anchors_for(site, "ball") == "ball"
        assert scope.ball_share(site, "query") == 0.0 and scope.ball_share(site, "ball") == 1.0
    monkeypatch.setattr(scope, "neighbour_mix", lambda s: 0.7)
    run = scope.sample(site, indices=scope.heldout_indices(limit=1), n=2, eps=scope.eps(site, eps=2.0), anchors="auto")
    assert run.anchors == "ball" and run.anchor_share == pytest.approx(0.3)
    assert scope.sample(site, indices=scope.heldout_indices(limit=1), n=2, eps=scope.eps(site, eps=2.0)).anchor_share is None


def test_a_share_of_ball_anchors_keeps_the_rest_on_the_query(scope):
    """With share β each anchor is a ball draw with probability β and ẑ otherwise, so ẑ is
    drawn 1 − β + β/(members + 1) of the time; share 1 draws exactly what the ball sampler
    always drew, share 0 is the query everywhere."""
    site = scope.site("L2")
    idx = scope.heldout_indices(limit=1)
    zq = scope.acts(site)[torch.tensor(idx)]
    eps = scope.eps(site, eps=2.0)  # every training prompt is in the ball
    members = len(scope.data.train) - sum(i in set(scope.data.train) for i in idx)
    n = 4000
    for share in (0.3, 0.7):
        drawn = scope.ball_anchors(site, zq, idx, eps, n=n, seed=0, share=share)[0]
        on_query = float((drawn == zq[0]).all(-1).float().mean())
        want = 1 - share + share / (members + 1)
        assert abs(on_query - want) < 4 * (want * (1 - want) / n) ** 0.5
    # share 1 draws what the ball sampler drew before shares existed: one integer draw per sample
    pool = scope.acts(site)[torch.tensor(scope.data.train)]
    pick = np.random.default_rng(2 + 7).integers(-1, members, 64)
    old = torch.stack([zq[0] if k < 0 else pool[k] for k in pick])
    assert torch.equal(scope.ball_anchors(site, zq, idx, eps, n=64, seed=2, share=1.0)[0], old)
    assert torch.equal(scope.ball_anchors(site, zq, idx, eps, n=8, seed=2, share=0.0), zq[:, None].expand(-1, 8, -1))


def test_gaussian_ball_anchors_are_drawn_by_kernel_weight(scope):
    """Under the gaussian kernel an anchor at distance d is drawn ∝ exp(−d²/2ε²) and ẑ ∝ 1, the
    empirical reference's own weights; an unknown anchoring is refused, not read as the query."""
    from scope_core.distances import distance, kernel_weight

    site = scope.site("L2")
    idx = scope.heldout_indices(limit=1)
    acts = scope.acts(site)
    zq = acts[torch.tensor(idx)]
    train = acts[torch.tensor(scope.data.train)]
    eps = scope.eps(site)
    w = kernel_weight(distance(train, zq[0], eps.metric, scope.mean(site)), eps.eps, "gaussian").double()
    drawn = scope.ball_anchors(site, zq, idx, eps, n=4000, seed=0, kernel="gaussian")[0]
    is_query = (drawn == zq[0]).all(-1)
    share = 1.0 / (1.0 + float(w[w > 1e-12].sum()))  # ẑ's probability
    assert abs(float(is_query.float().mean()) - share) < 4 * (share * (1 - share) / 4000) ** 0.5 + 1e-3
    # the drawn prompts' mean weight follows the weights: heavier prompts are drawn more often
    hits = (drawn[~is_query][:, None] == train[None]).all(-1).float().argmax(1)
    by_weight, uniform = float((w * w).sum() / w.sum()), float(w.mean())  # E[w] of a draw ∝ w, and of a uniform draw
    assert abs(float(w[hits].mean()) - by_weight) < 0.1 * by_weight and uniform < 0.5 * by_weight
    with pytest.raises(AutoscopeError, match="auto, query or ball"):
        scope.anchors_for(site, "Ball")  # type: ignore[arg-type]


def test_the_neighbour_mix_of_a_run_saved_before_the_per_site_record(scope, tmp_path):
    """A summary with one mix and no per-site entry gives that mix to every site (the auto
    rule reads it), not the config's unset default."""
    import json
    import shutil

    from scope_core.scope import Scope

    old = tmp_path / "old_run"
    shutil.copytree(scope.run_dir, old)
    path = old / "inverter" / "train_summary.json"
    summary = json.loads(path.read_text())
    summary.pop("neighbour_mix_per_site", None)
    summary["neighbour_mix"] = 0.0
    path.write_text(json.dumps(summary))
    reopened = Scope(old, target=scope.target)
    site = reopened.site("L2")
    assert reopened.neighbour_mix(site) == 0.0 and reopened.anchors_for(site, "auto") == "ball"


def test_a_run_samples_at_the_temperature_training_chose_for_the_site(scope, tmp_path):
    """`sample` without a temperature decodes at the run's own for the site (recorded in the
    training summary), the unconditional reference at 1, and an explicit temperature wins; a run
    saved before the record samples at 1, as it was measured."""
    import json
    import shutil

    from scope_core.scope import Scope
    from scope_core.train import sampling_temperature

    summary = json.loads((scope.run_dir / "inverter" / "train_summary.json").read_text())
    want = sampling_temperature(summary["neighbour_mix_per_site"]["L2"], summary["density_ratio_per_site"].get("L2"))
    assert summary["sampling_temperature_per_site"] == {"L2": want}

    run = tmp_path / "run"
    shutil.copytree(scope.run_dir, run)
    path = run / "inverter" / "train_summary.json"
    path.write_text(json.dumps(summary | {"sampling_temperature_per_site": {"L2": 0.5}}))
    chosen = Scope(run, target=scope.target)
    site = chosen.site("L2")
    idx, eps = chosen.heldout_indices(limit=2), chosen.eps(site, eps=2.0)
    default = chosen.sample(site, indices=idx, n=4, eps=eps, seed=3)
    told = chosen.sample(site, indices=idx, n=4, eps=eps, seed=3, temperature=0.5)
    assert default.temperature == 0.5
    assert [s.text for q in default.queries for s in q.samples] == [s.text for q in told.queries for s in q.samples]
    assert chosen.sample(site, indices=idx, n=2, eps=eps, temperature=1.0).temperature == 1.0
    assert chosen.sample(site, indices=idx, n=2, eps=eps, conditional=False).temperature == 1.0
    summary.pop("sampling_temperature_per_site")
    path.write_text(json.dumps(summary))
    assert Scope(run, target=scope.target).sampling_temperature(site) == 1.0
