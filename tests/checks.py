"""Assertions several test modules share."""

import pytest

from scope_core.fused_verify import fused_ineligible


def assert_fused_matches_full(scope, site_name: str, queries: int, n: int, seed: int, eps: float = 0.5):
    """Fused verification must be eligible, used, and give a full re-run's samples and
    distances; returns both runs for further checks."""
    site = scope.site(site_name)
    assert fused_ineligible(scope.inverter, scope.target, site, conditional=True) is None
    idx = scope.heldout_indices(limit=queries)
    e = scope.eps(site, eps=eps)
    fused = scope.sample(site, indices=idx, n=n, eps=e, seed=seed, verify_mode="auto")
    full = scope.sample(site, indices=idx, n=n, eps=e, seed=seed, verify_mode="full")
    assert fused.timing["fused_verified"] > 0 and full.timing["fused_verified"] == 0
    for qa, qb in zip(fused.queries, full.queries):
        assert [s.text for s in qa.samples] == [s.text for s in qb.samples]
        for a, b in zip(qa.samples, qb.samples):
            assert a.distance == pytest.approx(b.distance, abs=1e-4)
    return fused, full
