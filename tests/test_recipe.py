"""The default recipe's rules read from the data (NOTES §38), and old runs keep theirs."""

from __future__ import annotations

import json

import pytest

from scope_core.eps import EpsChoice
from scope_core.train import (
    DENSE_MIX,
    TrainConfig,
    default_neighbour_mix,
    default_noise_distance,
    LOOSE_TEMPERATURE,
    density_ratio,
    sampling_temperature,
    site_neighbour_mixes,
    spread_control_layers,
)


def _stats(nn_median: float) -> dict:
    return {"cosine": {"nearest_neighbour": {"0.5": nn_median}, "pairwise": {"0.05": 0.1}}}


def _eps(e: float) -> EpsChoice:
    return EpsChoice(site="L18", metric="cosine", eps=e, quantile=0.05, source="quantile")


def test_control_layers_spread_from_above_the_site_to_the_top() -> None:
    assert spread_control_layers(19, 30) == [19, 21, 23, 25, 27, 29]
    assert spread_control_layers(25, 30) == [25, 26, 27, 28, 29]
    assert spread_control_layers(3, 4) == [3]
    assert spread_control_layers(30, 30) == []
    assert spread_control_layers(7, 30) == [7, 11, 16, 20, 25, 29]


def test_noise_shell_is_the_priors_own_spacing_at_most_eps() -> None:
    new, old = TrainConfig(), TrainConfig(recipe=1)
    assert default_noise_distance(new, _stats(0.059), _eps(0.156)) == pytest.approx(0.059)
    assert default_noise_distance(new, _stats(0.3), _eps(0.156)) == pytest.approx(0.156)  # never wider than ε
    assert default_noise_distance(new, {}, _eps(0.156)) == pytest.approx(0.156)  # no statistics: ε
    assert default_noise_distance(old, _stats(0.059), _eps(0.156)) == pytest.approx(0.156)  # recipe 1: ε


def test_neighbour_mix_follows_how_densely_the_prior_fills_a_ball() -> None:
    cfg = TrainConfig()
    dense = [_stats(0.0134)]  # generated refusal prior at L18: ratio 0.16
    loose = [_stats(0.059)]  # real prompts at L18: ratio 0.38
    assert density_ratio(dense, [_eps(0.0818)]) == pytest.approx(0.164, abs=1e-3)
    assert default_neighbour_mix(cfg, dense, [_eps(0.0818)]) == DENSE_MIX
    assert default_neighbour_mix(cfg, loose, [_eps(0.156)]) == 0.0
    assert default_neighbour_mix(cfg, [{}], [_eps(0.156)]) == 0.0  # unknown density: the paper's noise only


def test_neighbour_mix_is_read_at_each_site_on_its_own() -> None:
    # the 4-site refusal run: ratios 0.26 / 0.24 / 0.16 / 0.59 (mean 0.31 used to switch the mix off everywhere)
    stats = [_stats(0.0076), _stats(0.022), _stats(0.0129), _stats(0.0026)]
    eps = [_eps(0.0295), _eps(0.0932), _eps(0.0806), _eps(0.0045)]
    assert density_ratio(stats, eps) > 0.25
    assert site_neighbour_mixes(TrainConfig(), stats, eps) == [0.0, DENSE_MIX, DENSE_MIX, 0.0]
    assert site_neighbour_mixes(TrainConfig(neighbour_mix=0.3), stats, eps) == [0.3] * 4  # the option wins everywhere


def test_sampling_is_cooler_only_where_loose_balls_met_a_generator_trained_on_noise() -> None:
    assert sampling_temperature(0.0, 0.38) == LOOSE_TEMPERATURE == 0.75  # real prompts at L18: mix 0 from the data
    assert sampling_temperature(DENSE_MIX, 0.16) == 1.0  # the generated prior: its generator learned the ball's spread
    assert sampling_temperature(0.0, 0.16) == 1.0  # --neighbour-mix 0 on a dense prior: already sharp, copies (§17)
    assert sampling_temperature(0.7, 0.38) == 1.0  # a mix given on a loose prior: the spread was trained
    assert sampling_temperature(0.0, None) == 1.0  # density unknown: sample as measured before the rule


def test_saved_runs_keep_their_recipe(tmp_path) -> None:
    raw = json.loads(TrainConfig(run="old", neighbour_mix=0.7, n_heads=8).model_dump_json())
    del raw["recipe"]
    (tmp_path / "train_config.json").write_text(json.dumps(raw))
    old = TrainConfig.load(tmp_path / "train_config.json")
    assert old.recipe == 1 and old.neighbour_mix == 0.7 and old.n_heads == 8
    raw["recipe"] = 2
    (tmp_path / "train_config.json").write_text(json.dumps(raw))
    assert TrainConfig.load(tmp_path / "train_config.json").recipe == 2


def test_resuming_an_old_run_with_default_options_keeps_its_recipe(tiny_llama_path, tmp_path) -> None:
    from scope_core.data import PriorConfig
    from scope_core.targets import TargetConfig
    from scope_core.train import train

    base = dict(run="t", runs_dir=str(tmp_path / "runs"), target=TargetConfig(model=str(tiny_llama_path)),
                prior=PriorConfig(task="ioi", n=200, heldout=20), sites="L1", backbone=str(tiny_llama_path),
                minutes=0.02, eval_every=5, eval_size=20, batch_size=8)
    train(TrainConfig(recipe=1, neighbour_mix=0.7, n_heads=8, **base), progress=False)
    res = train(TrainConfig(**base), progress=False)  # today's defaults: resumes, no "different configuration" error
    assert res.steps > 0
    saved = TrainConfig.load(tmp_path / "runs/t/train_config.json")
    assert saved.recipe == 1 and saved.n_heads == 8 and saved.neighbour_mix == 0.7


def test_resuming_with_one_recipe_option_given_keeps_the_others_it_was_trained_with(tiny_llama_path, tmp_path) -> None:
    """A run trained before averaging was the default, with a constant rate: the same command
    (`--lr-schedule constant`, nothing about averaging) resumes it without averaging."""
    from scope_core.data import PriorConfig
    from scope_core.targets import TargetConfig
    from scope_core.train import train

    base = dict(run="t", runs_dir=str(tmp_path / "runs"), target=TargetConfig(model=str(tiny_llama_path)),
                prior=PriorConfig(task="ioi", n=200, heldout=20), sites="L1", backbone=str(tiny_llama_path),
                minutes=0.02, eval_every=5, eval_size=20, batch_size=8, lr_schedule="constant")
    train(TrainConfig(weight_average=None, **base), progress=False)
    res = train(TrainConfig(**base), progress=False)
    assert res.steps > 0 and res.weight_average is None
    saved = TrainConfig.load(tmp_path / "runs/t/train_config.json")
    assert saved.weight_average is None and saved.lr_schedule == "constant"


def test_recipe_3_encodes_sites_through_an_mlp_where_they_train_without_neighbours(tmp_path) -> None:
    """The MLP site encoder is read from the data with the neighbour mix: loose ε-balls (mix 0 at
    every site, the real refusal sets) get an MLP of twice the width, dense ones (the generated
    prior) keep the linear map; an explicit width wins, and saved runs keep theirs."""
    from scope_core.train import site_encoder_hidden

    assert TrainConfig().recipe == 3
    assert site_encoder_hidden(TrainConfig(), 576, [0.0]) == 1152
    assert site_encoder_hidden(TrainConfig(), 576, [0.7]) is None
    assert site_encoder_hidden(TrainConfig(), 576, [0.0, 0.7]) is None  # one encoder width for all sites: linear if any mixes
    assert site_encoder_hidden(TrainConfig(), 576) == 1152  # before the data is read (plan): the larger of the two
    assert site_encoder_hidden(TrainConfig(encoder_hidden=0), 576, [0.0]) is None  # the paper's linear map, asked for
    assert site_encoder_hidden(TrainConfig(encoder_hidden=300), 576, [0.7]) == 300
    assert site_encoder_hidden(TrainConfig(arch="inversionview"), 576, [0.0]) is None  # the baseline as its paper built it
    raw = json.loads(TrainConfig(run="old").model_dump_json())
    raw["recipe"] = 2
    del raw["encoder_hidden"]
    (tmp_path / "train_config.json").write_text(json.dumps(raw))
    assert site_encoder_hidden(TrainConfig.load(tmp_path / "train_config.json"), 576, [0.0]) is None  # saved runs keep theirs
