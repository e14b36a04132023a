"""The preallocated decoding cache must give the dynamic cache's logits step for step,
including after rows leave the batch and after it outgrows its planned length."""

import torch

from scope_core.generator import GeneratorConfig, Inverter, build_backbone
from scope_core.kv_cache import PreallocatedCache, preallocated


def _decode(inv, c, steps, room, drop_at):
    """Greedy-free decoding with fixed inputs: logits per step, dropping row 1 at `drop_at`."""
    bb = inv.backbone
    cache, inp = inv.start_cache(c, c.shape[0], room=room)
    gen = torch.Generator().manual_seed(0)
    out, live = [], torch.arange(c.shape[0])
    for t in range(steps):
        with inv.conditioned(c[live]), torch.no_grad():
            logits = bb.logits(cache, input_ids=inp)[:, -1, :]
        out.append(logits)
        nxt = torch.randint(5, 60, (len(live), 1), generator=gen)
        if t == drop_at:
            keep = torch.tensor([i for i in range(len(live)) if i != 1])
            cache.batch_select_indices(keep)
            live, nxt = live[keep], nxt[keep]
        inp = nxt
    return out, cache


def _inverter(path):
    cfg = GeneratorConfig(backbone=str(path), sites=["L1"], d_act=64, n_heads=2, head_dim=8)
    inv = Inverter(cfg, build_backbone(cfg))
    for ctl in inv.controls.values():
        torch.nn.init.normal_(ctl.v.weight, std=0.2)
    return inv


def test_preallocated_cache_matches_dynamic_cache(tiny_llama_path):
    inv = _inverter(tiny_llama_path)
    c = torch.randn(4, 64)
    ref, dyn = _decode(inv, c, steps=9, room=None, drop_at=3)
    # room 4 < 9 steps: the buffer must grow once on the way
    got, pre = _decode(inv, c, steps=9, room=4, drop_at=3)
    assert isinstance(pre, PreallocatedCache)
    assert pre.get_seq_length() == dyn.get_seq_length()
    for a, b in zip(ref, got):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-5)
    for la, lb in zip(dyn.layers, pre.layers):
        assert torch.allclose(la.keys, lb.keys, atol=1e-5) and torch.allclose(la.values, lb.values, atol=1e-5)


def test_preallocated_copy_keeps_the_prefix_and_writes_in_place():
    k = torch.randn(1, 2, 3, 4).expand(5, -1, -1, -1)  # an expanded shared prefix, as prefix_cache gives
    cache = preallocated(None, 1, 8)
    cache.layers[0].update(k, k + 1)
    buf = cache.layers[0]._k
    cache.layers[0].update(torch.ones(5, 2, 1, 4), torch.ones(5, 2, 1, 4))
    assert cache.layers[0]._k is buf  # no new buffer for a step within the planned length
    assert torch.equal(cache.layers[0].keys[:, :, :3], k) and torch.equal(cache.layers[0].keys[:, :, 3], torch.ones(5, 2, 4))
    cache.batch_select_indices(torch.tensor([0, 3]))
    assert cache.layers[0].keys.shape == (2, 2, 4, 4) and cache.get_seq_length() == 4


def test_cache_over_row_blocks_writes_into_the_owners_buffers():
    k, v = torch.zeros(4, 2, 10, 3), torch.zeros(4, 2, 10, 3)
    part = PreallocatedCache.over([(k[2:4], v[2:4])], filled=6)  # rows 2-3, positions 0-5 already written
    assert part.get_seq_length() == 6
    part.layers[0].update(torch.ones(2, 2, 2, 3), 2 * torch.ones(2, 2, 2, 3))
    assert torch.equal(k[2:4, :, 6:8], torch.ones(2, 2, 2, 3)) and torch.equal(v[2:4, :, 6:8], 2 * torch.ones(2, 2, 2, 3))
    assert k[:2].abs().sum() == 0 and k[:, :, :6].abs().sum() == 0  # other rows and earlier positions untouched
    whole = PreallocatedCache.over([(k, v)], filled=8)
    assert whole.layers[0].keys.shape == (4, 2, 8, 3) and whole.get_seq_length() == 8


def test_drop_rows_fills_holes_from_the_end_and_reports_the_order():
    from transformers.cache_utils import DynamicCache

    from scope_core.kv_cache import drop_rows

    kv = [(torch.randn(6, 2, 3, 4), torch.randn(6, 2, 3, 4)) for _ in range(2)]
    done = torch.tensor([False, True, False, True, False, False])
    pre = preallocated(DynamicCache(kv), 2, 5)
    order = drop_rows(pre, done)
    assert sorted(order.tolist()) == [0, 2, 4, 5] and order.tolist()[:1] == [0]
    for layer, (k, v) in zip(pre.layers, kv):
        assert torch.equal(layer.keys, k[order]) and torch.equal(layer.values, v[order])
    dyn = DynamicCache(kv)
    assert drop_rows(dyn, done).tolist() == [0, 2, 4, 5]  # other caches keep their order
    assert torch.equal(dyn.layers[0].keys, kv[0][0][[0, 2, 4, 5]])


def test_generation_is_the_same_with_either_cache_under_greedy_decoding(tiny_llama_path):
    from scope_core.sample import generate

    cfg = GeneratorConfig(backbone=str(tiny_llama_path), sites=["L1"], d_act=64, n_heads=2, head_dim=8)
    inv = Inverter(cfg, build_backbone(cfg))
    for ctl in inv.controls.values():
        torch.nn.init.normal_(ctl.v.weight, std=2.0)
    inv.backbone.restrict_output(list(range(5, 12)))  # a small support, so that some rows end early
    z = torch.randn(6, 64)
    a = generate(inv, "L1", z, 6, 2, temperature=0.0, max_new_tokens=9, preallocate=False)
    b = generate(inv, "L1", z, 6, 2, temperature=0.0, max_new_tokens=9, preallocate=True)
    lengths = {len(inv.backbone.tokenizer(t).input_ids) for q in a for t in q}
    assert len(lengths) > 1  # rows left the batch at different steps: the swap was exercised
    assert a == b


def _conditioned_tiny_inverter(path, **config) -> Inverter:
    """An untrained inverter on the tiny llama whose condition visibly changes the samples
    (large control values) and whose output is a handful of tokens, so greedy rows differ
    in length."""
    cfg = GeneratorConfig(backbone=str(path), sites=["L1"], d_act=64, n_heads=2, head_dim=8, **config)
    inv = Inverter(cfg, build_backbone(cfg))
    for ctl in inv.controls.values():
        torch.nn.init.normal_(ctl.v.weight, std=2.0)
    inv.backbone.restrict_output(list(range(5, 12)))
    return inv


def test_continuous_batching_gives_the_fixed_batches_greedy_samples(tiny_llama_path):
    """Rows that join a running batch at later steps (their own positions, masked slots)
    must decode exactly as they would have in a batch of their own."""
    from scope_core.sample import generate

    inv = _conditioned_tiny_inverter(tiny_llama_path)
    z = torch.randn(10, 64)
    fixed = generate(inv, "L1", z, 10, 3, temperature=0.0, max_new_tokens=9, batch_size=4, continuous=False)
    rolling = generate(inv, "L1", z, 10, 3, temperature=0.0, max_new_tokens=9, batch_size=4)  # 30 rows through 4 slots
    lengths = {len(inv.backbone.tokenizer(t).input_ids) for q in fixed for t in q}
    assert len(lengths) > 1  # rows ended at different steps, so later rows joined mid-way
    assert rolling == fixed
    uncond = generate(inv, None, None, 3, 4, temperature=0.0, max_new_tokens=9, batch_size=5)
    assert uncond == generate(inv, None, None, 3, 4, temperature=0.0, max_new_tokens=9, batch_size=5, continuous=False)


def test_rows_primed_from_the_first_control_block_decode_as_unprimed_ones(tiny_llama_path):
    """Below the first control block the prefix's last token is the same for every row, so
    continuous decoding computes it once (`continuous.prime`); the samples must not change."""
    from scope_core.sample import generate

    inv = _conditioned_tiny_inverter(tiny_llama_path, control_layers=[2, 3])
    z = torch.randn(10, 64)
    fixed = generate(inv, "L1", z, 10, 3, temperature=0.0, max_new_tokens=9, batch_size=4, continuous=False)
    assert inv._priming_exact is None  # fixed batches feed the prefix's last token through every block
    primed = generate(inv, "L1", z, 10, 3, temperature=0.0, max_new_tokens=9, batch_size=4)
    assert inv._priming_exact is True
    assert primed == fixed
    assert len({t for q in fixed for t in q}) > 3  # the condition matters: not one sample repeated


def test_priming_falls_back_where_the_backbone_rewrites_its_input_embeddings(tiny_gpt2_path):
    """GPT-2 adds position embeddings to `inputs_embeds`, so starting it at block k is not
    exact: the one-time check must notice and decode the plain way."""
    from scope_core.sample import generate

    cfg = GeneratorConfig(backbone=str(tiny_gpt2_path), sites=["L1"], d_act=48, n_heads=2, head_dim=8, control_layers=[1, 2])
    bb = build_backbone(cfg)
    bb.prefix_ids = [bb.prefix_ids[0], 7, 9]  # a three-token prefix, so there is a cached part to prime from
    inv = Inverter(cfg, bb)
    for ctl in inv.controls.values():
        torch.nn.init.normal_(ctl.v.weight, std=2.0)
    z = torch.randn(4, 48)
    rolling = generate(inv, "L1", z, 4, 2, temperature=0.0, max_new_tokens=6, batch_size=3)
    assert inv._priming_exact is False
    assert rolling == generate(inv, "L1", z, 4, 2, temperature=0.0, max_new_tokens=6, batch_size=3, continuous=False)


def test_ragged_cache_masks_what_a_row_must_not_see():
    from scope_core.kv_cache import RaggedCache

    prefix = [(torch.ones(1, 1, 2, 1), torch.ones(1, 1, 2, 1))]
    cache = RaggedCache(1, (3, 1, 6, 1), prefix)
    cache.add(2)
    cache.advance()
    cache.add(1)  # joins one step later
    assert cache.positions().squeeze(1).tolist() == [3, 3, 2]
    visible = cache.step_mask() == 0
    assert visible.shape == (3, 1, 1, 4)
    assert visible[:, 0, 0].tolist() == [[True] * 4, [True] * 4, [True, True, True, False]]
    order = cache.remove(torch.tensor([True, False, False]))
    assert order.tolist() == [2, 1] and cache.lens.tolist() == [2, 3]


def test_with_the_speed_ups_off_decoding_is_the_papers_and_gives_the_same_samples(tiny_llama_path, monkeypatch):
    """`AUTOSCOPE_SPEEDUPS=0` (scope_core/speedups.py): fixed batches on transformers' own cache,
    plain linears, no row primed — and the same greedy samples as with every speed-up."""
    from scope_core.fast_linear import prepack_available
    from scope_core.sample import generate

    inv = _conditioned_tiny_inverter(tiny_llama_path, control_layers=[2, 3])
    z = torch.randn(10, 64)
    fast = generate(inv, "L1", z, 10, 3, temperature=0.0, max_new_tokens=9, batch_size=4)
    assert inv._priming_exact is True
    monkeypatch.setenv("AUTOSCOPE_SPEEDUPS", "0")
    assert not prepack_available()
    inv._priming_exact = None
    plain = generate(inv, "L1", z, 10, 3, temperature=0.0, max_new_tokens=9, batch_size=4)
    assert inv._priming_exact is None  # continuous decoding (which primes) was not used
    assert plain == fast
