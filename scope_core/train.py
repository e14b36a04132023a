"""`autoscope train`: prior → activation cache → (backbone SFT) → control-layer training.

Every phase writes under `runs/<run>/` and resumes: the cache by chunks, training from
`inverter/state.pt` (optimiser, step, RNG, elapsed time). Early stopping is on held-out
conditional loss, evaluated on *clean* query activations — the condition the sampler
will actually see — next to the unconditional backbone's loss on the same prompts.

`train()` reads as its phases, in order: `resumable_config` (keep or refuse an existing run's
configuration), `prepare_data` (prior, split, cache, ε), `build_generator` (backbone, token
ids, output vocabulary, SFT), `build_inverter`, `choose_conditions` (noise shell, neighbour
mix), `trunk_residuals` and `evaluation_set`, `make_optimiser` and `restore_checkpoint`,
`training_budget`, `fit_control_layers` (the loop: `draw_batch`, `optimiser_step`, `evaluate`,
`checkpoint`) and `summarise`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field, model_validator

from . import distributed as dd
from .cache import ActivationCache
from .data import PriorConfig, RunData, build_examples, filter_length, split_indices, split_validation
from .distances import Metric
from .eps import EpsChoice, choose_eps
from .errors import AutoscopeError
from .generator import (
    Backbone,
    GeneratorConfig,
    Inverter,
    ScratchConfig,
    arch_layers_prefix,
    backbone_state,
    build_backbone,
    full_prefix_start,
    graft_upper,
    own_block_parameters,
    whole_target_config,
    teacher_forced_loss,
)
from .neighbours import BallLists, neighbour_balls
from .shards import ShardedRows
from .noise import CosineNoise, EuclideanNoise, NoiseMode, make_noise
from .sites import Site, parse_sites
from .targets import Target, TargetConfig, load_target
from .devices import resolve_device
from .weight_average import WeightAverage


class TrainConfig(BaseModel):
    run: str = "default"
    runs_dir: str = "runs"
    target: TargetConfig = TargetConfig()
    prior: PriorConfig = PriorConfig()
    sites: str = Field("L18", description="sites the shared generator is trained on, e.g. L18 or L6,L12,L18,L24")
    backbone: str = Field("embedded", description="'embedded' (frozen pretrained SmolLM2), 'scratch', a hub id or path")
    arch: Literal["inversescope", "inversionview"] = "inversescope"
    sft: Literal["none", "full", "lora", "lora-upper"] = Field(
        "none", description="fine-tune the backbone on the prior before freezing it; lora-upper: LoRA only on the blocks from "
        "the first control block up, the blocks below staying the target's own (keeps the trunk shortcut and fused verification)")
    sft_minutes: float = 3.0
    upper_blocks: int | None = Field(
        None, ge=0, description="the shallow generator (NOTES §27): the target's own blocks up to the deepest site, then copies "
        "of only its last N blocks, fine-tuned with the control layers, so a sampled token costs fewer blocks. None (default): "
        "the whole frozen backbone (NOTES §38: on real prompts the copies do not generalise); 0: the same")
    scratch: ScratchConfig = ScratchConfig()
    control_layers: list[int] | None = Field(
        None, description="blocks that carry control layers; default: six spread from the block above the deepest site to "
        "the top (the target as its own frozen backbone), else three upper blocks")
    n_heads: int = Field(16, description="heads per control layer: the condition reaches each position as a gated sum of this many vectors")
    head_dim: int = 64
    metric: Metric = "cosine"
    eps_quantile: float = Field(0.05, description="default ε per site: this quantile of the prior's pairwise distances "
                                "(the ε-ball around a typical query holds this share of the prior)")
    eps: float | None = Field(None, description="absolute ε for every site (overrides eps_quantile)")
    noise_mode: NoiseMode = "kernel"
    noise_distance: float | None = Field(
        None, description="distance of the noise shell; default: the prior's median nearest-neighbour distance at the site "
        "(at most its ε), the scale at which the prior itself tells prompts apart (NOTES §38)")
    neighbour_mix: float | None = Field(
        None, ge=0.0, le=1.0, description="share of training examples conditioned on the clean activation of a prompt whose "
        "ε-ball they were drawn from, instead of on their own activation plus noise: the hard kernel's preimage "
        "distribution on the activation manifold (scope_core/neighbours.py, NOTES §24); 0 = the paper's noise only; "
        "default: from the data (`default_neighbour_mix`: where the ε-ball is dense with near variants of a prompt)")
    recipe: int = Field(3, description="defaults generation: 1 = before issue 24 (site-ε noise, 3 control layers of 8 heads, "
                        "shallow copies, mix 0.7); 2 = the whole frozen backbone, six control layers of 16 heads (NOTES §38); "
                        "3 = now: 2 with the site encoder read from the data, an MLP where every site trains without neighbours (NOTES §59). "
                        "Saved runs keep the one they were trained with")
    restrict_vocab: bool = Field(True, description="the generator outputs only token ids seen in the training prompts (+ end)")
    minutes: float = Field(8.0, description="wall-clock budget of control-layer training")
    total_minutes: float | None = Field(
        None, gt=0, description="wall-clock budget of the whole job (prior, caching, training): training gets what is left, "
        "at most `minutes` and at least 2 minutes; None: no limit")
    max_steps: int | None = Field(
        None, gt=0, description="also stop after this many optimiser steps: a budget that does not depend on the machine's "
        "load (benchmarks compare recipes at equal steps); the wall-clock budget still applies")
    min_steps: int | None = Field(
        None, gt=0, description="train at least this many optimiser steps whatever the clock: past the wall-clock budget "
        "(`minutes`, as cut by `total_minutes`) training goes on to this step, and the schedule decays over whichever of the "
        "two ends later. Why: how close FCR sits to the empirical reference depends on steps, not minutes (BENCHMARKS §25: "
        "item 5 holds at 600 steps and not at 430), and a slow host's clock gives fewer; None: the clock alone")
    condition_dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="dropout on the encoded condition while training: the control layers cannot key "
        "a whole prompt on a few coordinates of one activation (NOTES §42)")
    encoder_hidden: int | None = Field(
        None, ge=0, description="hidden width of an MLP site encoder (Linear, GELU, Linear); 0: the paper's linear map; None: the "
        "recipe's (3: twice the target's width where every site trains without neighbours, else linear, `site_encoder_hidden`; "
        "before: linear)")
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay of the control layers and the site encoder")
    weight_average: float | None = Field(
        0.99, ge=0.0, lt=1.0, description="evaluate and save an exponential moving average of the trained weights with this decay "
        "instead of the last step's (scope_core/weight_average.py): less of a run's end point is its last minibatches' noise, and "
        "its FCR sits nearer the empirical reference on both priors measured (NOTES §50, §52); None: the last step's weights "
        "(runs saved before the option)")
    init_from: str | None = Field(
        None, description="a trained run (its directory) whose control layers and site encoders start this one: pre-training on "
        "more prompts than the prior holds, without those prompts entering the prior that ε, FCR and copies are read from")
    batch_size: int = 32
    lr: float = 1e-3
    lr_schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="after warm-up: a cosine decay to a tenth of the rate over the budget (the share of `max_steps` spent "
        "when there is a step budget, else of the time budget; NOTES §44), or a constant rate (runs saved before the option)")
    warmup_steps: int = 50
    eval_every: int = 60
    eval_size: int = 192
    patience: int = 4
    cache_batch_size: int = 32
    processes: int = Field(1, ge=1, description="data-parallel processes for caching and control-layer training (`--processes`): "
                           "each takes every N-th caching batch and a 1/N slice of each global batch of `batch_size`; "
                           "rank 0 writes (scope_core/distributed.py). Not part of the run: a run resumes with any number")
    seed: int = 0

    @model_validator(mode="after")
    def _floor_within_ceiling(self) -> TrainConfig:
        if self.min_steps is not None and self.max_steps is not None and self.min_steps > self.max_steps:
            raise ValueError(f"min_steps {self.min_steps} is above max_steps {self.max_steps}: lower --min-steps or raise --max-steps")
        return self

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        """A run's saved configuration. Runs saved before an option existed get the value that
        reproduces what they did, not today's default."""
        raw = json.loads(path.read_text())
        raw.setdefault("neighbour_mix", 0.0)
        raw.setdefault("upper_blocks", 0)  # the whole frozen backbone, as every run before the shallow generator
        raw.setdefault("recipe", 1)  # saved before the recipe marker: site-ε noise, three control layers
        raw.setdefault("lr_schedule", "constant")  # saved before the schedule existed
        raw.setdefault("weight_average", None)  # saved before weight averaging existed: the last step's weights
        return cls.model_validate(raw)

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.run


class TrainResult(BaseModel):
    run_dir: str
    phases: dict[str, float]
    eps: list[EpsChoice]
    steps: int
    train_tokens: int
    heldout_loss: float | None  # on the validation split (prompts never trained on, apart from the held-out queries)
    heldout_loss_unconditional: float | None
    heldout_oov_rate: float = 0.0  # held-out tokens outside the generator's output vocabulary (not scored)
    # the weights training ended with (not the best saved): held-out loss, and the loss on as many
    # training prompts, clean conditions both (`final_fit`); None for runs summarised before them
    final_heldout_loss: float | None = None
    final_train_loss: float | None = None
    out_vocab_size: int | None = None
    generator: str = ""  # what the generator is made of, in words
    recipe: int = 3
    weight_average: float | None = None  # the decay of the weights evaluated and saved (None: the last step's)
    neighbour_mix: float | None = None  # the share used (read from the data unless given; mean over sites)
    density_ratio: float | None = None  # median nearest-neighbour distance / ε, the mix rule's input (mean over sites)
    neighbour_mix_per_site: dict[str, float] = {}
    density_ratio_per_site: dict[str, float] = {}
    noise_distance: dict[str, float] = {}  # per site, the noise shell used
    # per site, the temperature sampling decodes at unless told (`sampling_temperature`); a run saved
    # without it samples at 1, as it was measured
    sampling_temperature_per_site: dict[str, float] = {}
    processes: int = 1  # data-parallel processes that trained it (this call)
    tokens_per_s_per_process: float | None = None  # training tokens per second of one process (this call)
    stopped: str
    n_train: int
    n_heldout: int
    dropped_long: int


def _log(path: Path, record: dict) -> None:
    if not dd.is_main():  # one writer: rank 0
        return
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def prepare_run(cfg: TrainConfig, target: Target, progress: bool = True) -> tuple[RunData, ActivationCache, dict, int]:
    """Prompts, split and activation cache of the run (built or resumed). Returns
    (data, cache, timing of the caching phase, number of prompts dropped as too long)."""
    run = cfg.run_dir
    data_dir = run / "data"
    dropped = 0
    if not dd.is_main():  # rank 0 draws and saves the prompts and split; the others read them
        dd.barrier()
    if (data_dir / "split.json").exists():
        data = RunData.load(data_dir)
    else:
        examples = build_examples(cfg.prior)
        examples, dropped = filter_length(examples, target.text_token_counts([e.text for e in examples]), target.config.max_prompt_tokens)
        train, held = split_indices(len(examples), cfg.prior.heldout, cfg.prior.seed)
        train, valid = split_validation(train, cfg.prior.valid, cfg.prior.seed)
        data = RunData(examples, train, held, valid)
        data.save(data_dir)
    if dd.is_main():
        dd.barrier()
    dropped = dd.broadcast_from_main(dropped)
    sites = parse_sites(cfg.sites, target.n_layers, target.n_heads)
    cache = ActivationCache(run / "acts")
    timing = cache.build(target, data.texts, sites, batch_size=cfg.cache_batch_size, progress=progress, trunk_layer=trunk_layer_for(cfg, target))
    return data, cache, timing, dropped


DEFAULT_UPPER_BLOCKS = 4
# options whose defaults changed between recipes: a run resumed with all of them at their
# defaults resumes with the values it was trained with
RECIPE_FIELDS = ("recipe", "upper_blocks", "control_layers", "n_heads", "noise_distance", "neighbour_mix", "lr_schedule", "weight_average")


ENCODER_WIDTH = 2  # recipe 3: the MLP site encoder's hidden width, in multiples of the target's


def site_encoder_hidden(cfg: TrainConfig, d_model: int, mixes: Sequence[float] | None = None) -> int | None:
    """The site encoder's hidden width (None: the paper's linear map), read from the data with
    the neighbour mix: recipe 3 gives an MLP of twice the target's width where every site trains
    without neighbours (loose ε-balls: `site_neighbour_mixes` all 0), the linear map elsewhere.
    `mixes` None (before the data is read, as `plan` asks) counts the MLP, the larger of the two.

    Why an MLP there: the control layers' keys and values are linear in the encoded condition,
    so with a linear encoder the only non-linearity between ẑ and what they write is the tanh
    gate. On the real refusal sets (mix 0) an MLP of twice the width lowered held-out loss by
    0.06–0.08 nats and refusal in all four seed × draw cells, with `fcr` within 0.05 of the
    reference (BENCHMARKS §31). Why not where neighbours are mixed in (the generated prior): there
    it raised exact copies from 7–8% to 10–11% and one of issue 20's 18 pooled FCR cells left
    0.05 (−0.051), where the linear map holds all 18 (BENCHMARKS §32). The InversionView baseline
    keeps its paper's linear map."""
    if cfg.encoder_hidden is not None:
        return cfg.encoder_hidden or None
    if cfg.recipe < 3 or cfg.arch != "inversescope":
        return None
    return ENCODER_WIDTH * d_model if mixes is None or all(m == 0 for m in mixes) else None


def upper_blocks_for(cfg: TrainConfig, target: Target) -> int | None:
    """How many own upper blocks the generator has (None: the whole backbone, no shallow graft)."""
    if cfg.upper_blocks == 0:
        return None
    if cfg.upper_blocks is not None:
        return cfg.upper_blocks
    if cfg.recipe >= 2:  # the whole frozen backbone (NOTES §38)
        return None
    eligible = (cfg.backbone == target.name and cfg.arch == "inversescope" and cfg.sft == "none"
                and cfg.target.dtype == "float32" and cfg.control_layers is None)
    if not eligible:
        return None
    return min(DEFAULT_UPPER_BLOCKS, target.n_layers - shallow_split(cfg, target)) or None


N_SPREAD_CONTROL = 6


def spread_control_layers(first: int, n_layers: int, count: int = N_SPREAD_CONTROL) -> list[int]:
    """`count` blocks evenly spread from `first` to the top block (all of them when fewer).

    Why from the block above the deepest site: the trunk shortcut caches the residual entering
    the first control block, so training runs only the blocks from there up; and the condition
    reaches the text's representation as early as the target's own blocks allow (NOTES §38)."""
    top = n_layers - 1
    if first > top:
        return []
    if top - first + 1 <= count:
        return list(range(first, top + 1))
    return sorted({round(first + i * (top - first) / (count - 1)) for i in range(count)})


def shares_target(cfg: TrainConfig, target: Target) -> bool:
    """The generator's backbone is the target model itself, frozen and unchanged (in whatever
    dtype the target runs: the generator shares its weight tensors, never a second copy)."""
    return cfg.backbone == target.name and cfg.sft == "none" and upper_blocks_for(cfg, target) is None


def shares_lower_blocks(cfg: TrainConfig, target: Target) -> bool:
    """The generator's backbone runs the target's own modules below the first control block
    (the frozen target itself, or `graft_upper` of it with fine-tuned upper blocks)."""
    return cfg.backbone == target.name and cfg.sft in ("none", "lora-upper")


def shallow_split(cfg: TrainConfig, target: Target) -> int:
    """First block of a shallow generator's own part: the one above the deepest site, so that
    every site is read from the target's own blocks (trunk shortcut, fused verification)."""
    return max(s.layer for s in parse_sites(cfg.sites, target.n_layers, target.n_heads)) + 1


def control_blocks(cfg: TrainConfig, target: Target) -> list[int]:
    """Blocks (in the generator's numbering) that carry control layers."""
    from .generator import default_control_layers

    n = upper_blocks_for(cfg, target)
    if n is None:
        if cfg.control_layers:
            return cfg.control_layers
        if cfg.recipe >= 2 and cfg.arch == "inversescope" and cfg.backbone == target.name:
            spread = spread_control_layers(shallow_split(cfg, target), target.n_layers)
            if spread:
                return spread
        return default_control_layers(target.n_layers)
    k = shallow_split(cfg, target)
    own = list(range(k, k + n))
    layers = cfg.control_layers or (own[:-1] if n > 1 else own)
    if min(layers) != k or not set(layers) <= set(own):
        raise AutoscopeError(f"with --upper-blocks {n} the control layers must be among the generator's own blocks "
                             f"{k}-{k + n - 1} and include block {k}; got {layers}")
    return layers


def first_control_block(cfg: TrainConfig, target: Target) -> int:
    return min(control_blocks(cfg, target))


def trunk_layer_for(cfg: TrainConfig, target: Target) -> int | None:
    """Block whose input the activation cache also keeps (see `Inverter.loss_from_trunk`)."""
    if cfg.arch != "inversescope" or not shares_lower_blocks(cfg, target):
        return None
    return first_control_block(cfg, target)


def nearest_neighbour_median(site_stats: dict, metric: str) -> float | None:
    """Median distance from a prior prompt to its nearest other prompt at the site (from the
    cache's statistics, a sample of 2,000 prompts)."""
    nn = site_stats.get(metric, {}).get("nearest_neighbour", {})
    return float(nn["0.5"]) if "0.5" in nn else None


def default_noise_distance(cfg: TrainConfig, site_stats: dict, eps: EpsChoice) -> float:
    """The noise shell of a site: recipe 1 used the site's ε; now the prior's median
    nearest-neighbour distance there, at most ε. Why: at a clean query the generator samples
    about as tightly as its training conditions were blurred, and the ε of a wide prior (real
    prompts: 0.156 at L18) blurs three times more than the prior's own spacing (0.059);
    on real prompts the tighter shell cut refusal at ε 0.1 from 0.53 to 0.45 (NOTES §38)."""
    if cfg.recipe < 2:
        return eps.eps
    nn = nearest_neighbour_median(site_stats, eps.metric)
    return eps.eps if nn is None else min(eps.eps, nn)


DENSE_RATIO = 0.25  # prior's nearest-neighbour median / ε below which ε-balls hold near variants of a prompt
DENSE_MIX = 0.7


def site_density_ratios(site_stats: list[dict], eps: list[EpsChoice]) -> list[float | None]:
    """Per site, (median nearest-neighbour distance) / ε: how densely the prior fills a typical
    ε-ball with close variants (generated refusal prior at L18: 0.16; real prompts: 0.38)."""
    return [nn / e.eps if (nn := nearest_neighbour_median(st, e.metric)) is not None and e.eps > 0 else None
            for st, e in zip(site_stats, eps)]


def density_ratio(site_stats: list[dict], eps: list[EpsChoice]) -> float | None:
    """Mean over sites of the density ratio (what the log and the train table report in one number)."""
    ratios = [r for r in site_density_ratios(site_stats, eps) if r is not None]
    return sum(ratios) / len(ratios) if ratios else None


def default_neighbour_mix(cfg: TrainConfig, site_stats: list[dict], eps: list[EpsChoice]) -> float:
    """Neighbour conditioning where the ε-balls are dense with variants of a prompt, none where
    they are loose. Why: on the generated prior a ball holds the same request with other slot
    fillers, and training on ball members is what brings its FCR to the empirical reference
    (NOTES §24); on real prompts a ball holds unrelated requests, training on them blurs the
    generator (refusal at ε 0.1: 0.85 with m = 0.7, 0.58 without) and the reference is met
    without it (NOTES §38)."""
    r = density_ratio(site_stats, eps)
    return DENSE_MIX if r is not None and r <= DENSE_RATIO else 0.0


def site_neighbour_mixes(cfg: TrainConfig, site_stats: list[dict], eps: list[EpsChoice]) -> list[float]:
    """The mix per site: `--neighbour-mix` everywhere when given, else the density rule read at
    each site on its own. Why per site: one prior is dense at some sites and loose at others
    (refusal at L6/L12/L18/L24: ratios 0.26/0.24/0.16/0.59); a rule on the mean (0.31) trained
    every site without neighbours, and the generator's κ ran far above the empirical
    reference at the dense sites (BENCHMARKS §11, NOTES §42)."""
    if cfg.neighbour_mix is not None:
        return [cfg.neighbour_mix] * len(eps)
    return [default_neighbour_mix(cfg, [st], [e]) for st, e in zip(site_stats, eps)]


LOOSE_TEMPERATURE = 0.75  # sampling temperature where a generator trained on noise alone meets loose ε-balls


def sampling_temperature(mix: float, ratio: float | None) -> float:
    """The temperature `sample`, `fcr` and `explore` decode a site at unless told: 0.75 where
    the site's ε-balls are loose (density ratio above `DENSE_RATIO`) and the generator was
    trained without neighbours (mix 0), else 1.

    Why: with mix 0 the generator learns P(x | z(x) ≈ a) at the noise shell's width, and `fcr`
    anchors every sample on a ball member (`Scope.ball_share`), so the ball supplies the spread
    FCR needs; what the generator adds beyond its shell on unseen queries is error from fitting
    few, unrelated prompts (real refusal sets: held-out loss 0.6–0.8 nats above the training
    loss), and it lands mostly outside ε. Sampling cooler removes part of it: on the real refusal
    sets (three training seeds, two draws of 60 queries) `sample`'s refusal at ε 0.1 falls from
    0.44 to 0.35 and its accepted-novel rate rises from 56 to 65 per 100, while `fcr`'s
    harmfulness gap stays within 0.05 of the reference at ε 0.1 and 0.15 for every seed
    (BENCHMARKS §28; 0.8 did the same within one sampling's noise). Where a mix was trained (dense balls: the generated prior) the
    generator's own spread is the ball's, and a cooler one doubles its copies of training prompts
    (§27), so it samples at 1."""
    return LOOSE_TEMPERATURE if mix == 0 and ratio is not None and ratio > DENSE_RATIO else 1.0


def site_eps(cfg: TrainConfig, cache: ActivationCache, sites: list[Site]) -> list[EpsChoice]:
    stats = cache.stats()
    return [choose_eps(stats[s.name], s.name, cfg.metric, cfg.eps_quantile if cfg.eps is None else None, cfg.eps) for s in sites]


def _backbone_for(cfg: TrainConfig, target: Target, data: RunData, mixes: Sequence[float]) -> tuple[Backbone, GeneratorConfig]:
    site_names = [s.name for s in parse_sites(cfg.sites, target.n_layers, target.n_heads)]
    gcfg = GeneratorConfig(
        backbone=cfg.backbone, arch=cfg.arch, sites=site_names, d_act=target.d_model,
        control_layers=cfg.control_layers or (control_blocks(cfg, target) if cfg.backbone == target.name and cfg.arch == "inversescope" else None),
        n_heads=cfg.n_heads, head_dim=cfg.head_dim, encoder_hidden=site_encoder_hidden(cfg, target.d_model, mixes),
        system_prompt=cfg.target.system_prompt, scratch=cfg.scratch,
        backbone_weights_saved=cfg.backbone == "scratch" or cfg.sft != "none",
        max_tokens=max(GeneratorConfig.model_fields["max_tokens"].default, cfg.target.max_prompt_tokens + 4),
    )
    if cfg.backbone == "scratch":
        ids = target.tokenizer([data.examples[i].text for i in data.train], add_special_tokens=False).input_ids
        vocab = {t for s in ids for t in s}
        tok = target.tokenizer
        vocab |= {tok.eos_token_id} | ({tok.bos_token_id} if tok.bos_token_id is not None else set())
        if tok.unk_token_id is not None:
            vocab.add(tok.unk_token_id)
        gcfg.vocab = sorted(vocab) + [tok.pad_token_id] if tok.pad_token_id not in vocab else sorted(vocab)
        return build_backbone(gcfg, tokenizer=tok, device=target.device), gcfg
    n_upper = upper_blocks_for(cfg, target)
    if n_upper is not None:
        if cfg.backbone != target.name or cfg.arch != "inversescope" or cfg.sft != "none" or cfg.target.dtype != "float32":
            raise AutoscopeError("--upper-blocks needs the target itself as the backbone (--backbone embedded or the target's id), "
                                 "--arch inversescope, --sft none and a float32 target")
        k = shallow_split(cfg, target)
        if n_upper > target.n_layers - k:
            raise AutoscopeError(f"--upper-blocks {n_upper}: the target has only {target.n_layers - k} blocks above "
                                 f"the deepest site (block {k - 1}); pass at most that many")
        gcfg.own_blocks_from, gcfg.upper_blocks = k, n_upper
        gcfg.control_layers, gcfg.backbone_weights_saved = control_blocks(cfg, target), True
        return build_backbone(gcfg, tokenizer=target.tokenizer, model=graft_upper(target.model, k, n_upper)), gcfg
    if shares_target(cfg, target):
        # frozen and identical to the target: share the weights (hooks are inert outside sampling)
        return build_backbone(gcfg, tokenizer=target.tokenizer, model=target.model), gcfg
    if cfg.sft == "lora-upper":
        if cfg.backbone != target.name or cfg.arch != "inversescope":
            raise AutoscopeError("--sft lora-upper needs the target itself as the backbone (--backbone embedded or the target's id) "
                                 "and --arch inversescope; use --sft lora otherwise")
        k = first_control_block(cfg, target)
        gcfg.own_blocks_from = k
        return build_backbone(gcfg, tokenizer=target.tokenizer, model=graft_upper(target.model, k)), gcfg
    return build_backbone(gcfg, device=target.device, dtype=cfg.target.dtype), gcfg


def finetune_backbone(bb: Backbone, train_ids: list[list[int]], held_ids: list[list[int]], mode: str, minutes: float, lr: float, batch_size: int,
                      seed: int, log_path: Path, progress: bool, from_block: int = 0) -> dict:
    """Step 1 of the paper: fit the backbone to P(X) (full or LoRA), early-stopped on
    held-out LM loss; the best weights are kept and the backbone is frozen again."""
    model = bb.model
    if mode in ("lora", "lora-upper"):
        from peft import LoraConfig, get_peft_model

        targets = [n for n in ("q_proj", "k_proj", "v_proj", "o_proj", "c_attn", "c_proj") if any(m.endswith(n) for m, _ in model.named_modules())]
        where = {}
        if mode == "lora-upper":  # adapters only on the backbone's own blocks (graft_upper); the shared ones stay the target's
            where = {"layers_to_transform": list(range(from_block, bb.arch.n_layers)), "layers_pattern": arch_layers_prefix(model).split(".")[-1]}
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets, lora_dropout=0.0, **where))
        bb.model = model
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    rng = np.random.default_rng(seed)

    def held_loss() -> float:
        model.eval()
        tot, n = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(held_ids), 64):
                chunk = held_ids[i : i + 64]
                loss, k = teacher_forced_loss(bb, chunk, None, full_prefix_start(bb, len(chunk)))
                tot, n = tot + float(loss) * k, n + k
        model.train()
        return tot / max(n, 1)

    best, best_state, bad, step = math.inf, None, 0, 0
    evaluated_at, losses = 0, []
    trained = {n for n, p in model.named_parameters() if p.requires_grad}

    def evaluate(train_loss: float | None) -> bool:
        """Held-out loss now; keeps the best weights, and says when three evaluations in a row
        have not improved on them (early stopping). Step 0 is evaluated too, so a fit that
        never helps leaves the backbone as it was. Without held-out prompts nothing is
        evaluated and the fit keeps its last weights."""
        nonlocal best, best_state, bad, last_eval, evaluated_at
        last_eval, evaluated_at = time.perf_counter(), step
        if not held_ids:
            return False
        hl = held_loss()
        losses.append(hl)
        _log(log_path, {"phase": "sft", "step": step, "train_loss": train_loss, "heldout_loss": hl})
        if hl < best:
            best, bad = hl, 0
            # only what trains (LoRA adapters, or every weight for a full fit), kept on the CPU
            best_state = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if n in trained}
            return False
        bad += 1
        return bad >= 3

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(minutes * 60), desc=f"backbone SFT ({mode})", unit="s")
    evaluate(None)
    t0 = last_eval = time.perf_counter()  # the budget is for fitting
    while time.perf_counter() - t0 < minutes * 60:
        idx = rng.integers(0, len(train_ids), batch_size)
        batch = [train_ids[i] for i in idx]
        loss, _ = teacher_forced_loss(bb, batch, None, full_prefix_start(bb, len(batch)))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        # every 100 steps or every minute, whichever comes first: on a slow machine a 3-minute
        # budget is a few dozen steps, and an SFT that is never evaluated keeps whatever it ends on
        if (step % 100 == 0 or time.perf_counter() - last_eval >= 60) and evaluate(float(loss.detach())):
            break
        if bar is not None:
            bar.n = min(int(time.perf_counter() - t0), bar.total)
            bar.set_postfix(loss=f"{float(loss):.3f}", best=f"{best:.3f}")
    if bar is not None:
        bar.close()
    if step > evaluated_at:
        evaluate(float(loss.detach()))  # the steps since the last evaluation count too
    if best_state is not None:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in best_state:
                    p.copy_(best_state[n])
    if mode in ("lora", "lora-upper"):
        bb.model = model.merge_and_unload()
    bb.model.eval()
    for p in bb.model.parameters():
        p.requires_grad_(False)
    bb._prefix_kv = None
    def finite(x: float | None) -> float | None:  # backbone_sft.json stays strict JSON
        return x if x is not None and math.isfinite(x) else None

    return {"sft_heldout_loss": finite(best), "sft_heldout_loss_before": finite(losses[0] if losses else None),
            "sft_steps": step, "sft_evaluations": len(losses)}


def describe_generator(gcfg: GeneratorConfig, target: Target) -> str:
    """One line for the result table: which blocks the generator runs and where it is conditioned."""
    ctl = f"control layers in blocks {', '.join(map(str, gcfg.control_layers or []))}" if gcfg.arch == "inversescope" else "condition as keys/values"
    if gcfg.encoder_hidden:
        ctl += f"; MLP site encoder (hidden {gcfg.encoder_hidden})"
    if gcfg.upper_blocks is not None and gcfg.own_blocks_from is not None:
        k, n, m = gcfg.own_blocks_from, target.n_layers, gcfg.upper_blocks
        return (f"shallow: the target's blocks 0-{k - 1}, then fine-tuned copies of its blocks {n - m}-{n - 1} "
                f"(as blocks {k}-{k + m - 1}; {k + m} per token instead of {n}); {ctl}")
    return f"{gcfg.backbone} backbone{' (own upper blocks from ' + str(gcfg.own_blocks_from) + ')' if gcfg.own_blocks_from else ''}; {ctl}"


def unconditional_loss(target: Target, gcfg: GeneratorConfig, ids: list[list[int]]) -> float:
    """Held-out loss of the full frozen target as the generator's backbone, without a condition
    (over the same output vocabulary): the reference a shallow generator is compared with."""
    bb = build_backbone(whole_target_config(gcfg), tokenizer=target.tokenizer, model=target.model)
    tot, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(ids), 64):
            chunk = ids[i : i + 64]
            cache = bb.prefix_cache(len(chunk))
            first = bb.to_internal(torch.tensor(bb.prefix_ids[-1:]).expand(len(chunk), -1))
            if cache is None:
                cache, first = None, full_prefix_start(bb, len(chunk))
            loss, k = teacher_forced_loss(bb, chunk, cache, first)
            tot, n = tot + float(loss) * k, n + k
    return tot / max(n, 1)


def _batch_loss(inv: Inverter, ids: list[list[int]], c: torch.Tensor | None, trunk: list[torch.Tensor] | None) -> tuple[torch.Tensor, int]:
    if trunk is not None and all(len(t) >= len(s) - 1 for t, s in zip(trunk, ids)):
        return inv.loss_from_trunk(trunk, ids, c)
    return inv.loss(ids, c)


def _eval_losses(inv: Inverter, ids: list[list[int]], z: torch.Tensor, site_idx: torch.Tensor, conditional: bool = True,
                 trunk: list[torch.Tensor] | None = None) -> float:
    tot, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(ids), 64):
            sl = slice(i, i + 64)
            c = inv.encode(z[sl], site_idx[sl]) if conditional else None
            loss, k = _batch_loss(inv, ids[sl], c, trunk[sl] if trunk is not None else None)
            tot, n = tot + float(loss) * k, n + k
    return tot / max(n, 1)


def _check_trunk(inv: Inverter, ids: list[list[int]], trunk: list[torch.Tensor]) -> bool:
    """The shortcut must give the backbone's own loss; if not (an architecture whose
    stack cannot be entered midway), train the slow way."""
    try:
        with torch.no_grad():
            a, _ = inv.loss(ids, None)
            b, _ = inv.loss_from_trunk(trunk, ids, None)
        return abs(float(a) - float(b)) < 1e-2
    except Exception:
        return False


UPPER_LR_FACTOR = 0.1  # a shallow generator's pretrained blocks move at a tenth of the control layers' rate
MIN_TRAINING_S = 120.0  # a job budget never cuts training below this: an untrained inverter is no use
FINISH_RESERVE_S = 30.0  # the last held-out evaluation and checkpoint, after the training clock stops


def training_seconds(cfg: TrainConfig, trained_s: float, job_elapsed_s: float) -> float:
    """How long control-layer training may run in total (`trained_s` already done).

    Why a job budget: "trained and ready to explore in 15 minutes" is a promise about the
    whole command, and activation caching alone takes 4 to 9 minutes depending on the host
    (BENCHMARKS §2). With `total_minutes`, training gets what caching left, up to `minutes`,
    so a slow host trains for less rather than running late; the cut is logged and shown."""
    full = cfg.minutes * 60
    if cfg.total_minutes is None:
        return full
    left = cfg.total_minutes * 60 - job_elapsed_s - FINISH_RESERVE_S
    return min(full, max(min(full, MIN_TRAINING_S), trained_s + left))


# ---------------------------------------------------------------------------
# `train()` and its phases. Each phase has one job and keeps the order of every step that
# draws random numbers (torch's global generator, the numpy generators), so that a seeded run
# gives the same numbers, the same log records and the same checkpoints as it always did.


@dataclass
class PreparedRun:
    """What the data phase leaves behind: the prompts and their split, the activation cache,
    the sites and each site's ε."""

    data: RunData
    cache: ActivationCache
    sites: list[Site]
    eps: list[EpsChoice]
    dropped: int  # prompts dropped as too long


@dataclass
class GeneratorParts:
    """The generator's backbone and configuration, and the prompts it learns from (training
    split) and is early-stopped on (validation split), as its token ids."""

    bb: Backbone
    gcfg: GeneratorConfig
    train_ids: list[list[int]]
    valid_ids: list[list[int]]
    oov_rate: float  # held-out tokens outside the restricted output vocabulary
    sft_mode: str


@dataclass
class Conditions:
    """What the control layers are conditioned on in training: per site the cached
    activations, the noise around them, and (with a neighbour mix) the ε-balls to draw from."""

    acts: dict[str, ShardedRows]  # memory-mapped, read by row
    stats: dict
    mix: float  # the share over all training examples (sites are drawn uniformly)
    mixes: dict[str, float]  # per site
    noises: dict[str, CosineNoise | EuclideanNoise]
    balls: dict[str, BallLists]


@dataclass
class EvalSet:
    """The validation batch early stopping reads: clean activations (what the sampler will see),
    sites cycled, and the unconditional backbone's loss on the same prompts as the reference."""

    ids: list[list[int]]
    z: torch.Tensor
    site: torch.Tensor
    trunk: list[torch.Tensor] | None
    unconditional: float


@dataclass
class Fit:
    """The optimisation state a checkpoint saves and a resume restores; `st` (step, tokens,
    elapsed, best, bad, stopped) is saved as the plain dict it always was."""

    params: list[torch.nn.Parameter]
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    rng: np.random.Generator
    st: dict = field(default_factory=lambda: {"step": 0, "tokens": 0, "elapsed": 0.0, "best": math.inf, "bad": 0, "stopped": ""})
    own_tokens: int = 0  # tokens this process trained on in this call (not saved: for tokens/s per process)
    budget_spent: dict = field(default_factory=lambda: {"share": 0.0})  # read by the schedule (`lr_decay`)
    average: WeightAverage | None = None  # what is evaluated and saved, where the run averages its weights

    def evaluated(self):
        """The weights evaluation and saving read: the average where there is one, else the live ones."""
        return self.average.applied() if self.average is not None else nullcontext()


def _say(progress: bool, text: str) -> None:
    """A dim line on stderr, for what training chose from the data (only with progress)."""
    if progress:
        from rich.console import Console

        Console(stderr=True).print(f"[dim]{text}[/dim]")


def resumable_config(cfg: TrainConfig) -> TrainConfig:
    """The configuration this call trains with. Why: a run is resumed by rerunning the same
    command, so a run that exists keeps each recipe option it was trained with that this call
    leaves at its default (one by one: a run saved before today's default of one option, with
    another option given, still resumes with the same command), and any other difference is
    refused rather than mixed in."""
    run = cfg.run_dir
    cfg_path = run / "train_config.json"
    if not (cfg_path.exists() and (run / "data" / "split.json").exists()):
        return cfg.model_copy(update={"target": cfg.target.resolved()})
    old = TrainConfig.load(cfg_path)
    if cfg.target.dtype == "auto":  # the run keeps the dtype its cache was built in
        cfg = cfg.model_copy(update={"target": cfg.target.model_copy(update={"dtype": old.target.dtype})})
    cfg = cfg.model_copy(update={f: getattr(old, f) for f in RECIPE_FIELDS if getattr(cfg, f) == TrainConfig.model_fields[f].default})
    cfg = cfg.model_copy(update={"target": cfg.target.resolved()})
    # budgets: a run resumes with a longer one; the device: a run resumes on another machine
    keep: dict = {"minutes": True, "total_minutes": True, "max_steps": True, "min_steps": True, "patience": True, "eval_every": True, "processes": True,
                  "target": {"device"}}
    if old.model_dump(exclude=keep) != cfg.model_dump(exclude=keep):
        raise AutoscopeError(f"run {run} exists with a different configuration; pass a new --run name, or the same options to resume it")
    return cfg


def prepare_data(cfg: TrainConfig, target: Target, progress: bool, phases: dict[str, float]) -> PreparedRun:
    """Prior, split and activation cache (built or resumed), then ε per site. The configuration
    is saved only once the prompts exist, so that a failed start leaves no stale config."""
    run = cfg.run_dir
    t = time.perf_counter()
    data, cache, timing, dropped = prepare_run(cfg, target, progress)
    if dd.is_main():
        (run / "train_config.json").write_text(cfg.model_dump_json(indent=1))
    phases["caching_s"] = time.perf_counter() - t
    phases["caching_tokens_per_s"] = timing["tokens"] / timing["seconds"] if timing["seconds"] > 0 and timing["tokens"] else 0.0
    if dd.active():
        phases["caching_tokens_per_s_per_process"] = timing["tokens_per_s_per_process"]
    sites = cache.sites
    eps = site_eps(cfg, cache, sites)
    if dd.is_main():
        (run / "eps.json").write_text(json.dumps([e.model_dump() for e in eps], indent=1))
    return PreparedRun(data, cache, sites, eps, dropped)


def _restrict_vocab(cfg: TrainConfig, bb: Backbone, gcfg: GeneratorConfig, data: RunData, train_ids: list[list[int]]) -> float:
    """Restrict the generator's outputs to the training prompts' tokens (NOTES §8) and return
    the share of held-out tokens it can no longer produce, which the result reports."""
    if not cfg.restrict_vocab or cfg.backbone == "scratch":
        return 0.0
    gcfg.out_vocab = sorted({t for s in train_ids for t in s})
    bb.restrict_output(gcfg.out_vocab)
    held_tokens = [t for s in bb.encode([data.examples[i].text for i in data.heldout], gcfg.max_tokens) for t in s]
    vocab_set = set(gcfg.out_vocab)
    return sum(t not in vocab_set for t in held_tokens) / max(len(held_tokens), 1)


def _finetune_if_asked(cfg: TrainConfig, parts: GeneratorParts, inv_dir: Path, progress: bool) -> None:
    """The paper's step 1 (fit the backbone to the prior) where the run asks for it; skipped on
    a resume, whose checkpoint already holds the fine-tuned backbone."""
    if parts.sft_mode == "none" or (inv_dir / "state.pt").exists():
        return
    info = finetune_backbone(parts.bb, parts.train_ids, parts.valid_ids[: cfg.eval_size], parts.sft_mode, cfg.sft_minutes,
                             lr=1e-3 if cfg.backbone == "scratch" else 1e-4, batch_size=cfg.batch_size, seed=cfg.seed,
                             log_path=inv_dir / "log.jsonl", progress=progress, from_block=parts.gcfg.own_blocks_from or 0)
    (inv_dir / "backbone_sft.json").write_text(json.dumps(info, allow_nan=False))


def build_generator(cfg: TrainConfig, target: Target, data: RunData, inv_dir: Path, progress: bool,
                    mixes: Sequence[float]) -> GeneratorParts:
    """The generator's backbone, the prompts as its token ids, its output vocabulary, and its
    fine-tuning where asked. Early stopping and the reported held-out loss use the validation
    split, never the held-out queries that sampling and FCR are measured on. `mixes` (the
    neighbour mix per site) picks the site encoder (`site_encoder_hidden`)."""
    bb, gcfg = _backbone_for(cfg, target, data, mixes)
    train_ids = bb.encode([data.examples[i].text for i in data.train], gcfg.max_tokens)
    valid_ids = bb.encode([data.examples[i].text for i in data.valid], gcfg.max_tokens)
    oov_rate = _restrict_vocab(cfg, bb, gcfg, data, train_ids)
    parts = GeneratorParts(bb, gcfg, train_ids, valid_ids, oov_rate, "full" if cfg.backbone == "scratch" else cfg.sft)
    _finetune_if_asked(cfg, parts, inv_dir, progress)
    return parts


def build_inverter(cfg: TrainConfig, parts: GeneratorParts, prepared: PreparedRun, inv_dir: Path) -> Inverter:
    """The inverter, seeded, with its site encoders normalised by the cache's statistics; on a
    resume whose backbone was trained too (SFT, shallow copies) the backbone's weights come
    back from the last checkpoint."""
    torch.manual_seed(cfg.seed)
    inv = Inverter(parts.gcfg, parts.bb)
    for s in prepared.sites:
        m, sc = prepared.cache.mean_scale(s)
        inv.encoder.set_stats(s.name, m, sc)
    if (inv_dir / "state.pt").exists() and (parts.sft_mode != "none" or parts.gcfg.upper_blocks is not None):
        from safetensors.torch import load_file

        parts.bb.model.load_state_dict(backbone_state(load_file(str(inv_dir / "last.safetensors"))), strict=False)
        parts.bb._prefix_kv = None
    elif cfg.init_from and not (inv_dir / "state.pt").exists():
        start_from(inv, Path(cfg.init_from))
    return inv


def start_from(inv: Inverter, run_dir: Path) -> None:
    """Load another run's best control layers and site encoders into `inv` (a fresh start).
    The site encoders' standardisation stays this run's: it is read from this prior's cache,
    and the pre-trained weights act on standardised activations. Every conditioning weight
    must be there with its shape, or the two generators are not the same design."""
    from safetensors.torch import load_file

    path = run_dir / "inverter" / "inverter.safetensors"
    if not path.exists():
        raise AutoscopeError(f"--init-from {run_dir}: no trained inverter at {path}; train that run first "
                             "(autoscope train --run NAME --data MORE_PROMPTS.json --sites ...)")
    saved = {k: v for k, v in load_file(str(path)).items() if not k.startswith("backbone.")}
    own = {k: v for k, v in inv.state_dict().items() if not k.startswith("backbone.")}
    stats = {f"encoder.{name}" for name, _ in inv.encoder.named_buffers()}  # this prior's standardisation
    wanted = {k for k in own if k not in stats}
    missing = sorted(k for k in wanted if k not in saved)
    wrong = sorted(k for k in wanted & saved.keys() if saved[k].shape != own[k].shape)
    if missing or wrong:
        raise AutoscopeError(f"--init-from {run_dir}: its generator differs from this one's (missing {missing[:3]}, other shapes "
                             f"{wrong[:3]}); train it with the same --sites, control layers, heads and head size. "
                             f"{_encoder_hint(run_dir, inv.config.encoder_hidden)}")
    inv.load_state_dict({k: saved[k] for k in wanted}, strict=False)


def _encoder_hint(run_dir: Path, own: int | None) -> str:
    """What to pass so that the two site encoders match: recipe 3 reads the encoder from each
    prior's ε-balls, so a run pre-trained before recipe 3 or on a prior of the other kind can
    carry the other one."""
    path = run_dir / "inverter" / "generator.json"
    if not path.exists():
        return ""
    theirs = GeneratorConfig.model_validate_json(path.read_text()).encoder_hidden
    if theirs == own:
        return "The site encoders match; the difference is elsewhere."

    def name(hidden: int | None) -> str:
        return f"an MLP of hidden width {hidden}" if hidden else "the linear map"

    return (f"Its site encoder is {name(theirs)} and this run's {name(own)}: pass --encoder-hidden {theirs or 0} "
            "to train this run with the pre-trained one.")


def _make_noises(cfg: TrainConfig, target: Target, prepared: PreparedRun, stats: dict) -> dict[str, CosineNoise | EuclideanNoise]:
    """The paper's training noise per site, its shell at the chosen noise distance (none for
    the InversionView baseline)."""
    noises = {}
    mode = cfg.noise_mode if cfg.arch == "inversescope" else "none"
    for s, e in zip(prepared.sites, prepared.eps):
        mean, _ = prepared.cache.mean_scale(s)
        dist = cfg.noise_distance if cfg.noise_distance is not None else default_noise_distance(cfg, stats[s.name], e)
        noises[s.name] = make_noise(cfg.metric, target.d_model, mode, dist, center=mean)
    return noises


def _log_noise(cfg: TrainConfig, prepared: PreparedRun, acts: dict[str, ShardedRows], noises: dict, log_path: Path,
               progress: bool) -> None:
    """Log the noise distances actually produced on training prompts. Why: the shell, not ε,
    is what the generator learns to be tolerant of, and its quantiles show it."""
    from .distances import distance as dist_fn

    rng_probe = np.random.default_rng(cfg.seed + 7)
    report = {}
    for s in prepared.sites:
        z = acts[s.name][torch.tensor(prepared.data.train[:512])]
        mean, _ = prepared.cache.mean_scale(s)
        d = dist_fn(noises[s.name](z, rng_probe), z, cfg.metric, mean).numpy()
        report[s.name] = {"q05": float(np.quantile(d, 0.05)), "q50": float(np.quantile(d, 0.5)), "q95": float(np.quantile(d, 0.95)),
                          **noises[s.name].describe()}
    _log(log_path, {"phase": "noise", "noise_distance_quantiles": report})
    for s in prepared.sites:
        r = report[s.name]
        _say(progress, f"noise at {s.name}: {cfg.metric} distance q05/q50/q95 = {r['q05']:.4f}/{r['q50']:.4f}/{r['q95']:.4f} (mode {r['mode']})")


def _neighbour_balls(cfg: TrainConfig, prepared: PreparedRun, acts: dict[str, ShardedRows], mixes: dict[str, float], log_path: Path,
                     progress: bool) -> dict[str, BallLists]:
    """Per site with a mix, each training prompt's ε-ball among the training prompts: where the
    mix draws a condition's text from (NOTES §24); the ball sizes are logged."""
    balls = {}
    train_index = torch.tensor(prepared.data.train)
    for s, e in zip(prepared.sites, prepared.eps):
        mix = mixes[s.name]
        if mix == 0:
            continue
        mean, _ = prepared.cache.mean_scale(s)
        balls[s.name] = neighbour_balls(acts[s.name][train_index], e.eps, cfg.metric, mean, seed=cfg.seed)
        sizes = balls[s.name].sizes()
        report = {"eps": e.eps, "q05": int(np.quantile(sizes, 0.05)), "q50": int(np.median(sizes)), "q95": int(np.quantile(sizes, 0.95))}
        if not balls[s.name].whole:  # past WHOLE_LISTS_MAX_N prompts: a uniform subset of each ball is kept
            report["members_kept_max"] = int(balls[s.name].stored().max())
        _log(log_path, {"phase": "neighbours", "site": s.name, "ball_sizes": report, "mix": mix})
        _say(progress, f"ε-balls at {s.name} (ε {e.eps:.4g}): training prompts per ball q05/q50/q95 = "
                       f"{report['q05']}/{report['q50']}/{report['q95']}; {mix:.0%} of its examples conditioned on a neighbour")
    return balls


def choose_conditions(cfg: TrainConfig, target: Target, prepared: PreparedRun, site_mixes: Sequence[float], log_path: Path,
                      progress: bool, phases: dict[str, float]) -> Conditions:
    """The training conditions, read from the data unless given: the noise shell per site and
    the neighbour mix per site (`site_neighbour_mixes`, README "Training conditions"); what was
    chosen is logged and printed."""
    acts = {s.name: prepared.cache.site(s) for s in prepared.sites}  # memory-mapped: rows are read when indexed
    stats = prepared.cache.stats()
    site_stats = [stats[s.name] for s in prepared.sites]
    mixes = dict(zip([s.name for s in prepared.sites], site_mixes))
    mix = sum(mixes.values()) / len(mixes)
    noises = _make_noises(cfg, target, prepared, stats)
    _log_noise(cfg, prepared, acts, noises, log_path, progress)
    _log(log_path, {"phase": "recipe", "recipe": cfg.recipe, "neighbour_mix": mix, "neighbour_mix_from_data": cfg.neighbour_mix is None,
                    "density_ratio": density_ratio(site_stats, prepared.eps), "neighbour_mix_per_site": mixes,
                    "density_ratio_per_site": dict(zip(mixes, site_density_ratios(site_stats, prepared.eps)))})
    balls: dict[str, BallLists] = {}
    if mix > 0 and cfg.arch == "inversescope":
        t = time.perf_counter()
        balls = _neighbour_balls(cfg, prepared, acts, mixes, log_path, progress)
        phases["neighbours_s"] = time.perf_counter() - t
    return Conditions(acts, stats, mix, mixes, noises, balls)


def trunk_residuals(inv: Inverter, prepared: PreparedRun, train_ids: list[list[int]]) -> list[torch.Tensor] | None:
    """The cached residual entering the first control block, per prompt, when the trunk
    shortcut applies and reproduces the backbone's own loss on a few prompts (else None: train
    the slow way)."""
    cache, data = prepared.cache, prepared.data
    if inv.trunk_layer is None or cache.manifest().get("trunk_layer") != inv.trunk_layer:
        return None
    trunk_all = cache.load_trunk()
    if trunk_all is None:
        return None
    probe = [i for i in data.train[:8] if len(trunk_all[i]) > 0]
    if not probe or not _check_trunk(inv, [train_ids[data.train.index(i)] for i in probe], [trunk_all[i] for i in probe]):
        return None
    return trunk_all


def clean_conditions(rows: list[int], sites: list[Site], cond: Conditions, trunk_all: list[torch.Tensor] | None
                     ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor] | None]:
    """(activations, site indices, cached trunk residuals) of prompts `rows` (example indices),
    the sites cycled over them: each prompt conditioned on its own clean activation, as the
    sampler will condition on a query's, so their loss measures the fit and not the noise."""
    site = torch.tensor([i % len(sites) for i in range(len(rows))])
    z = torch.stack([cond.acts[sites[int(k)].name][r] for r, k in zip(rows, site)])
    return z, site, [trunk_all[r] for r in rows] if trunk_all is not None else None


def evaluation_set(cfg: TrainConfig, target: Target, inv: Inverter, parts: GeneratorParts, prepared: PreparedRun,
                   cond: Conditions, trunk_all: list[torch.Tensor] | None) -> EvalSet:
    """The validation batch and its unconditional reference loss (for a shallow generator, the
    full target's: its stack is no language model until trained)."""
    n_eval = min(cfg.eval_size, len(prepared.data.valid))
    ids = parts.valid_ids[:n_eval]
    z, site, trunk = clean_conditions(prepared.data.valid[:n_eval], prepared.sites, cond, trunk_all)
    if parts.gcfg.upper_blocks is None:
        uncond = _eval_losses(inv, ids, z, site, conditional=False, trunk=trunk)
    else:
        uncond = unconditional_loss(target, parts.gcfg, ids)
    return EvalSet(ids, z, site, trunk, uncond)


def make_optimiser(cfg: TrainConfig, inv: Inverter, parts: GeneratorParts) -> Fit:
    """AdamW with linear warm-up over the control layers and site encoder; a shallow
    generator's own blocks learn with them at a tenth of the rate, without weight decay."""
    params = [p for p in inv.parameters() if p.requires_grad]
    groups: list[dict] = [{"params": params}]
    if parts.gcfg.upper_blocks is not None:
        own = own_block_parameters(parts.bb.model, parts.gcfg.own_blocks_from or 0)
        for p in own:
            p.requires_grad_(True)
        groups.append({"params": own, "lr": cfg.lr * UPPER_LR_FACTOR, "weight_decay": 0.0})
        params = params + own
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    done = {"share": 0.0}  # share of the budget spent, set by the loop before each step

    def factor(s: int) -> float:
        return min(1.0, (s + 1) / cfg.warmup_steps) * lr_decay(cfg.lr_schedule, done["share"])

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    average = WeightAverage(params, cfg.weight_average) if cfg.weight_average is not None else None
    return Fit(params, opt, sched, np.random.default_rng(cfg.seed), budget_spent=done, average=average)


LR_FLOOR = 0.1  # the cosine schedule ends at this share of the peak rate


def lr_decay(schedule: str, share: float) -> float:
    """The learning-rate factor after warm-up at `share` of the budget spent. Why a schedule
    that reads the budget and not the step: the budget is wall-clock by default, and a run
    resumed with a longer one continues its decay from where the longer budget puts it."""
    if schedule == "constant":
        return 1.0
    share = min(max(share, 0.0), 1.0)
    return LR_FLOOR + (1.0 - LR_FLOOR) * 0.5 * (1.0 + math.cos(math.pi * share))


def restore_checkpoint(inv: Inverter, fit: Fit, inv_dir: Path) -> None:
    """Resume where the last checkpoint left off: weights, optimiser, schedule, both random
    generators and the step counters (a killed run trains no step twice)."""
    state_path = inv_dir / "state.pt"
    if not state_path.exists():
        return
    from safetensors.torch import load_file

    saved = torch.load(state_path, weights_only=False, map_location="cpu")  # the optimiser's state moves to its parameters
    inv.load_state_dict({k: v for k, v in load_file(str(inv_dir / "last.safetensors")).items() if not k.startswith("backbone.")}, strict=False)
    fit.opt.load_state_dict(saved["opt"])
    fit.sched.load_state_dict(saved["sched"])
    fit.rng.bit_generator.state = saved["rng"]
    torch.set_rng_state(saved["torch_rng"])
    if fit.average is not None and "average" in saved:
        fit.average.load_state_dict(saved["average"])
    fit.st = saved["st"]


def training_budget(cfg: TrainConfig, st: dict, job_elapsed_s: float, phases: dict[str, float], log_path: Path) -> tuple[float, float]:
    """(seconds training may run in total, seconds left now). A cut by the job budget is
    logged and shown; a run that stopped, or reached `max_steps`, has nothing left, and one
    still short of `min_steps` has some whatever its clock says."""
    train_s = training_seconds(cfg, st["elapsed"], job_elapsed_s)
    if train_s < cfg.minutes * 60:
        phases["training_cut_to_s"] = train_s
        _log(log_path, {"phase": "budget", "total_minutes": cfg.total_minutes, "training_seconds": train_s, "job_elapsed_s": job_elapsed_s})
    done = st["stopped"] or (cfg.max_steps is not None and st["step"] >= cfg.max_steps)
    if done:
        return train_s, 0.0
    return train_s, math.inf if steps_owed(cfg, st["step"]) else train_s - st["elapsed"]


def steps_owed(cfg: TrainConfig, step: int) -> bool:
    """Whether the step floor (`min_steps`) keeps training going past the clock."""
    return cfg.min_steps is not None and step < cfg.min_steps


def budget_share(cfg: TrainConfig, step: int, elapsed_s: float, train_s: float) -> float:
    """How much of the budget is spent, for the schedule. A step budget sets it alone (a run
    with one is reproducible whatever the clock). With a step floor, training ends when both
    the clock and the floor are through, so the share is the smaller of the two: it reaches 1
    at the stop, and on a host too slow for the clock to matter it is `step / min_steps`,
    the same schedule as `max_steps = min_steps`."""
    if cfg.max_steps:
        return step / cfg.max_steps
    clock = elapsed_s / train_s if train_s > 0 else 1.0
    return min(clock, step / cfg.min_steps) if cfg.min_steps else clock


def draw_batch(cfg: TrainConfig, cond: Conditions, rng: np.random.Generator, train_rows: np.ndarray,
               site_names: list[str]) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """One training batch: (positions in the training split of its texts, conditions, site
    indices). Each example is conditioned either on its own activation plus noise, or (a
    `mix` share) on a clean activation whose ε-ball its text was drawn from."""
    pick = rng.integers(0, len(train_rows), cfg.batch_size)
    sidx = torch.from_numpy(rng.integers(0, len(site_names), cfg.batch_size))
    site_mix = np.array([cond.mixes[n] if n in cond.balls else 0.0 for n in site_names])
    swap = rng.random(cfg.batch_size) < site_mix[sidx.numpy()] if cond.balls else np.zeros(cfg.batch_size, dtype=bool)
    z = torch.stack([cond.acts[site_names[int(k)]][int(r)] for r, k in zip(train_rows[pick], sidx)])
    for k, name in enumerate(site_names):
        m = sidx == k
        noisy = m & torch.from_numpy(~swap)
        if noisy.any():
            z[noisy] = cond.noises[name](z[noisy], rng)
        near = np.flatnonzero(m.numpy() & swap)
        if len(near):  # the text becomes a member of the condition's ε-ball; the condition stays clean
            pick[near] = cond.balls[name].draw(pick[near], rng)
    return pick, z, sidx


def optimiser_step(cfg: TrainConfig, inv: Inverter, fit: Fit, parts: GeneratorParts, batch: tuple[np.ndarray, torch.Tensor, torch.Tensor],
                   train_rows: np.ndarray, trunk_all: list[torch.Tensor] | None) -> tuple[float, int]:
    """One step of teacher-forced loss on the batch (from the cached trunk where it applies);
    returns (loss, tokens)."""
    pick, z, sidx = batch
    if dd.active():  # this process's slice of the global batch every rank drew alike
        mine = slice(dd.rank(), None, dd.world())
        pick, z, sidx = pick[mine], z[mine], sidx[mine]
    rows = train_rows[pick]
    c = inv.encode(z, sidx)
    if cfg.condition_dropout > 0:
        c = torch.nn.functional.dropout(c, cfg.condition_dropout, training=True)
    batch_trunk = [trunk_all[int(r)] for r in rows] if trunk_all is not None else None
    loss, ntok = _batch_loss(inv, [parts.train_ids[int(i)] for i in pick], c, batch_trunk)
    fit.own_tokens += ntok
    fit.opt.zero_grad()
    if dd.active():
        return _distributed_step(fit, loss, ntok)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(fit.params, 1.0)
    fit.opt.step()
    fit.sched.step()
    if fit.average is not None:
        fit.average.update()
    return float(loss.detach()), ntok


def _distributed_step(fit: Fit, loss: torch.Tensor, ntok: int) -> tuple[float, int]:
    """The optimiser step of one process's slice: its loss weighted by its share of the global
    batch's tokens, gradients summed over processes — the gradient of the global batch's mean
    loss, as one process computes it — then the same clipped step on every rank. Returns the
    global batch's (loss, tokens)."""
    total = dd.all_sum([float(ntok)])[0]
    (loss * (ntok / total)).backward()
    dd.sum_gradients(fit.params)
    torch.nn.utils.clip_grad_norm_(fit.params, 1.0)
    fit.opt.step()
    fit.sched.step()
    if fit.average is not None:
        fit.average.update()
    return dd.all_sum([float(loss.detach()) * ntok])[0] / total, int(total)


def _budget_reason(cfg: TrainConfig, train_s: float, out_of_steps: bool, st: dict) -> str:
    """Why training stopped when no early stop did: the step budget, the step floor (the clock
    ran out first), the time budget, or the time budget as cut by --total-minutes."""
    if out_of_steps:
        return "step budget"
    if cfg.min_steps is not None and st["step"] == cfg.min_steps and st["elapsed"] > train_s:
        return f"--min-steps {cfg.min_steps} (past the {train_s / 60:.1f}-min time budget)"
    return "time budget" if train_s >= cfg.minutes * 60 else f"time budget (cut to {train_s / 60:.1f} min by --total-minutes)"


def evaluate(cfg: TrainConfig, inv: Inverter, fit: Fit, ev: EvalSet, train_loss: float, inv_dir: Path) -> None:
    """Held-out loss on the validation batch, logged; the best inverter so far is saved, and
    `patience` evaluations without improvement stop training early."""
    st = fit.st
    inv.eval()
    with fit.evaluated():  # the weights saved are the weights evaluated
        hl = dd.broadcast_from_main(_eval_losses(inv, ev.ids, ev.z, ev.site, trunk=ev.trunk))  # one decision for every rank
        improved = hl < st["best"] - 1e-4
        if improved and dd.is_main():
            inv.save(inv_dir)
    _log(inv_dir / "log.jsonl", {"phase": "control", "step": st["step"], "tokens": st["tokens"], "elapsed_s": st["elapsed"],
                                 "train_loss": train_loss, "heldout_loss": hl, "heldout_unconditional": ev.unconditional})
    if improved:
        st["best"], st["bad"] = hl, 0
    else:
        st["bad"] += 1
        if st["bad"] >= cfg.patience:
            st["stopped"] = "early stop (held-out loss stopped improving)"


def checkpoint(inv: Inverter, fit: Fit, inv_dir: Path) -> None:
    """The last weights and everything a resume needs, the state written atomically (by rank 0:
    every rank holds the same weights and optimiser state)."""
    if not dd.is_main():
        return
    inv.save(inv_dir, "last.safetensors")
    state = {"opt": fit.opt.state_dict(), "sched": fit.sched.state_dict(), "rng": fit.rng.bit_generator.state,
             "torch_rng": torch.get_rng_state(), "st": fit.st}
    if fit.average is not None:
        state["average"] = fit.average.state_dict()
    torch.save(state, inv_dir / "state.pt.tmp")
    (inv_dir / "state.pt.tmp").replace(inv_dir / "state.pt")


def _progress_bar(cfg: TrainConfig, fit: Fit, train_s: float):
    from tqdm.auto import tqdm

    return tqdm(total=int(train_s), initial=int(fit.st["elapsed"]),
                desc=f"training {cfg.arch} ({sum(p.numel() for p in fit.params) / 1e6:.1f}M params)", unit="s")


def fit_control_layers(cfg: TrainConfig, inv: Inverter, fit: Fit, parts: GeneratorParts, prepared: PreparedRun, cond: Conditions,
                       ev: EvalSet, trunk_all: list[torch.Tensor] | None, budget: tuple[float, float], inv_dir: Path,
                       progress: bool) -> None:
    """The training loop: steps until the time or step budget or early stopping; every
    `eval_every` steps and at the end, evaluate and checkpoint."""
    train_s, budget_left = budget
    st = fit.st
    bar = _progress_bar(cfg, fit, train_s) if progress and budget_left > 0 else None
    train_rows = np.array(prepared.data.train)
    site_names = [s.name for s in prepared.sites]
    t_start = time.perf_counter() - st["elapsed"]
    while budget_left > 0 and not st["stopped"]:
        inv.train()
        fit.budget_spent["share"] = budget_share(cfg, st["step"], st["elapsed"], train_s)
        batch = draw_batch(cfg, cond, fit.rng, train_rows, site_names)
        last_loss, ntok = optimiser_step(cfg, inv, fit, parts, batch, train_rows, trunk_all)
        st["step"] += 1
        st["tokens"] += ntok
        st["elapsed"] = dd.all_max(time.perf_counter() - t_start)  # one clock: every rank stops at the same step
        if bar is not None:  # not `if bar`: a tqdm of total 0 is falsy
            if steps_owed(cfg, st["step"]) and st["elapsed"] >= train_s and bar.unit != "step":
                bar.reset(total=cfg.min_steps)  # the clock is through: what is left is counted in steps
                bar.unit = "step"
            bar.n = st["step"] if bar.unit == "step" else min(int(st["elapsed"]), bar.total)
            owed = {"step": f"{st['step']}/{cfg.min_steps}"} if steps_owed(cfg, st["step"]) else {}
            bar.set_postfix(loss=f"{last_loss:.3f}", heldout=f"{st['best']:.3f}", uncond=f"{ev.unconditional:.3f}", **owed)
        out_of_steps = cfg.max_steps is not None and st["step"] >= cfg.max_steps
        out_of_time = (st["elapsed"] >= train_s and not steps_owed(cfg, st["step"])) or out_of_steps
        if st["step"] % cfg.eval_every == 0 or out_of_time:
            evaluate(cfg, inv, fit, ev, last_loss, inv_dir)
            if out_of_time and not st["stopped"]:
                st["stopped"] = _budget_reason(cfg, train_s, out_of_steps, st)
            checkpoint(inv, fit, inv_dir)
            if st["stopped"]:
                break
    if bar is not None:
        bar.close()


def summarised_before_temperatures(run_dir: Path) -> bool:
    """Whether the run was trained and summarised before sampling temperatures were recorded.
    Why: such a run was sampled and measured at temperature 1; rerunning `train` on it (a no-op
    resume) must not change what its `sample`, `fcr` and `explore` draw from then on."""
    path = run_dir / "inverter" / "train_summary.json"
    if not path.exists():
        return False
    try:
        return not json.loads(path.read_text()).get("sampling_temperature_per_site")  # absent, or left empty by a rerun
    except (OSError, json.JSONDecodeError):
        return False


def final_fit(cfg: TrainConfig, inv: Inverter, fit: Fit, parts: GeneratorParts, prepared: PreparedRun, cond: Conditions,
              ev: EvalSet, trunk_all: list[torch.Tensor] | None) -> tuple[float, float]:
    """(held-out loss, training-prompt loss) of the weights training ended with, both with clean
    activations as conditions: the validation batch, and `eval_size` training prompts spread
    evenly over the training split. Why: whether a run that its budget stopped would gain from
    more steps. Where the fit is far better on prompts it saw than on new ones it is learning
    the prompts by heart, and more prompts help, not more steps (the real sets' 6.6k: NOTES §46,
    BENCHMARKS §26); where the two are close it has not started to, and twice the steps fitted
    23.7k real prompts better (BENCHMARKS §39). Draws no random number."""
    train = prepared.data.train
    pos = np.linspace(0, len(train) - 1, min(cfg.eval_size, len(train))).astype(int)
    z, site, trunk = clean_conditions([train[int(k)] for k in pos], prepared.sites, cond, trunk_all)
    inv.eval()
    with fit.evaluated():
        held = _eval_losses(inv, ev.ids, ev.z, ev.site, trunk=ev.trunk)
        seen = _eval_losses(inv, [parts.train_ids[int(k)] for k in pos], z, site, trunk=trunk)
    return held, seen


def summarise(cfg: TrainConfig, target: Target, prepared: PreparedRun, parts: GeneratorParts, cond: Conditions, ev: EvalSet,
              fit: Fit, phases: dict[str, float], fitted: tuple[float, float] | None = None) -> TrainResult:
    """The result table's content, saved as `inverter/train_summary.json` (phases' timings to
    `phases.jsonl`)."""
    st, sites = fit.st, prepared.sites
    result = TrainResult(
        run_dir=str(cfg.run_dir), phases=phases, eps=prepared.eps, steps=st["step"], train_tokens=st["tokens"],
        heldout_loss=None if math.isinf(st["best"]) else st["best"], heldout_loss_unconditional=ev.unconditional,
        stopped=st["stopped"] or "time budget", n_train=len(prepared.data.train), n_heldout=len(prepared.data.heldout),
        dropped_long=prepared.dropped, heldout_oov_rate=parts.oov_rate,
        out_vocab_size=len(parts.bb.out_ids) if parts.bb.out_ids is not None else None,
        generator=describe_generator(parts.gcfg, target), recipe=cfg.recipe, weight_average=cfg.weight_average, neighbour_mix=cond.mix,
        density_ratio=density_ratio([cond.stats[s.name] for s in sites], prepared.eps), neighbour_mix_per_site=cond.mixes,
        density_ratio_per_site={n: r for n, r in zip(cond.mixes, site_density_ratios([cond.stats[s.name] for s in sites], prepared.eps))
                                if r is not None},
        noise_distance={s.name: float(d) for s in sites if (d := cond.noises[s.name].describe().get("distance")) is not None},
    )
    if fitted is not None:
        result.final_heldout_loss, result.final_train_loss = fitted
    if cfg.arch == "inversescope" and not summarised_before_temperatures(cfg.run_dir):  # the InversionView baseline samples as its paper did
        result.sampling_temperature_per_site = {n: sampling_temperature(m, result.density_ratio_per_site.get(n)) for n, m in cond.mixes.items()}
    result.processes = dd.world()
    result.tokens_per_s_per_process = fit.own_tokens / phases["control_training_s"] if phases.get("control_training_s") else None
    _log(cfg.run_dir / "phases.jsonl", {"time": time.time(), **phases})
    if dd.is_main():
        (cfg.run_dir / "inverter" / "train_summary.json").write_text(result.model_dump_json(indent=1))
    return result


def _train_worker(cfg_json: str, progress: bool) -> None:
    """One of `--processes` N: the same `train`, in a process group (`distributed.launch`)."""
    train(TrainConfig.model_validate_json(cfg_json), progress=progress)  # `train` shows progress on rank 0 only


def check_data_parallel(cfg: TrainConfig, processes: int) -> None:
    """Refuse what several processes cannot do alike, before any of them starts."""
    if cfg.sft != "none":
        raise AutoscopeError("--sft is not data-parallel yet: fine-tune with one process (--processes 1), then resume the run "
                             "with --processes N")
    if cfg.batch_size < processes:
        raise AutoscopeError(f"--batch-size {cfg.batch_size} cannot be split over {processes} processes: give each at least one prompt")
    cfg.target.resolved()  # a bad --device/--dtype is one line here, not a traceback from every worker
    if resolve_device(cfg.target.device).type == "cuda" and processes > torch.cuda.device_count():
        raise AutoscopeError(f"--processes {processes}: this machine has {torch.cuda.device_count()} visible GPU(s), one per process")


def train_processes(cfg: TrainConfig, progress: bool = True) -> TrainResult:
    """`train` in `cfg.processes` processes on this machine (gloo on the CPU, NCCL on GPUs, one GPU
    each); rank 0's summary is the result. Why a function of its own: the caller stays one
    process, so what follows training (the check, the table) runs once."""
    check_data_parallel(cfg, cfg.processes)
    dd.launch(_train_worker, cfg.processes, cfg.model_dump_json(), progress)
    return TrainResult.model_validate_json((cfg.run_dir / "inverter" / "train_summary.json").read_text())


def train(cfg: TrainConfig, progress: bool = True, target: Target | None = None) -> TrainResult:
    """Prior → activation cache → generator → control-layer training → summary, each phase
    resumable (module docstring). The phases run in this order, and the order is part of the
    contract: it fixes which random numbers each one draws. With `cfg.processes` > 1 it runs in
    that many processes (`train_processes`); launched by torchrun or accelerate it joins their
    process group and trains data-parallel (scope_core/distributed.py)."""
    launched = dd.init_from_env()  # by torchrun or accelerate launch (or `train_processes`' workers)
    if cfg.processes > 1 and not launched:
        return train_processes(cfg, progress)
    if dd.active():
        check_data_parallel(cfg, dd.world())
    progress = progress and dd.is_main()
    cfg = resumable_config(cfg)
    phases: dict[str, float] = {}
    t_job = t = time.perf_counter()
    target = target or load_target(cfg.target)
    phases["load_target_s"] = time.perf_counter() - t
    prepared = prepare_data(cfg, target, progress, phases)

    inv_dir = cfg.run_dir / "inverter"
    inv_dir.mkdir(exist_ok=True)
    t = time.perf_counter()
    stats = prepared.cache.stats()
    mixes = site_neighbour_mixes(cfg, [stats[s.name] for s in prepared.sites], prepared.eps)  # they pick the site encoder too
    parts = build_generator(cfg, target, prepared.data, inv_dir, progress, mixes)
    phases["backbone_s"] = time.perf_counter() - t
    inv = build_inverter(cfg, parts, prepared, inv_dir)
    cond = choose_conditions(cfg, target, prepared, mixes, inv_dir / "log.jsonl", progress, phases)
    trunk_all = trunk_residuals(inv, prepared, parts.train_ids)
    phases["trunk_shortcut"] = float(trunk_all is not None)
    ev = evaluation_set(cfg, target, inv, parts, prepared, cond, trunk_all)

    fit = make_optimiser(cfg, inv, parts)
    restore_checkpoint(inv, fit, inv_dir)
    budget = dd.broadcast_from_main(training_budget(cfg, fit.st, time.perf_counter() - t_job, phases, inv_dir / "log.jsonl"))
    t = time.perf_counter()
    fit_control_layers(cfg, inv, fit, parts, prepared, cond, ev, trunk_all, budget, inv_dir, progress)
    for p in own_block_parameters(parts.bb.model, parts.gcfg.own_blocks_from) if parts.gcfg.upper_blocks is not None else []:
        p.requires_grad_(False)
    phases["control_training_s"] = time.perf_counter() - t
    if dd.is_main() and not (inv_dir / "inverter.safetensors").exists():
        with fit.evaluated():
            inv.save(inv_dir)
    fitted = final_fit(cfg, inv, fit, parts, prepared, cond, ev, trunk_all)
    result = summarise(cfg, target, prepared, parts, cond, ev, fit, phases, fitted)
    dd.barrier()  # every rank returns after rank 0 has written the run: a launcher's next step may read it
    return result
