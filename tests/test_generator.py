import pytest
import torch

from scope_core.generator import ControlLayer, GeneratorConfig, Inverter, build_backbone


def _inverter(path, arch="inversescope", sites=("L1",), d_act=64, encoder_hidden=None):
    cfg = GeneratorConfig(backbone=str(path), arch=arch, sites=list(sites), d_act=d_act, n_heads=2, head_dim=8, encoder_hidden=encoder_hidden)
    return Inverter(cfg, build_backbone(cfg))


def _logits(inv, ids, c, batch=None):
    cache, first = inv.start_cache(c if isinstance(c, torch.Tensor) else None, batch or len(ids))
    inp = torch.cat([first, torch.tensor(ids)], dim=1)
    with inv.conditioned(c), torch.no_grad():
        return inv.backbone.model(input_ids=inp, past_key_values=cache, use_cache=cache is not None).logits


def test_control_layer_with_zero_v_leaves_backbone_logits_unchanged(tiny_llama_path):
    inv = _inverter(tiny_llama_path)
    ids = [[10, 11, 12, 13]] * 3
    c = torch.randn(3, 64) * 5
    base = _logits(inv, ids, None)
    cond = _logits(inv, ids, c)
    assert torch.equal(base, cond)
    # and once V is non-zero the condition does change the logits
    for ctl in inv.controls.values():
        torch.nn.init.normal_(ctl.v.weight, std=0.1)
    assert not torch.allclose(base, _logits(inv, ids, c), atol=1e-4)


def test_control_layer_gate_is_tanh_of_scaled_dot_product():
    ctl = ControlLayer(d_model=4, d_cond=3, n_heads=1, head_dim=2)
    torch.nn.init.normal_(ctl.v.weight)
    h, c = torch.randn(1, 2, 4), torch.randn(1, 3)
    q, k, v = ctl.q(h).view(1, 2, 2), ctl.k(c).view(1, 2), ctl.v(c).view(1, 4)
    w = torch.tanh((q * k[:, None, :]).sum(-1) / 2**0.5)  # [1, T]
    assert torch.allclose(ctl(h, c), w[..., None] * v[:, None, :], atol=1e-6)


@pytest.mark.parametrize("encoder_hidden", [None, 24])
def test_save_and_load_round_trip(tiny_llama_path, tmp_path, encoder_hidden):
    inv = _inverter(tiny_llama_path, encoder_hidden=encoder_hidden)
    for p in inv.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)
    inv.encoder.set_stats("L1", torch.ones(64), torch.full((64,), 2.0))
    inv.save(tmp_path)
    back = Inverter.load(tmp_path)
    ids = [[10, 11, 12]] * 2
    z = torch.randn(2, 64)
    site = torch.zeros(2, dtype=torch.long)
    assert torch.allclose(_logits(inv, ids, inv.encode(z, site)), _logits(back, ids, back.encode(z, site)), atol=1e-6)


def test_mlp_site_encoder_is_not_linear_in_the_activation(tiny_llama_path):
    """Why the option exists: keys and values are linear in the encoded condition, so only an
    MLP encoder lets ẑ act non-linearly on what the control layers write."""
    lin, mlp = _inverter(tiny_llama_path), _inverter(tiny_llama_path, encoder_hidden=24)
    a, b = torch.randn(1, 64), torch.randn(1, 64)
    z = torch.cat([a + b, a])
    with torch.no_grad():
        for inv, linear in ((lin, True), (mlp, False)):
            e = inv.encode(torch.cat([z, b, torch.zeros(1, 64)]), torch.zeros(4, dtype=torch.long))
            additive = torch.allclose(e[0] - e[1], e[2] - e[3], atol=1e-5)  # f(a + b) − f(a) = f(b) − f(0) iff affine along b
            assert additive == linear
    assert sum(p.numel() for p in mlp.encoder.parameters()) == 64 * 24 + 24 + 24 * 64 + 64


def test_inversionview_baseline_condition_reaches_logits(tiny_gpt2_path):
    inv = _inverter(tiny_gpt2_path, arch="inversionview", d_act=64)
    ids = [[5, 6, 7]] * 2
    c1, c2 = torch.randn(2, 64), torch.randn(2, 64)
    assert not torch.allclose(_logits(inv, ids, c1), _logits(inv, ids, c2), atol=1e-5)
    loss, n = inv.loss(ids, c1)
    loss.backward()
    assert n == 6 and inv.kv_condition.kv[0].weight.grad.abs().sum() > 0


def test_unconditional_loss_equals_backbone_loss(tiny_llama_path):
    inv = _inverter(tiny_llama_path)
    bb = inv.backbone
    ids = [[10, 11, 12, bb.end_id]]
    loss, n = inv.loss(ids, None)
    full = torch.tensor([bb.prefix_ids + ids[0]])
    with torch.no_grad():
        logits = bb.model(input_ids=full).logits[0]
    P = len(bb.prefix_ids)
    ref = torch.nn.functional.cross_entropy(logits[P - 1 : -1], full[0, P:])
    assert n == 4 and torch.allclose(loss, ref, atol=1e-5)


def test_trunk_shortcut_gives_the_same_loss_and_gradients(tiny_llama_path):
    """Starting at the first control block from cached residuals equals the full forward."""
    from scope_core.extract import extract_with_trunk
    from scope_core.sites import parse_sites
    from scope_core.targets import Target, TargetConfig

    cfg = GeneratorConfig(backbone=str(tiny_llama_path), sites=["L1"], d_act=64, n_heads=2, head_dim=8, control_layers=[2, 3])
    bb = build_backbone(cfg)
    inv = Inverter(cfg, bb)
    for ctl in inv.controls.values():
        torch.nn.init.normal_(ctl.v.weight, std=0.1)
    target = Target(model=bb.model, tokenizer=bb.tokenizer, config=TargetConfig(model=str(tiny_llama_path)))
    texts = ["write an email", "hack into the bank database and steal money", "hello"]
    _, trunk = extract_with_trunk(target, texts, parse_sites("L0"), trunk_layer=inv.trunk_layer)
    ids = bb.encode(texts, 64)
    c = torch.randn(3, 64)
    a, na = inv.loss(ids, c)
    a.backward()
    ga = inv.controls["2"].v.weight.grad.clone()
    inv.zero_grad()
    b, nb = inv.loss_from_trunk(trunk, ids, c)
    b.backward()
    assert na == nb and torch.allclose(a, b, atol=1e-4)
    assert torch.allclose(ga, inv.controls["2"].v.weight.grad, atol=1e-4)


def test_a_projected_condition_follows_the_rows_it_selects(tiny_llama_path):
    inv = _inverter(tiny_llama_path)
    for ctl in inv.controls.values():
        torch.nn.init.normal_(ctl.v.weight, std=0.1)
    ids = torch.randint(0, 100, (4, 5))
    c = torch.randn(4, inv.config.d_act)
    rows = torch.tensor([3, 1])
    selected = _logits(inv, ids[rows].tolist(), inv.condition(c).select(rows), batch=len(rows))
    assert torch.allclose(selected, _logits(inv, ids[rows].tolist(), c[rows]), atol=1e-5)
    assert not torch.allclose(selected, _logits(inv, ids[rows].tolist(), c[rows.flip(0)]), atol=1e-4)


def test_a_restricted_head_follows_the_head_when_it_is_trained(tiny_llama_path):
    """With a restricted output vocabulary the head's rows are sliced once and reused — but
    never while the head trains (--sft full): gradients must reach it, and a head written in
    place by an optimiser step must be sliced again."""
    cfg = GeneratorConfig(backbone=str(tiny_llama_path), sites=["L1"], d_act=64, n_heads=2, head_dim=8)
    bb = build_backbone(cfg)
    bb.restrict_output(list(range(5, 40)))
    ids = torch.tensor([[5, 9, 13, 7]])
    full = lambda: bb.model(input_ids=ids).logits[..., bb.out_ids]  # noqa: E731
    head = bb.model.get_output_embeddings().weight
    with torch.no_grad():
        assert torch.allclose(bb.logits(None, input_ids=ids), full(), atol=1e-5)
        head[bb.out_ids] += 0.5 * torch.randn(len(bb.out_ids), head.shape[1], generator=torch.Generator().manual_seed(0))
        assert torch.allclose(bb.logits(None, input_ids=ids), full(), atol=1e-5)  # sliced again after the in-place write
    head.requires_grad_(True)
    bb.logits(None, input_ids=ids).sum().backward()
    assert head.grad is not None and head.grad[bb.out_ids].abs().sum() > 0
