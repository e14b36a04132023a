import pytest

from scope_core.errors import AutoscopeError
from scope_core.sites import Site, parse_site, parse_sites


def test_parse_each_kind():
    assert parse_site("L18") == Site(18, "attn")
    assert parse_site("l9h3") == Site(9, "head", 3)
    assert parse_site("R0") == Site(0, "resid")
    assert parse_site(" M29 ") == Site(29, "mlp")
    assert parse_site("L9H3").name == "L9H3"


def test_ranges_and_lists_keep_order_and_drop_duplicates():
    assert [s.name for s in parse_sites("L0-L3")] == ["L0", "L1", "L2", "L3"]
    assert [s.name for s in parse_sites("R18,L6,R18,M2")] == ["R18", "L6", "M2"]
    assert [s.name for s in parse_sites("L9H0-L9H2")] == ["L9H0", "L9H1", "L9H2"]


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("X3", "unknown site"),
        ("L", "unknown site"),
        ("R3H1", "only attention sites take a head"),
        ("L30", "layers 0-29"),
        ("L2H9", "heads 0-8"),
        ("L5-L2", "must not exceed"),
        ("L1-R3", "same kind"),
        ("L1H0-L2H3", "stays in one layer"),
        ("", "no sites"),
    ],
)
def test_errors_say_what_is_wrong(spec, fragment):
    with pytest.raises(AutoscopeError, match=fragment):
        parse_sites(spec, n_layers=30, n_heads=9)
