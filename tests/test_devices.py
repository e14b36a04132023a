"""--device / --dtype: resolution, the error without a GPU, and the whole pipeline in 16-bit dtypes
on the CPU (caching, training, sampling, verification), with the target and the generator
sharing their weight tensors. GPU paths cannot run here; they are written to the same code."""

import json

import pytest
import torch

from scope_core.data import PriorConfig
from scope_core.devices import free_memory, memory_budget, resolve_device, resolve_dtype
from scope_core.errors import AutoscopeError
from scope_core.sample import DECODE_KV_BUDGET
from scope_core.scope import Scope
from scope_core.targets import TargetConfig, load_target
from scope_core.train import TrainConfig, resumable_config, train

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")


@no_gpu
def test_auto_is_the_cpu_in_float32_without_a_gpu():
    dev = resolve_device("auto")
    assert dev == torch.device("cpu") and resolve_dtype("auto", dev) == "float32"
    assert TargetConfig().resolved().dtype == "float32"
    assert memory_budget(dev, DECODE_KV_BUDGET) == DECODE_KV_BUDGET  # CPU budgets stay the measured constants
    assert (free_memory(dev) or 1) > 0


@no_gpu
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_says_what_is_wrong_and_what_to_do(spec, tiny_llama_path):
    with pytest.raises(AutoscopeError, match="no CUDA GPU.*--device cpu"):
        resolve_device(spec)
    with pytest.raises(AutoscopeError, match="no CUDA GPU"):
        load_target(TargetConfig(model=str(tiny_llama_path), device=spec))


def test_unknown_device_and_dtype_are_refused_with_the_choices():
    with pytest.raises(AutoscopeError, match="cpu, cuda or cuda:N"):
        resolve_device("tpu")
    with pytest.raises(AutoscopeError, match="float32, bfloat16 or float16"):
        resolve_dtype("int8", torch.device("cpu"))


def _cfg(path, tmp_path, dtype, **kw):
    base = dict(run=f"r-{dtype}", runs_dir=str(tmp_path / "runs"), target=TargetConfig(model=str(path), device="cpu", dtype=dtype),
                prior=PriorConfig(task="refusal", n=200, heldout=30), sites="L2", backbone=str(path), max_steps=6,
                minutes=0.5, eval_every=3, eval_size=20, batch_size=8)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_caching_training_sampling_and_verification_in_16_bit(dtype, tiny_llama_path, tmp_path):
    res = train(_cfg(tiny_llama_path, tmp_path, dtype), progress=False)
    assert res.steps == 6 and res.heldout_loss is not None and torch.isfinite(torch.tensor(res.heldout_loss))
    assert res.phases["trunk_shortcut"] == 1.0  # the cached trunk serves a 16-bit target too
    scope = Scope(tmp_path / "runs" / f"r-{dtype}")
    assert scope.config.target.dtype == dtype
    target, inv = scope.target, scope.inverter
    # one set of weights: the generator's backbone is the target's model, tensor for tensor
    assert inv.backbone.model is target.model
    wt = dict(target.model.named_parameters())
    assert all(p.data_ptr() == wt[n].data_ptr() and p.dtype == getattr(torch, dtype) for n, p in inv.backbone.model.named_parameters())
    assert all(p.dtype == torch.float32 for p in inv.parameters())  # control layers and encoder train in float32
    site = scope.site("L2")
    run = scope.sample(site, ["write an email", "how to hack into the bank"], n=4, seed=1)
    dists = [s.distance for q in run.queries for s in q.samples if s.text]
    assert dists and all(d >= 0 and d == d for d in dists)
    full = scope.sample(site, ["write an email", "how to hack into the bank"], n=4, seed=1, verify_mode="full")
    # fused verification (from the decoder's own cache) agrees with re-running the target, to 16-bit rounding
    for a, b in zip(run.queries, full.queries):
        for x, y in zip(a.samples, b.samples):
            assert x.text == y.text and (x.distance == y.distance or abs(x.distance - y.distance) < 0.05)


def test_the_generator_shares_a_bfloat16_target_built_in_the_same_process(tiny_llama_path, tmp_path):
    target = load_target(TargetConfig(model=str(tiny_llama_path), device="cpu", dtype="bfloat16"))
    from scope_core.train import build_generator, prepare_data

    cfg = resumable_config(_cfg(tiny_llama_path, tmp_path, "bfloat16", prior=PriorConfig(task="refusal", n=120, heldout=20)))
    prepared = prepare_data(cfg, target, False, {})
    parts = build_generator(cfg, target, prepared.data, cfg.run_dir / "inverter", False, mixes=[0.0])
    assert parts.bb.model is target.model
    assert next(parts.bb.model.parameters()).dtype == torch.bfloat16


def test_a_run_saved_before_device_options_resumes_as_it_was(tiny_llama_path, tmp_path):
    train(_cfg(tiny_llama_path, tmp_path, "float32", max_steps=2), progress=False)
    path = tmp_path / "runs" / "r-float32" / "train_config.json"
    raw = json.loads(path.read_text())
    del raw["target"]["device"]  # as written before --device existed
    path.write_text(json.dumps(raw))
    old = TrainConfig.load(path)
    assert old.target.device == "auto" and old.target.dtype == "float32"
    # the CLI's defaults (auto, auto) resume it: the dtype is the run's, the device may differ
    again = _cfg(tiny_llama_path, tmp_path, "auto", max_steps=3)
    again = again.model_copy(update={"target": again.target.model_copy(update={"device": "auto"})})
    assert resumable_config(again).target.dtype == "float32"
    assert train(again, progress=False).steps == 3


def test_the_prompt_length_cap_is_an_option(tiny_llama_path, tmp_path):
    capped = _cfg(tiny_llama_path, tmp_path, "float32", run="cap", max_steps=1,
                  target=TargetConfig(model=str(tiny_llama_path), device="cpu", max_prompt_tokens=8))
    assert train(capped, progress=False).dropped_long > 0
