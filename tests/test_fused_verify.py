"""Fused verification (site read from the decoder's own KV cache) must equal re-running the target."""

import pytest

from checks import assert_fused_matches_full
from scope_core.fused_verify import fused_ineligible


@pytest.fixture(scope="module")
def high_control_scope(tiny_llama_path, tmp_path_factory):
    """A tiny run whose only control layer (block 3) sits above the site L2: fused-eligible."""
    from scope_core.api import Scope
    from scope_core.data import PriorConfig
    from scope_core.targets import TargetConfig
    from scope_core.train import TrainConfig, train

    runs = tmp_path_factory.mktemp("runs_fused")
    cfg = TrainConfig(run="f", runs_dir=str(runs), target=TargetConfig(model=str(tiny_llama_path)),
                      prior=PriorConfig(task="refusal", n=300, heldout=40), sites="L2", backbone=str(tiny_llama_path),
                      control_layers=[3], minutes=1.0, max_steps=300, eval_every=10, eval_size=20, batch_size=16)  # steps, not seconds:
    # the samples' lengths (and so how many rows end early) must not depend on how loaded the host is
    train(cfg, progress=False)
    return Scope(runs / "f")


def test_fused_distances_equal_a_full_rerun_of_the_target(high_control_scope):
    fused, full = assert_fused_matches_full(high_control_scope, "L2", queries=4, n=6, seed=3)
    for qa, qb in zip(fused.queries, full.queries):
        for a, b in zip(qa.samples, qb.samples):
            assert a.accepted == b.accepted or abs(b.distance - 0.5) < 1e-4


def test_fused_path_refused_where_it_would_not_be_exact(tiny_scope):
    site = tiny_scope.site("L2")
    # controls on every block of the 4-layer model, so below the site: the condition changes blocks 0..2
    why = fused_ineligible(tiny_scope.inverter, tiny_scope.target, site, conditional=True)
    assert why is not None and "control layer" in why
    # unconditional sampling leaves every block as the target's: exact again
    assert fused_ineligible(tiny_scope.inverter, tiny_scope.target, site, conditional=False) is None
    assert tiny_scope.target.tail_ids()[0] == tiny_scope.inverter.backbone.end_id


def test_a_sample_whose_text_retokenises_differently_is_verified_the_slow_way(tiny_scope):
    """The target sees the decoded *string*: sampled ids that are not its canonical
    tokenisation must not be scored from the decoder's cache."""
    import torch

    from scope_core.fused_verify import FusedVerifier

    target, site = tiny_scope.target, tiny_scope.site("L2")
    fv = FusedVerifier(target, site)
    text = "write a poem about the sea"
    canonical = target.tokenizer(text, add_special_tokens=False).input_ids
    fv.acts = {0: torch.zeros(4), 1: torch.ones(4)}
    fv.ids = {0: canonical, 1: canonical[:-1] + [canonical[-1], canonical[0]]}
    got = fv.usable([(0, text), (1, text), (2, text)])
    assert set(got) == {0}


def test_fused_verification_under_continuous_batching(high_control_scope):
    """Rows join mid-run (a decoding batch smaller than the job) and the verifier flushes
    mid-run: samples and distances must be those of a full re-run, and the flushes must
    not disturb decoding."""
    from scope_core.fused_verify import FusedVerifier
    from scope_core.sample import generate

    scope = high_control_scope
    site = scope.site("L2")
    idx = scope.heldout_indices(limit=6)
    z = scope.query_activations(site, indices=idx)
    n = 10  # 60 rows through a batch of 7: enough samples end within the budget and retokenise canonically to be fused
    plain = generate(scope.inverter, "L2", z, 6, n, batch_size=7, seed=4, max_new_tokens=20)
    fused = FusedVerifier(scope.target, site, flush_rows=3)
    with_fused = generate(scope.inverter, "L2", z, 6, n, batch_size=7, seed=4, max_new_tokens=20, fused=fused)
    assert with_fused == plain
    usable = fused.usable([(q * n + k, t) for q, ss in enumerate(with_fused) for k, t in enumerate(ss)])
    assert len(usable) >= 3 and max(usable) >= 7  # some of them joined the batch after it started
    from scope_core.extract import extract

    texts = {r: with_fused[r // n][r % n] for r in usable}
    ref = extract(scope.target, list(texts.values()), [site])[site]
    for (r, act), want in zip(usable.items(), ref):
        assert act == pytest.approx(want, abs=1e-4)


def test_with_the_speed_ups_off_every_sample_is_rerun_through_the_target(high_control_scope, monkeypatch):
    """`AUTOSCOPE_SPEEDUPS=0`: no fused verification; greedy samples (which no speed-up may
    change) and their distances are those of the sampler with its speed-ups."""
    scope = high_control_scope
    site = scope.site("L2")
    idx = scope.heldout_indices(limit=4)
    e = scope.eps(site, eps=0.5)
    assert scope.sample(site, indices=idx, n=6, eps=e, seed=3).timing["fused_verified"] > 0
    fast = scope.sample(site, indices=idx, n=2, eps=e, temperature=0.0)
    monkeypatch.setenv("AUTOSCOPE_SPEEDUPS", "0")
    assert scope.sample(site, indices=idx, n=6, eps=e, seed=3).timing["fused_verified"] == 0
    plain = scope.sample(site, indices=idx, n=2, eps=e, temperature=0.0)
    for qa, qb in zip(fast.queries, plain.queries):
        assert [s.text for s in qa.samples] == [s.text for s in qb.samples]
        for a, b in zip(qa.samples, qb.samples):
            assert a.distance == pytest.approx(b.distance, abs=1e-4)
