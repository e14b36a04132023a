"""Classifier-free guidance at sampling time (`scope_core.decoding.guided`): the decoder's
cached, batched rows must draw exactly what a from-scratch reference computes step by step."""

from types import SimpleNamespace

import pytest
import torch

from scope_core.decoding import check_guidance, guided
from scope_core.errors import AutoscopeError
from scope_core.generator import GeneratorConfig, Inverter, build_backbone


def _inverter(path, **config) -> Inverter:
    torch.manual_seed(0)
    cfg = GeneratorConfig(backbone=str(path), sites=["L1"], d_act=64, n_heads=2, head_dim=8, **config)
    inv = Inverter(cfg, build_backbone(cfg))
    for ctl in inv.controls.values():
        torch.nn.init.normal_(ctl.v.weight, std=2.0)  # a condition that visibly moves the logits
    inv.backbone.restrict_output(list(range(5, 12)))  # few tokens, so rows end at different steps
    return inv


@torch.no_grad()
def _reference(inv: Inverter, z_row: torch.Tensor, w: float, steps: int) -> str:
    """Greedy guided decoding of one row, recomputing the whole sequence at every step."""
    bb = inv.backbone
    c = inv.encode(z_row[None], torch.zeros(1, dtype=torch.long))
    seq, out = list(bb.prefix_ids[-1:]), []
    for _ in range(steps):
        inp = bb.to_internal(torch.tensor([seq]))
        with inv.conditioned(c):
            lc = bb.logits(bb.prefix_cache(1), input_ids=inp)[:, -1].float()
        with inv.conditioned(None):
            lu = bb.logits(bb.prefix_cache(1), input_ids=inp)[:, -1].float()
        nxt = int(bb.out_to_external(guided(lc, lu, w).argmax(-1))[0])
        out.append(nxt)
        seq.append(nxt)
        if nxt == bb.end_id:
            break
    return bb.decode(out)


def test_guided_logits_are_the_sharpened_likelihood_ratio():
    g = torch.Generator().manual_seed(0)
    lc, lu = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    assert torch.allclose(guided(lc, lu, 1.0), torch.log_softmax(lc, -1))
    p = torch.softmax(guided(lc, lu, 2.5), -1)
    want = torch.softmax(lc, -1) ** 2.5 / torch.softmax(lu, -1) ** 1.5
    assert torch.allclose(p, want / want.sum(-1, keepdim=True), atol=1e-6)


def test_guided_decoding_draws_what_the_step_by_step_reference_draws(tiny_llama_path):
    from scope_core.sample import generate

    inv = _inverter(tiny_llama_path)
    z = torch.randn(5, 64, generator=torch.Generator().manual_seed(1))
    guided_rows = generate(inv, "L1", z, 5, 1, temperature=0.0, max_new_tokens=9, batch_size=3, guidance=3.0)
    assert [q[0] for q in guided_rows] == [_reference(inv, z[i], 3.0, 9) for i in range(5)]
    plain = generate(inv, "L1", z, 5, 1, temperature=0.0, max_new_tokens=9, batch_size=3)
    assert plain != guided_rows  # the guidance changed what was drawn
    assert plain == generate(inv, "L1", z, 5, 1, temperature=0.0, max_new_tokens=9, batch_size=3, guidance=1.0)


def test_guidance_is_refused_where_there_is_no_trained_unconditioned_pass(tiny_llama_path):
    with pytest.raises(AutoscopeError, match="> 0"):
        check_guidance(_inverter(tiny_llama_path), 0.0)
    with pytest.raises(AutoscopeError, match="InversionView"):
        check_guidance(_inverter(tiny_llama_path, arch="inversionview"), 2.0)
    shallow = SimpleNamespace(kv_condition=None, config=SimpleNamespace(upper_blocks=4))  # only its config is read
    with pytest.raises(AutoscopeError, match="last 4 blocks"):
        check_guidance(shallow, 2.0)  # type: ignore[arg-type]


def test_sample_refuses_a_bad_guidance_before_the_target_loads():
    from agent.sample_report import SampleJobConfig, check_choices

    with pytest.raises(AutoscopeError, match="--guidance must be > 0"):
        check_choices(SampleJobConfig(site="L18", guidance=0.0))
