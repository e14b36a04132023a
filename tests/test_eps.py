import pytest

from scope_core.eps import choose_eps
from scope_core.errors import AutoscopeError

STATS = {"cosine": {"pairwise": {"0.01": 0.05, "0.02": 0.08, "0.05": 0.12, "0.5": 0.3}}}


def test_quantile_reads_the_table_and_interpolates():
    assert choose_eps(STATS, "L18", "cosine", quantile=0.02).eps == pytest.approx(0.08)
    mid = choose_eps(STATS, "L18", "cosine", quantile=0.03).eps
    assert 0.08 < mid < 0.12


def test_absolute_eps_reports_its_quantile():
    e = choose_eps(STATS, "L18", "cosine", eps=0.1)
    assert e.source == "absolute" and e.eps == 0.1
    assert 0.02 < e.quantile < 0.05
    assert "ε=0.1" in e.describe()


def test_bad_eps_is_refused():
    with pytest.raises(AutoscopeError, match="positive"):
        choose_eps(STATS, "L18", "cosine", eps=-1)
    with pytest.raises(AutoscopeError, match="quantile"):
        choose_eps(STATS, "L18", "cosine", quantile=1.5)
    with pytest.raises(AutoscopeError, match="metric"):
        choose_eps(STATS, "L18", "euclidean", quantile=0.1)
