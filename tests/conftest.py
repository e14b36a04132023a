import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tiny import make_tiny_gpt2, make_tiny_llama

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFUSAL_DATA = SHARED / "data" / "refusal"


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_gpt2_path(tmp_path_factory) -> Path:
    return make_tiny_gpt2(tmp_path_factory.mktemp("tiny_gpt2"))


@pytest.fixture(scope="session")
def embedded_target():
    from scope_core.targets import TargetConfig, load_target

    return load_target(TargetConfig())


@pytest.fixture(scope="session")
def trained_embedded(embedded_target, tmp_path_factory):
    """A small inverter for the real SmolLM2 at L18, trained once per test session."""
    from scope_core.api import Scope
    from scope_core.data import PriorConfig
    from scope_core.train import TrainConfig, train

    runs = tmp_path_factory.mktemp("runs_embedded")
    cfg = TrainConfig(run="it", runs_dir=str(runs), prior=PriorConfig(task="refusal", n=700, heldout=48), sites="L18",
                      minutes=1.2, eval_every=15, eval_size=48, batch_size=16)
    res = train(cfg, progress=False, target=embedded_target)
    return res, Scope(runs / "it", target=embedded_target)


@pytest.fixture(scope="session")
def tiny_scope(tiny_llama_path, tmp_path_factory):
    """A tiny random-weight run (refusal prior, site L2) trained for a few seconds, on the whole
    frozen backbone (control layers in every block; the shallow default is tests/test_shallow.py's)."""
    from scope_core.api import Scope
    from scope_core.data import PriorConfig
    from scope_core.targets import TargetConfig
    from scope_core.train import TrainConfig, train

    runs = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig(run="s", runs_dir=str(runs), target=TargetConfig(model=str(tiny_llama_path)),
                      prior=PriorConfig(task="refusal", n=300, heldout=40), sites="L2", backbone=str(tiny_llama_path),
                      upper_blocks=0, control_layers=[0, 1, 2, 3], minutes=0.05, eval_every=10, eval_size=20, batch_size=16)  # the whole frozen backbone
    train(cfg, progress=False)
    return Scope(runs / "s")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
