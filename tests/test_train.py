"""Training on a tiny random model: it learns, it resumes, the cache resumes."""

import json
import math
import random
import string

import pytest
import torch

from scope_core.cache import ActivationCache
from scope_core.data import PriorConfig
from scope_core.errors import AutoscopeError
from scope_core.sites import parse_sites
from scope_core.targets import TargetConfig, load_target
from scope_core.train import TrainConfig, TrainResult, train


def _cfg(path, tmp_path, **kw):
    base = dict(run="t", runs_dir=str(tmp_path / "runs"), target=TargetConfig(model=str(path)),
                prior=PriorConfig(task="ioi", n=300, heldout=40), sites="L1,R2", backbone=str(path),
                minutes=0.08, eval_every=10, eval_size=40, batch_size=16, lr=3e-3)
    base.update(kw)
    return TrainConfig(**base)


def test_training_lowers_heldout_loss_below_unconditional(tiny_llama_path, tmp_path):
    res = train(_cfg(tiny_llama_path, tmp_path, minutes=0.25), progress=False)
    assert res.heldout_loss < res.heldout_loss_unconditional - 0.05
    assert [e.site for e in res.eps] == ["L1", "R2"] and all(e.eps > 0 for e in res.eps)
    log = [json.loads(x) for x in (tmp_path / "runs/t/inverter/log.jsonl").read_text().splitlines()]
    assert log[0]["phase"] == "noise" and set(log[0]["noise_distance_quantiles"]) == {"L1", "R2"}
    assert (tmp_path / "runs/t/inverter/inverter.safetensors").exists()


def test_training_resumes_where_it_stopped(tiny_llama_path, tmp_path):
    first = train(_cfg(tiny_llama_path, tmp_path, minutes=0.05, patience=100), progress=False)
    state1 = torch.load(tmp_path / "runs/t/inverter/state.pt", weights_only=False)["st"]
    assert state1["stopped"] == "time budget"
    # a longer budget on the same run continues from the saved step instead of restarting
    state_path = tmp_path / "runs/t/inverter/state.pt"
    st = torch.load(state_path, weights_only=False)
    st["st"]["stopped"] = ""  # as if the process had been killed before finishing
    torch.save(st, state_path)
    second = train(_cfg(tiny_llama_path, tmp_path, minutes=0.1, patience=100), progress=False)
    assert second.steps > first.steps
    steps = [json.loads(x)["step"] for x in (tmp_path / "runs/t/inverter/log.jsonl").read_text().splitlines() if '"control"' in x]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # no step trained twice


def test_changed_config_on_existing_run_is_refused(tiny_llama_path, tmp_path):
    train(_cfg(tiny_llama_path, tmp_path, minutes=0.02), progress=False)
    with pytest.raises(AutoscopeError, match="different configuration"):
        train(_cfg(tiny_llama_path, tmp_path, minutes=0.02, sites="L2"), progress=False)


def test_scratch_backbone_and_baseline_train(tiny_llama_path, tmp_path):
    r1 = train(_cfg(tiny_llama_path, tmp_path, run="s", backbone="scratch", sft_minutes=0.05, minutes=0.05), progress=False)
    r2 = train(_cfg(tiny_llama_path, tmp_path, run="b", arch="inversionview", minutes=0.05), progress=False)
    assert r1.steps > 0 and r2.steps > 0
    assert (tmp_path / "runs/s/inverter/backbone_sft.json").exists()


def test_interrupted_cache_resumes_only_missing_chunks(tiny_llama_path, tmp_path):
    target = load_target(TargetConfig(model=str(tiny_llama_path)))
    texts = [f"hello {w}" for w in "abcdefghijklmnopqrstuvwxyz"]
    sites = parse_sites("L1,M2", target.n_layers)
    cache = ActivationCache(tmp_path / "acts")
    first = cache.build(target, texts, sites, chunk_size=5, progress=False)
    full = cache.load(sites[0]).clone()
    cache.chunk_path(2).unlink()
    again = cache.build(target, texts, sites, chunk_size=5, progress=False)
    assert first["chunks_computed"] == 6 and again["chunks_computed"] == 1
    assert torch.allclose(cache.load(sites[0]), full)
    stats = cache.stats()
    assert set(stats) == {"L1", "M2"} and "pairwise" in stats["L1"]["cosine"]
    with pytest.raises(AutoscopeError, match="other prompts"):
        cache.build(target, texts[:-1], sites, chunk_size=5, progress=False)
    assert not list((tmp_path / "acts").glob("*.tmp"))


def test_hub_style_backbone_with_lora_sft_then_frozen(tiny_llama_path, tiny_gpt2_path, tmp_path):
    """A different backbone (a local GPT-2-shaped model) fine-tuned with LoRA, merged,
    frozen, saved with the checkpoint and loaded back for sampling."""
    from scope_core.api import Scope

    res = train(_cfg(tiny_llama_path, tmp_path, run="g", backbone=str(tiny_gpt2_path), sft="lora", sft_minutes=0.05, minutes=0.05), progress=False)
    assert res.steps > 0
    assert (tmp_path / "runs/g/inverter/backbone_sft.json").exists()
    scope = Scope(tmp_path / "runs/g")
    inv = scope.inverter
    assert not any(p.requires_grad for p in inv.backbone.model.parameters())
    assert type(inv.backbone.model).__name__ == "GPT2LMHeadModel"
    run = scope.sample(scope.site("L1"), indices=scope.heldout_indices(limit=2), n=2, eps=scope.eps(scope.site("L1"), eps=0.5))
    assert len(run.queries) == 2


def test_a_job_budget_gives_training_what_caching_left():
    from scope_core.train import FINISH_RESERVE_S, MIN_TRAINING_S, training_seconds

    cfg = TrainConfig(run="b", minutes=8.0, total_minutes=14.5)
    assert training_seconds(cfg, 0.0, 4 * 60) == 8 * 60  # a fast host: the full 8 minutes fit
    slow = training_seconds(cfg, 0.0, 9 * 60)  # caching took 9 minutes
    assert slow == 14.5 * 60 - 9 * 60 - FINISH_RESERVE_S
    assert training_seconds(cfg, 60.0, 9 * 60) == slow + 60  # resumed: what was trained before counts as done
    assert training_seconds(cfg, 0.0, 14 * 60) == MIN_TRAINING_S  # never cut to nothing
    assert training_seconds(cfg.model_copy(update={"total_minutes": None}), 0.0, 60 * 60) == 8 * 60


def test_training_is_cut_to_fit_the_job_budget(tiny_llama_path, tmp_path, monkeypatch):
    import scope_core.train as T

    monkeypatch.setattr(T, "MIN_TRAINING_S", 3.0)
    monkeypatch.setattr(T, "FINISH_RESERVE_S", 0.0)
    res = train(_cfg(tiny_llama_path, tmp_path, minutes=5.0, total_minutes=0.01, patience=1000), progress=False)
    assert res.phases["training_cut_to_s"] == 3.0 and res.phases["control_training_s"] < 30
    assert res.stopped.startswith("time budget (cut to")
    log = [json.loads(x) for x in (tmp_path / "runs/t/inverter/log.jsonl").read_text().splitlines()]
    assert any(r["phase"] == "budget" for r in log)


def test_neighbour_conditioning_trains_and_logs_ball_sizes(tiny_llama_path, tmp_path):
    res = train(_cfg(tiny_llama_path, tmp_path, minutes=0.15, neighbour_mix=1.0), progress=False)
    assert "MLP site encoder" not in res.generator  # neighbours mixed in: recipe 3 keeps the linear map
    log = [json.loads(x) for x in (tmp_path / "runs/t/inverter/log.jsonl").read_text().splitlines()]
    balls = {r["site"]: r["ball_sizes"] for r in log if r["phase"] == "neighbours"}
    assert set(balls) == {"L1", "R2"} and all(b["q50"] >= 1 for b in balls.values())
    assert res.steps > 0 and res.heldout_loss < res.heldout_loss_unconditional
    with pytest.raises(ValueError):
        _cfg(tiny_llama_path, tmp_path, neighbour_mix=1.5)


def test_past_the_whole_list_size_training_draws_from_bounded_balls(tiny_llama_path, tmp_path, monkeypatch):
    from scope_core import neighbours

    monkeypatch.setattr(neighbours, "WHOLE_LISTS_MAX_N", 10)  # as if the prior had more than 20,000 training prompts
    monkeypatch.setattr(neighbours, "MAX_MEMBERS", 4)
    res = train(_cfg(tiny_llama_path, tmp_path, minutes=5.0, max_steps=6, neighbour_mix=1.0), progress=False)
    log = [json.loads(x) for x in (tmp_path / "runs/t/inverter/log.jsonl").read_text().splitlines()]
    balls = {r["site"]: r["ball_sizes"] for r in log if r["phase"] == "neighbours"}
    assert set(balls) == {"L1", "R2"} and all(b["members_kept_max"] <= 4 for b in balls.values())
    assert res.steps == 6


def test_runs_saved_before_neighbour_conditioning_load_as_noise_only(tmp_path):
    cfg = TrainConfig(run="old")
    raw = json.loads(cfg.model_dump_json())
    del raw["neighbour_mix"], raw["recipe"]
    (tmp_path / "train_config.json").write_text(json.dumps(raw))
    old = TrainConfig.load(tmp_path / "train_config.json")
    assert old.neighbour_mix == 0.0 and old.recipe == 1
    assert TrainConfig().neighbour_mix is None and TrainConfig().recipe == 3  # new runs: the mix is read from the data


def test_a_step_budget_stops_training_at_that_step_whatever_the_clock(tiny_llama_path, tmp_path):
    res = train(_cfg(tiny_llama_path, tmp_path, minutes=5.0, max_steps=7, patience=100, condition_dropout=0.2, weight_decay=0.1),
                progress=False)
    assert res.steps == 7 and res.stopped == "step budget"
    steps = [json.loads(x)["step"] for x in (tmp_path / "runs/t/inverter/log.jsonl").read_text().splitlines() if '"control"' in x]
    assert steps[-1] == 7  # the last step is evaluated and checkpointed


def test_the_final_fit_is_measured_on_the_weights_the_log_evaluated_last(tiny_llama_path, tmp_path):
    rng = random.Random(0)  # unrelated prompts: a held-out one shares nothing with the training ones but the letters
    data = tmp_path / "letters.json"
    data.write_text(json.dumps([{"instruction": " ".join(rng.choices(string.ascii_lowercase, k=8))} for _ in range(60)]))

    def cfg():  # 80 steps of 16 over about 44 training prompts, the last step's weights: learned by heart
        return _cfg(tiny_llama_path, tmp_path, prior=PriorConfig(task=None, data=[str(data)], heldout=12), max_steps=80, minutes=5.0,
                    patience=1000, lr=1e-2, eval_size=16, weight_average=None)

    res = train(cfg(), progress=False)
    last = [json.loads(x) for x in (tmp_path / "runs/t/inverter/log.jsonl").read_text().splitlines() if '"control"' in x][-1]
    assert last["step"] == 80 and res.final_heldout_loss == pytest.approx(last["heldout_loss"], abs=1e-5)
    assert res.final_train_loss < res.final_heldout_loss - 0.1
    again = train(cfg(), progress=False)  # the finished run, summarised again
    assert (again.final_heldout_loss, again.final_train_loss) == pytest.approx((res.final_heldout_loss, res.final_train_loss), abs=1e-5)


def test_per_site_mix_builds_balls_only_where_neighbours_are_drawn(tiny_llama_path, tmp_path, monkeypatch):
    import scope_core.train as train_mod

    monkeypatch.setattr(train_mod, "site_neighbour_mixes", lambda cfg, stats, eps: [0.0, 1.0])
    res = train(_cfg(tiny_llama_path, tmp_path, max_steps=4, minutes=5.0), progress=False)
    assert res.neighbour_mix_per_site == {"L1": 0.0, "R2": 1.0} and res.neighbour_mix == 0.5
    log = [json.loads(x) for x in (tmp_path / "runs/t/inverter/log.jsonl").read_text().splitlines()]
    assert [r["site"] for r in log if r["phase"] == "neighbours"] == ["R2"]
    assert next(r for r in log if r["phase"] == "recipe")["neighbour_mix_per_site"] == {"L1": 0.0, "R2": 1.0}


def test_a_run_started_from_another_runs_control_layers(tiny_llama_path, tmp_path):
    """`init_from`: the control layers and site encoders come from the other run's best
    checkpoint, the standardisation from this run's own cache; a different design is refused."""
    from safetensors.torch import load_file

    train(_cfg(tiny_llama_path, tmp_path, run="pre", minutes=1.0, max_steps=20), progress=False)
    other_prior = PriorConfig(task="ioi", n=300, heldout=40, seed=1)
    train(_cfg(tiny_llama_path, tmp_path, run="fit", prior=other_prior, minutes=1.0, max_steps=3, lr=0.0,
               init_from=str(tmp_path / "runs/pre")), progress=False)
    pre = load_file(str(tmp_path / "runs/pre/inverter/inverter.safetensors"))
    fit = load_file(str(tmp_path / "runs/fit/inverter/inverter.safetensors"))
    stats = [k for k in pre if ".mean_" in k or ".scale_" in k]
    weights = [k for k in pre if k not in stats]
    assert weights and all(torch.equal(pre[k], fit[k]) for k in weights)  # lr 0: nothing moved from the start it was given
    assert stats and not all(torch.equal(pre[k], fit[k]) for k in stats)  # its own prior's standardisation
    with pytest.raises(AutoscopeError, match="differs"):
        train(_cfg(tiny_llama_path, tmp_path, run="other", n_heads=4, minutes=1.0, max_steps=2, init_from=str(tmp_path / "runs/pre")),
              progress=False)
    with pytest.raises(AutoscopeError, match="no trained inverter"):
        train(_cfg(tiny_llama_path, tmp_path, run="none", minutes=1.0, max_steps=2, init_from=str(tmp_path / "runs/missing")),
              progress=False)
    theirs = json.loads((tmp_path / "runs/pre/inverter/generator.json").read_text())["encoder_hidden"] or 0
    with pytest.raises(AutoscopeError, match=f"differs.*pass --encoder-hidden {theirs} "):  # nor another encoder; the hint names its width
        train(_cfg(tiny_llama_path, tmp_path, run="mlp", encoder_hidden=3, minutes=1.0, max_steps=2, init_from=str(tmp_path / "runs/pre")),
              progress=False)


def test_an_mlp_site_encoder_trains_saves_and_samples(tiny_llama_path, tmp_path):
    """`encoder_hidden`: the run's generator carries the MLP encoder, says so, and reloads to sample."""
    from scope_core.api import Scope

    res = train(_cfg(tiny_llama_path, tmp_path, encoder_hidden=16, minutes=1.0, max_steps=3), progress=False)
    assert res.steps == 3 and "MLP site encoder (hidden 16)" in res.generator
    scope = Scope(tmp_path / "runs/t")
    assert scope.inverter.config.encoder_hidden == 16
    site = scope.site("L1")
    run = scope.sample(site, indices=scope.heldout_indices(None, 2), n=2, eps=scope.eps(site), seed=0)
    assert sum(len(q.samples) for q in run.queries) == 4


def test_a_run_without_neighbours_gets_the_mlp_encoder_and_keeps_it_on_resume(tiny_llama_path, tmp_path):
    """Recipe 3 reads the encoder from the mix: mix 0 (loose balls) trains an MLP of twice the
    target's width, and a resumed run rebuilds the same generator from the same data."""
    from scope_core.api import Scope

    res = train(_cfg(tiny_llama_path, tmp_path, neighbour_mix=0.0, minutes=1.0, max_steps=2), progress=False)
    d = Scope(tmp_path / "runs/t").inverter.config.d_act
    assert f"MLP site encoder (hidden {2 * d})" in res.generator
    state_path = tmp_path / "runs/t/inverter/state.pt"
    st = torch.load(state_path, weights_only=False)
    st["st"]["stopped"] = ""  # as if the process had been killed before finishing
    torch.save(st, state_path)
    res = train(_cfg(tiny_llama_path, tmp_path, neighbour_mix=0.0, minutes=1.0, max_steps=4), progress=False)
    assert res.steps == 4 and f"MLP site encoder (hidden {2 * d})" in res.generator


def test_cosine_schedule_decays_to_its_floor_over_the_budget():
    from scope_core.train import LR_FLOOR, lr_decay

    assert lr_decay("constant", 0.9) == 1.0
    assert lr_decay("cosine", 0.0) == pytest.approx(1.0)
    assert lr_decay("cosine", 0.5) == pytest.approx(LR_FLOOR + (1 - LR_FLOOR) / 2)
    assert lr_decay("cosine", 1.0) == pytest.approx(LR_FLOOR) == lr_decay("cosine", 3.0)
    shares = [i / 10 for i in range(11)]
    assert all(a >= b for a, b in zip(map(lambda s: lr_decay("cosine", s), shares), map(lambda s: lr_decay("cosine", s), shares[1:])))


def test_a_cosine_run_ends_its_step_budget_near_the_floor_rate(tiny_llama_path, tmp_path):
    from scope_core.train import LR_FLOOR

    res = train(_cfg(tiny_llama_path, tmp_path, minutes=5.0, max_steps=12, warmup_steps=2, patience=100, lr_schedule="cosine"),
                progress=False)
    assert res.steps == 12
    group = torch.load(tmp_path / "runs/t/inverter/state.pt", weights_only=False)["opt"]["param_groups"][0]
    # the rate set for the step after the last: the share spent before it was 11/12
    assert group["lr"] == pytest.approx(3e-3 * (LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * 11 / 12))), rel=1e-6)


def test_runs_saved_before_the_schedule_resume_at_a_constant_rate(tiny_llama_path, tmp_path):
    train(_cfg(tiny_llama_path, tmp_path, minutes=5.0, max_steps=3, lr_schedule="constant"), progress=False)
    path = tmp_path / "runs/t/train_config.json"
    raw = json.loads(path.read_text())
    del raw["lr_schedule"]  # as a run saved before the option existed
    path.write_text(json.dumps(raw))
    assert TrainConfig.load(path).lr_schedule == "constant" and TrainConfig().lr_schedule == "cosine"
    # rerun with today's defaults, the run keeps its own schedule instead of being refused
    res = train(_cfg(tiny_llama_path, tmp_path, minutes=5.0, max_steps=3), progress=False)
    assert res.steps == 3 and TrainConfig.load(path).lr_schedule == "constant"


def test_a_run_summarised_before_sampling_temperatures_keeps_sampling_at_one(tiny_llama_path, tmp_path):
    """Rerunning `train` on a finished run saved before temperatures were recorded leaves it
    without them (its samples were measured at 1); a new run records one per site."""
    cfg = _cfg(tiny_llama_path, tmp_path, minutes=5.0, max_steps=3)
    train(cfg, progress=False)
    path = tmp_path / "runs/t/inverter/train_summary.json"
    summary = json.loads(path.read_text())
    assert set(summary["sampling_temperature_per_site"]) == {"L1", "R2"}
    del summary["sampling_temperature_per_site"]
    path.write_text(json.dumps(summary))
    for _ in range(2):  # and again after a rerun has written the summary without them
        res = train(cfg, progress=False)
        assert res.sampling_temperature_per_site == {} and not json.loads(path.read_text())["sampling_temperature_per_site"]


def train_killed_and_resumed(cfg: TrainConfig, monkeypatch, kill_after: int):
    """Train `cfg` until the checkpoint after step `kill_after`, stop it there as a kill would,
    then rerun the same command to resume it; returns the resumed run's result."""
    import scope_core.train as train_mod

    real_checkpoint = train_mod.checkpoint

    def killed(inv, fit, inv_dir):
        real_checkpoint(inv, fit, inv_dir)
        if fit.st["step"] >= kill_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "checkpoint", killed)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    monkeypatch.setattr(train_mod, "checkpoint", real_checkpoint)
    return train(cfg, progress=False)


def test_a_killed_cosine_run_resumes_on_the_same_schedule(tiny_llama_path, tmp_path, monkeypatch):
    kw = dict(minutes=5.0, max_steps=8, eval_every=2, patience=100, warmup_steps=2)
    train(_cfg(tiny_llama_path, tmp_path, run="straight", **kw), progress=False)
    res = train_killed_and_resumed(_cfg(tiny_llama_path, tmp_path, run="killed", **kw), monkeypatch, kill_after=4)

    def losses(run):
        lines = (tmp_path / "runs" / run / "inverter/log.jsonl").read_text().splitlines()
        return [(r["step"], r["train_loss"], r["heldout_loss"]) for r in map(json.loads, lines) if r.get("phase") == "control"]

    assert res.steps == 8 and [s for s, _, _ in losses("killed")] == [2, 4, 6, 8]
    for (_, ta, ha), (_, tb, hb) in zip(losses("straight"), losses("killed")):
        assert ta == pytest.approx(tb, abs=1e-4) and ha == pytest.approx(hb, abs=1e-4)


def test_backbone_sft_is_evaluated_however_few_steps_and_never_left_worse(tiny_llama_path, tmp_path):
    """A time-budgeted SFT that ends before its 100th step is still evaluated (step 0, each
    minute and at the end), so it reports a finite held-out loss; and a fit that only hurts
    (a learning rate far too high) leaves the backbone's weights as they were."""
    from scope_core.generator import GeneratorConfig, build_backbone
    from scope_core.train import finetune_backbone

    cfg = GeneratorConfig(backbone=str(tiny_llama_path), sites=["L1"], d_act=64, n_heads=2, head_dim=8)
    texts = [f"write a short note about {w} and {v}" for w in "abcdefgh" for v in "ijkl"]
    bb = build_backbone(cfg)
    ids = bb.encode(texts, 32)
    log = tmp_path / "log.jsonl"
    # 0.24 s: about 20 steps here, and under 100 on a host five times faster (1.2 s gave 103 on a fast one)
    info = finetune_backbone(bb, ids[:24], ids[24:], "full", minutes=0.004, lr=1e-3, batch_size=8, seed=0, log_path=log, progress=False)
    assert 0 < info["sft_steps"] < 100 and math.isfinite(info["sft_heldout_loss"])
    assert info["sft_evaluations"] >= 2 and info["sft_heldout_loss"] <= info["sft_heldout_loss_before"]
    json.dumps(info, allow_nan=False)  # backbone_sft.json stays valid JSON

    bb = build_backbone(cfg)
    before = {k: v.clone() for k, v in bb.model.state_dict().items()}
    info = finetune_backbone(bb, ids[:24], ids[24:], "full", minutes=0.02, lr=50.0, batch_size=8, seed=0, log_path=log, progress=False)
    assert info["sft_heldout_loss"] == info["sft_heldout_loss_before"]
    assert all(torch.equal(v, before[k]) for k, v in bb.model.state_dict().items())

    bb = build_backbone(cfg)  # no held-out prompts: nothing to stop on, the fit keeps its weights
    info = finetune_backbone(bb, ids[:24], [], "full", minutes=0.01, lr=1e-3, batch_size=8, seed=0, log_path=log, progress=False)
    assert info["sft_heldout_loss"] is None and info["sft_evaluations"] == 0 and info["sft_steps"] > 0
    assert any(not torch.equal(v, before[k]) for k, v in bb.model.state_dict().items())


def test_a_step_floor_trains_past_the_clock_on_the_step_budget_schedule(tiny_llama_path, tmp_path):
    # a clock that runs out at once: the floor alone ends training, on the schedule of a step budget of the same size
    floor = train(_cfg(tiny_llama_path, tmp_path, run="floor", minutes=0.0, min_steps=12, patience=100), progress=False)
    steps = train(_cfg(tiny_llama_path, tmp_path, run="steps", minutes=5.0, max_steps=12, patience=100), progress=False)
    assert floor.steps == steps.steps == 12
    assert floor.stopped.startswith("--min-steps 12 (past the") and steps.stopped == "step budget"

    def losses(run):
        return [(r["step"], r["train_loss"], r["heldout_loss"]) for r in map(json.loads, (tmp_path / f"runs/{run}/inverter/log.jsonl")
                .read_text().splitlines()) if r["phase"] == "control"]
    assert losses("floor") == losses("steps")
    from agent.train_check import few_steps_note

    cfg = _cfg(tiny_llama_path, tmp_path, run="floor", min_steps=12)
    mixed, loose = ({"L1": 0.0, "L2": 0.7}, {"L1": 0.0, "L2": 0.0})
    floor, steps = (r.model_copy(update={"neighbour_mix_per_site": mixed}) for r in (floor, steps))
    assert few_steps_note(steps, cfg) is None  # a step budget is the user's choice
    assert "Training stopped at 12 steps" in few_steps_note(floor, cfg)  # a floor below the steps FCR was measured stable at
    clock = floor.model_copy(update={"stopped": "time budget", "steps": 366})
    assert "--min-steps 600" in few_steps_note(clock, cfg.model_copy(update={"min_steps": None}))
    assert "pass a new --run" in few_steps_note(clock, cfg.model_copy(update={"min_steps": 600}))  # finished before the floor was asked
    assert few_steps_note(floor.model_copy(update={"stopped": "time budget", "steps": 640}), cfg) is None
    assert few_steps_note(floor.model_copy(update={"stopped": "early stop (held-out loss stopped improving)"}), cfg) is None
    # the steps were measured to matter only where a site trained with neighbours (the generated prior, BENCHMARKS §26)
    bare = cfg.model_copy(update={"min_steps": None})
    assert few_steps_note(clock.model_copy(update={"neighbour_mix_per_site": loose}), bare) is None
    assert "--min-steps 600" in few_steps_note(clock.model_copy(update={"neighbour_mix_per_site": {}}), bare)  # a summary from before per-site mixes
    late = few_steps_note(clock.model_copy(update={"neighbour_mix_per_site": loose}), cfg.model_copy(update={"min_steps": 600}))
    assert "does not extend it" in late and "needs no longer run" in late and "pass a new --run" not in late


def test_a_loose_run_its_budget_stopped_while_still_fitting_is_told_to_train_longer():
    from agent.train_check import STILL_FITTING_GAP_NATS, still_fitting_note

    res = TrainResult(run_dir="r", phases={}, eps=[], steps=393, train_tokens=0, heldout_loss=1.62, heldout_loss_unconditional=2.95,
                      stopped="time budget", n_train=23699, n_heldout=2000, dropped_long=0, neighbour_mix_per_site={"L18": 0.0},
                      final_heldout_loss=1.620, final_train_loss=1.657)
    cfg = TrainConfig(run="r")  # batch 32: 393 steps pass over 23.7k prompts about half a time
    note = still_fitting_note(res, cfg)
    assert "--max-steps 786" in note and "--run NEW" in note and "0.5 passes" in note
    assert still_fitting_note(cfg=cfg, res=res.model_copy(update={"stopped": "step budget"})) is not None
    assert still_fitting_note(cfg=cfg, res=res.model_copy(update={"stopped": "--min-steps 600 (past the 8.0-min time budget)"})) is not None
    # learning its prompts by heart (the real sets' 6.6k at 393 steps: 0.48–0.62 apart), where more steps changed nothing
    assert still_fitting_note(cfg=cfg, res=res.model_copy(update={"final_train_loss": 1.62 - STILL_FITTING_GAP_NATS - 0.01})) is None
    assert still_fitting_note(cfg=cfg, res=res.model_copy(update={"stopped": "early stop (held-out loss stopped improving)"})) is None
    assert still_fitting_note(cfg=cfg, res=res.model_copy(update={"neighbour_mix_per_site": {"L18": 0.7}})) is None  # `few_steps_note`'s case
    assert still_fitting_note(cfg=cfg, res=res.model_copy(update={"neighbour_mix_per_site": {}})) is None  # summarised before per-site mixes
    assert still_fitting_note(cfg=cfg, res=res.model_copy(update={"final_train_loss": None})) is None  # summarised before the final fit


def test_the_schedule_under_a_step_floor_ends_when_clock_and_floor_both_have():
    from scope_core.train import budget_share, steps_owed

    cfg = TrainConfig(run="b", min_steps=600)
    assert budget_share(cfg, 300, 600.0, 480.0) == 0.5  # a slow host: the clock ran out, the floor sets the schedule
    assert budget_share(cfg, 600, 780.0, 480.0) == 1.0
    assert budget_share(cfg, 500, 240.0, 480.0) == 0.5  # a fast host: the floor is passed, the clock sets it
    assert budget_share(TrainConfig(run="b", min_steps=600, max_steps=800), 400, 900.0, 480.0) == 0.5  # a step budget alone
    assert budget_share(TrainConfig(run="b"), 10, 240.0, 480.0) == 0.5
    assert steps_owed(cfg, 599) and not steps_owed(cfg, 600) and not steps_owed(TrainConfig(run="b"), 0)
    with pytest.raises(ValueError, match="min_steps 900 is above max_steps 800"):
        TrainConfig(run="b", min_steps=900, max_steps=800)


def test_past_the_clock_the_progress_bar_counts_the_steps_still_owed(tiny_llama_path, tmp_path, capsys):
    train(_cfg(tiny_llama_path, tmp_path, minutes=0.0, min_steps=6, patience=100), progress=True)
    err = capsys.readouterr().err
    assert "6/6 [" in err and "step" in err
