"""The moving average of trained weights (scope_core/weight_average.py): its recurrence, the swap
that evaluation and saving read through, and a training run that saves the average, keeps the live
trajectory unchanged and resumes the average where a killed run left it."""

import json

import pytest
import torch
from safetensors.torch import load_file

from rich.console import Console

from agent.train_check import training_table
from scope_core.train import TrainConfig, train
from scope_core.weight_average import WeightAverage
from tests.test_train import _cfg, train_killed_and_resumed


def test_the_average_follows_its_recurrence_from_the_initial_weights():
    p = torch.nn.Parameter(torch.tensor([0.0, 10.0]))
    avg = WeightAverage([p], decay=0.9)
    expect = p.detach().clone()
    for t, value in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]):
        with torch.no_grad():
            p.fill_(value)
        d = min(0.9, (1 + t) / (10 + t))
        expect = d * expect + (1 - d) * torch.full((2,), value)
        avg.update()
        assert torch.allclose(avg.shadow[0], expect)
    assert avg.updates == 6 and avg.rate() == pytest.approx(min(0.9, 7 / 16))


def test_applied_swaps_the_average_in_and_restores_the_live_weights_even_on_error():
    p = torch.nn.Parameter(torch.tensor([1.0]))
    avg = WeightAverage([p], decay=0.5)
    with torch.no_grad():
        p.fill_(3.0)
    avg.update()  # rate min(0.5, 1/10) = 0.1: 0.1·1 + 0.9·3
    with avg.applied():
        assert p.item() == pytest.approx(2.8)
    assert p.item() == 3.0
    with pytest.raises(RuntimeError), avg.applied():
        raise RuntimeError("evaluation failed")
    assert p.item() == 3.0


def test_state_round_trips_and_a_mismatched_one_is_refused():
    a = WeightAverage([torch.nn.Parameter(torch.ones(3))], decay=0.99)
    a.update()
    b = WeightAverage([torch.nn.Parameter(torch.zeros(3))], decay=0.5)
    b.load_state_dict(a.state_dict())
    assert b.decay == 0.99 and b.updates == 1 and torch.equal(b.shadow[0], a.shadow[0])
    with pytest.raises(ValueError, match="does not match"):
        WeightAverage([torch.nn.Parameter(torch.zeros(4))], decay=0.5).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="decay"):
        WeightAverage([], decay=1.0)


def _trainable(path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(path)).items() if not k.startswith("backbone.")}


def test_a_run_saves_the_average_and_its_live_weights_follow_the_same_path(tiny_llama_path, tmp_path):
    kw = dict(minutes=5.0, max_steps=12, eval_every=100, patience=100, warmup_steps=2)  # one evaluation, at the end
    train(_cfg(tiny_llama_path, tmp_path, run="plain", weight_average=None, **kw), progress=False)
    res = train(_cfg(tiny_llama_path, tmp_path, run="avg", weight_average=0.9, **kw), progress=False)
    inv = tmp_path / "runs/{}/inverter"
    plain_last, avg_last = _trainable(f"{inv}/last.safetensors".format("plain")), _trainable(f"{inv}/last.safetensors".format("avg"))
    assert plain_last.keys() == avg_last.keys()
    assert all(torch.equal(plain_last[k], avg_last[k]) for k in plain_last)  # averaging draws no random number
    plain_best, avg_best = _trainable(f"{inv}/inverter.safetensors".format("plain")), _trainable(f"{inv}/inverter.safetensors".format("avg"))
    assert all(torch.equal(plain_best[k], plain_last[k]) for k in plain_best)  # without it the last step is what is saved
    assert any(not torch.equal(avg_best[k], avg_last[k]) for k in avg_best)
    shadow = torch.load(f"{inv}/state.pt".format("avg"), weights_only=False)["average"]["shadow"]
    for s in shadow:  # every averaged tensor is what the saved inverter holds
        assert sum(v.shape == s.shape and torch.equal(v, s) for v in avg_best.values()) >= 1
    cfg = TrainConfig.load(tmp_path / "runs/avg/train_config.json")
    assert cfg.weight_average == 0.9
    assert res.weight_average == 0.9
    console = Console(width=200, record=True)
    console.print(training_table(res))
    assert "moving average, decay 0.9" in console.export_text()
    lines = [json.loads(x) for x in (tmp_path / "runs/avg/inverter/log.jsonl").read_text().splitlines()]
    control = [r for r in lines if r.get("phase") == "control"]
    assert control[-1]["step"] == 12 and control[-1]["heldout_loss"] < control[-1]["heldout_unconditional"]


def test_a_killed_run_resumes_its_average(tiny_llama_path, tmp_path, monkeypatch):
    kw = dict(minutes=5.0, max_steps=8, eval_every=2, patience=100, warmup_steps=2, weight_average=0.9)
    train(_cfg(tiny_llama_path, tmp_path, run="straight", **kw), progress=False)
    train_killed_and_resumed(_cfg(tiny_llama_path, tmp_path, run="killed", **kw), monkeypatch, kill_after=4)
    a = torch.load(tmp_path / "runs/straight/inverter/state.pt", weights_only=False)["average"]
    b = torch.load(tmp_path / "runs/killed/inverter/state.pt", weights_only=False)["average"]
    assert a["updates"] == b["updates"] == 8
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a["shadow"], b["shadow"]))


def test_the_default_averages_and_a_config_saved_before_averaging_loads_without_it(tmp_path):
    assert TrainConfig(run="new").weight_average == 0.99  # the default since NOTES §52
    cfg = TrainConfig(run="old", weight_average=0.99)
    raw = cfg.model_dump(mode="json")
    del raw["weight_average"]
    (tmp_path / "train_config.json").write_text(json.dumps(raw))
    assert TrainConfig.load(tmp_path / "train_config.json").weight_average is None
