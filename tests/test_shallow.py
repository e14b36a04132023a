"""`--upper-blocks N`: the shallow generator. Above the deepest site it runs copies of only the
target's last N blocks, fine-tuned with the control layers, so a sampled token costs fewer
blocks; below, it still runs the target's own modules, so the trunk shortcut and fused
verification stay exact and the target itself is never changed."""

import pytest
import torch
from safetensors.torch import load_file

from scope_core.errors import AutoscopeError
from scope_core.generator import find_architecture, graft_upper, shares_blocks
from checks import assert_fused_matches_full
from tiny import make_tiny_llama


@pytest.fixture(scope="module")
def six_layer_path(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("tiny6"), n_layers=6)


def _cfg(path, runs, **kw):
    from scope_core.data import PriorConfig
    from scope_core.targets import TargetConfig
    from scope_core.train import TrainConfig

    base = dict(run="sh", runs_dir=str(runs), target=TargetConfig(model=str(path)), prior=PriorConfig(task="refusal", n=300, heldout=40),
                sites="L1", backbone=str(path), upper_blocks=2, minutes=0.15, eval_every=10, eval_size=20, batch_size=16, lr=3e-3)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def shallow_scope(six_layer_path, tmp_path_factory):
    from scope_core.api import Scope
    from scope_core.targets import TargetConfig, load_target
    from scope_core.train import train

    runs = tmp_path_factory.mktemp("runs_shallow")
    before = {k: v.clone() for k, v in load_target(TargetConfig(model=str(six_layer_path))).model.state_dict().items()}
    res = train(_cfg(six_layer_path, runs), progress=False)
    return res, Scope(runs / "sh"), before


def test_graft_keeps_the_lower_blocks_and_copies_only_the_last_ones(six_layer_path):
    from scope_core.targets import TargetConfig, load_target

    model = load_target(TargetConfig(model=str(six_layer_path))).model
    g = graft_upper(model, 2, keep_last=2)
    a, b = find_architecture(g), find_architecture(model)
    assert a.n_layers == 4 and b.n_layers == 6 and g.config.num_hidden_layers == 4 and model.config.num_hidden_layers == 6
    assert shares_blocks(g, model, 1) and a.layers[2] is not b.layers[4]
    assert [a.attn(i).layer_idx for i in range(4)] == [0, 1, 2, 3] and [b.attn(i).layer_idx for i in range(6)] == list(range(6))
    for p, q in zip(a.layers[2].parameters(), b.layers[4].parameters()):  # a copy of block 4, not block 2
        assert torch.equal(p, q) and p.data_ptr() != q.data_ptr()
    ids = torch.tensor([[1, 5, 7, 9]])
    with torch.no_grad():  # runs end to end, and the target still gives its own output
        assert g(input_ids=ids).logits.shape == model(input_ids=ids).logits.shape
    with pytest.raises(AutoscopeError, match="keeps 1 to 4"):
        graft_upper(model, 2, keep_last=5)


def test_shallow_generator_learns_and_leaves_the_target_untouched(shallow_scope):
    res, scope, before = shallow_scope
    assert res.phases["trunk_shortcut"] == 1.0  # the residual entering block 2 is the target's
    assert res.heldout_loss < res.heldout_loss_unconditional  # against the full target without a condition
    assert res.generator.startswith("shallow: the target's blocks 0-1, then fine-tuned copies of its blocks 4-5")
    inv, target = scope.inverter, scope.target
    assert inv.config.upper_blocks == 2 and inv.config.own_blocks_from == 2 and inv.config.control_layers == [2]
    assert find_architecture(inv.backbone.model).n_layers == 4 and shares_blocks(inv.backbone.model, target.model, 1)
    after = target.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # training moved copies, never the target
    own = find_architecture(inv.backbone.model).layers[2]
    assert any(not torch.equal(p, before[f"model.layers.4.{n}"]) for n, p in own.named_parameters())  # the copies did learn
    saved = [k for k in load_file(str(scope.run_dir / "inverter" / "inverter.safetensors")) if k.startswith("backbone.")]
    assert saved and all(".layers.2." in k or ".layers.3." in k for k in saved)  # only the generator's own blocks are stored


def test_shallow_samples_are_verified_exactly_from_the_decoders_cache(shallow_scope):
    assert_fused_matches_full(shallow_scope[1], "L1", queries=3, n=4, seed=2)


def test_shallow_options_are_checked(six_layer_path, tiny_gpt2_path, tmp_path):
    from scope_core.train import train

    with pytest.raises(AutoscopeError, match="only 4 blocks above the deepest site"):
        train(_cfg(six_layer_path, tmp_path, run="a", upper_blocks=5, minutes=0.02), progress=False)
    with pytest.raises(AutoscopeError, match="needs the target itself"):
        train(_cfg(six_layer_path, tmp_path, run="b", backbone=str(tiny_gpt2_path), minutes=0.02), progress=False)
    with pytest.raises(AutoscopeError, match="control layers must be among"):
        train(_cfg(six_layer_path, tmp_path, run="c", control_layers=[4], minutes=0.02), progress=False)


def test_unconditional_reference_of_a_shallow_run_is_the_whole_target(shallow_scope):
    _, scope, _ = shallow_scope
    ref = scope.unconditional_generator
    assert ref is not scope.inverter and ref.backbone.model is scope.target.model
    assert find_architecture(ref.backbone.model).n_layers == 6
    assert ref.backbone.out_ids is not None and torch.equal(ref.backbone.out_ids, scope.inverter.backbone.out_ids)
    site = scope.site("L1")
    run = scope.sample(site, indices=scope.heldout_indices(limit=2), n=3, eps=scope.eps(site, eps=0.5), conditional=False, seed=1)
    assert sum(len(q.samples) for q in run.queries) == 6


def test_reading_the_graft_leaves_the_targets_hidden_states_alone(six_layer_path):
    """The graft shares the target's lower blocks; reading the residual entering its first own
    block must not hook those blocks again (the target's hidden_states would list them twice)."""
    from scope_core.generator import Backbone
    from scope_core.targets import TargetConfig, load_target

    target = load_target(TargetConfig(model=str(six_layer_path)))
    ids = torch.tensor([target.prefix_ids])
    bb = Backbone(graft_upper(target.model, 2, keep_last=2), target.tokenizer, target.prefix_ids, target.tail_ids()[0])
    h = bb.prefix_last_hidden(2)  # before the target was ever asked for its hidden states
    with torch.no_grad():
        hs = target.model(input_ids=ids, output_hidden_states=True).hidden_states
    assert len(hs) == 7
    assert torch.allclose(h, hs[2][0, -1], atol=1e-5)
