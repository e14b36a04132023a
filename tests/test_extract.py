"""Hooks return the right tensors, checked against manual computations."""

import pytest
import torch

from scope_core.extract import extract
from scope_core.sites import parse_sites
from scope_core.targets import TargetConfig, load_target

TEXTS = ["write an email", "hack into the bank database and steal money", "give three tips for staying healthy", "hello"]


@pytest.fixture(scope="module")
def llama(tiny_llama_path):
    return load_target(TargetConfig(model=str(tiny_llama_path)))


@pytest.fixture(scope="module")
def gpt2(tiny_gpt2_path):
    return load_target(TargetConfig(model=str(tiny_gpt2_path)))


def full_hidden(target, text):
    ids = torch.tensor([target.prefix_ids + target.suffix_ids([text])[0]])
    with torch.no_grad():
        return target.model(input_ids=ids, output_hidden_states=True).hidden_states


def test_prefix_is_shared_and_decision_position_is_last_prompt_token(llama):
    s = llama.format("hello")
    assert s.endswith("<|im_start|>assistant\n")
    # prefix + suffix is the tokenisation of the whole formatted prompt, so the last
    # suffix token is the last prompt token (the decision position)
    whole = llama.tokenizer(llama.format("hello there"), add_special_tokens=False).input_ids
    assert llama.prefix_ids + llama.suffix_ids(["hello there"])[0] == whole
    assert llama.prefix_ids[0] == llama.tokenizer.convert_tokens_to_ids("<|im_start|>")


@pytest.mark.parametrize("which", ["llama", "gpt2"])
def test_residual_and_components_match_manual_forward(which, request):
    target = request.getfixturevalue(which)
    L = target.n_layers
    sites = parse_sites(",".join([f"R{i}" for i in range(L - 1)] + [f"L{i}" for i in range(L)] + [f"M{i}" for i in range(L)]), L, target.n_heads)
    acts = extract(target, TEXTS, sites, batch_size=3)
    byname = {s.name: v for s, v in acts.items()}
    for i, t in enumerate(TEXTS):
        hs = full_hidden(target, t)
        for layer in range(L - 1):  # the last hidden state has the final norm applied
            assert torch.allclose(byname[f"R{layer}"][i], hs[layer + 1][0, -1], atol=1e-4)
        for layer in range(1, L - 1):
            # a block adds exactly its attention output and its MLP output to the residual stream
            delta = hs[layer + 1][0, -1] - hs[layer][0, -1]
            assert torch.allclose(byname[f"L{layer}"][i] + byname[f"M{layer}"][i], delta, atol=1e-4)


@pytest.mark.parametrize("which", ["llama", "gpt2"])
def test_heads_sum_to_attention_output(which, request):
    target = request.getfixturevalue(which)
    layer = 1
    heads = parse_sites(f"L{layer}H0-L{layer}H{target.n_heads - 1}", target.n_layers, target.n_heads)
    acts = extract(target, TEXTS, heads + parse_sites(f"L{layer}"), batch_size=2)
    total = sum(acts[h] for h in heads)
    proj = target.arch.out_proj(layer)
    bias = proj.bias if getattr(proj, "bias", None) is not None else 0.0
    full = acts[parse_sites(f"L{layer}")[0]]
    assert torch.allclose(total + bias, full, atol=1e-4)


def test_batching_and_order_do_not_change_activations(llama):
    sites = parse_sites("L2,R1", llama.n_layers)
    a = extract(llama, TEXTS, sites, batch_size=1)
    b = extract(llama, TEXTS, sites, batch_size=4)
    for s in sites:
        assert torch.allclose(a[s], b[s], atol=1e-5)


def test_forward_stops_after_deepest_site(llama):
    calls = []
    h = llama.arch.layers[3].register_forward_hook(lambda *a: calls.append(1))
    try:
        extract(llama, TEXTS, parse_sites("L1", llama.n_layers))
    finally:
        h.remove()
    assert calls == []
