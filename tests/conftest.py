import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tiny import make_tiny_gpt2, make_tiny_llama  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFUSAL_DATA = SHARED / "data" / "refusal"


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_gpt2_path(tmp_path_factory) -> Path:
    return make_tiny_gpt2(tmp_path_factory.mktemp("tiny_gpt2"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
