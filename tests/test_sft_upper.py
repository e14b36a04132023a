"""`--sft lora-upper`: the backbone is fitted to P(X) only above the first control block, so
its lower blocks stay the target's own modules — the trunk shortcut and fused verification
remain exact, and the checkpoint holds only the fine-tuned blocks."""

import pytest
import torch
from safetensors.torch import load_file

from checks import assert_fused_matches_full
from scope_core.generator import find_architecture, shares_blocks


@pytest.fixture(scope="module")
def upper_sft_scope(tiny_llama_path, tmp_path_factory):
    from scope_core.api import Scope
    from scope_core.data import PriorConfig
    from scope_core.targets import TargetConfig
    from scope_core.train import TrainConfig, train

    runs = tmp_path_factory.mktemp("runs_sft_upper")
    cfg = TrainConfig(run="u", runs_dir=str(runs), target=TargetConfig(model=str(tiny_llama_path)),
                      prior=PriorConfig(task="refusal", n=300, heldout=40), sites="L2", backbone=str(tiny_llama_path),
                      control_layers=[3], sft="lora-upper", sft_minutes=0.05, minutes=0.05, eval_every=10, eval_size=20, batch_size=16)
    res = train(cfg, progress=False)
    return res, Scope(runs / "u")


def test_upper_sft_changes_only_the_upper_blocks_and_keeps_the_shortcuts(upper_sft_scope):
    res, scope = upper_sft_scope
    assert res.phases["trunk_shortcut"] == 1.0  # the residual entering block 3 is still the target's
    inv, target = scope.inverter, scope.target
    bb_model = inv.backbone.model
    assert bb_model is not target.model and shares_blocks(bb_model, target.model, 2)
    a, b = find_architecture(bb_model), find_architecture(target.model)
    assert a.layers[3] is not b.layers[3]
    changed = [n for (n, p), q in zip(a.layers[3].named_parameters(), b.layers[3].parameters()) if not torch.equal(p, q)]
    assert changed and all("proj" in n for n in changed)  # the merged LoRA updates, on attention projections only
    saved = [k for k in load_file(str(scope.run_dir / "inverter" / "inverter.safetensors")) if k.startswith("backbone.")]
    assert saved and all(".layers.3." in k for k in saved)  # only the backbone's own block is stored

    assert_fused_matches_full(scope, "L2", queries=3, n=4, seed=2)


def test_upper_sft_needs_the_target_as_backbone(tiny_llama_path, tiny_gpt2_path, tmp_path):
    from scope_core.data import PriorConfig
    from scope_core.errors import AutoscopeError
    from scope_core.targets import TargetConfig
    from scope_core.train import TrainConfig, train

    cfg = TrainConfig(run="x", runs_dir=str(tmp_path), target=TargetConfig(model=str(tiny_llama_path)),
                      prior=PriorConfig(task="refusal", n=120, heldout=20), sites="L2", backbone=str(tiny_gpt2_path),
                      sft="lora-upper", minutes=0.02, eval_every=10, eval_size=10, batch_size=8)
    with pytest.raises(AutoscopeError, match="lora-upper needs the target itself"):
        train(cfg, progress=False)
