"""oneDNN-prepacked linears (scope_core.fast_linear): same results to float rounding,
nothing left patched, training untouched, a changed weight repacked."""

import pytest
import torch
from torch import nn

from scope_core.fast_linear import prepack_available, prepacked_linears

pytestmark = pytest.mark.skipif(not prepack_available(), reason="oneDNN not available in this torch build")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(24, 40), nn.GELU(), nn.Linear(40, 8, bias=False))


def test_prepacked_forward_matches_the_plain_one_and_unpatches():
    m = _model()
    x = torch.randn(3, 5, 24)
    with torch.no_grad():
        ref = m(x)
        with prepacked_linears(m):
            assert "forward" in vars(m[0])  # patched on the instance
            with prepacked_linears(m):  # re-entrant: the inner exit leaves the outer patch
                pass
            assert "forward" in vars(m[0])
            out = m(x)
    assert "forward" not in vars(m[0]) and "forward" not in vars(m[2])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_gradients_and_weight_updates_are_respected():
    m = _model()
    x = torch.randn(4, 24)
    with prepacked_linears(m):
        m(x).sum().backward()  # grad enabled: the plain layer, so backward works
        assert m[0].weight.grad is not None
        with torch.no_grad():
            before = m(x)
            m[2].weight.mul_(2.0)  # in place: a new version of the weight must be packed again
            after = m(x)
    torch.testing.assert_close(after, 2 * before, rtol=1e-5, atol=1e-5)


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("AUTOSCOPE_PREPACK", "0")
    m = _model()
    with prepacked_linears(m):
        assert "forward" not in vars(m[0])


def test_layers_beyond_the_memory_budget_run_plain(monkeypatch):
    from scope_core.fast_linear import _packed

    m = _model()
    held = sum(p.numel() * p.element_size() for _, _, p in _packed.values())  # other tests' layers still alive
    monkeypatch.setenv("AUTOSCOPE_PREPACK_BYTES", str(held + m[0].weight.numel() * 4))  # room for the first layer only
    x = torch.randn(2, 24)
    with torch.no_grad():
        ref = m(x)
        with prepacked_linears(m):
            out = m(x)
    assert m[0] in _packed and m[2] not in _packed
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
