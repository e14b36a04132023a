"""`autoscope train`: prior → activation cache → (backbone SFT) → control-layer training.

Every phase writes under `runs/<run>/` and resumes: the cache by chunks, training from
`inverter/state.pt` (optimiser, step, RNG, elapsed time). Early stopping is on held-out
conditional loss, evaluated on *clean* query activations — the condition the sampler
will actually see — next to the unconditional backbone's loss on the same prompts.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field

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
from .neighbours import neighbour_balls
from .noise import NoiseMode, make_noise
from .sites import Site, parse_sites
from .targets import Target, TargetConfig, load_target


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
    eps_quantile: float = Field(0.05, description="default ε per site: this quantile of the prior's pairwise distances (the ε-ball around a typical query holds this share of the prior)")
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
    recipe: int = Field(2, description="defaults generation: 1 = before issue 24 (site-ε noise, 3 control layers of 8 heads, "
                        "shallow copies, mix 0.7); 2 = now. Saved runs keep the one they were trained with")
    restrict_vocab: bool = Field(True, description="the generator outputs only token ids seen in the training prompts (+ end)")
    minutes: float = Field(8.0, description="wall-clock budget of control-layer training")
    total_minutes: float | None = Field(
        None, gt=0, description="wall-clock budget of the whole job (prior, caching, training): training gets what is left, "
        "at most `minutes` and at least 2 minutes; None: no limit")
    max_steps: int | None = Field(
        None, gt=0, description="also stop after this many optimiser steps: a budget that does not depend on the machine's "
        "load (benchmarks compare recipes at equal steps); the wall-clock budget still applies")
    condition_dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="dropout on the encoded condition while training: the control layers cannot key "
        "a whole prompt on a few coordinates of one activation (NOTES §40)")
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay of the control layers and the site encoder")
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 50
    eval_every: int = 60
    eval_size: int = 192
    patience: int = 4
    cache_batch_size: int = 32
    seed: int = 0

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        """A run's saved configuration. Runs saved before an option existed get the value that
        reproduces what they did, not today's default."""
        raw = json.loads(path.read_text())
        raw.setdefault("neighbour_mix", 0.0)
        raw.setdefault("upper_blocks", 0)  # the whole frozen backbone, as every run before the shallow generator
        raw.setdefault("recipe", 1)  # saved before the recipe marker: site-ε noise, three control layers
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
    out_vocab_size: int | None = None
    generator: str = ""  # what the generator is made of, in words
    recipe: int = 2
    neighbour_mix: float | None = None  # the share used (read from the data unless given)
    density_ratio: float | None = None  # median nearest-neighbour distance / ε, the mix rule's input
    noise_distance: dict[str, float] = {}  # per site, the noise shell used
    stopped: str
    n_train: int
    n_heldout: int
    dropped_long: int


def _log(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def prepare_run(cfg: TrainConfig, target: Target, progress: bool = True) -> tuple[RunData, ActivationCache, dict, int]:
    """Prompts, split and activation cache of the run (built or resumed). Returns
    (data, cache, timing of the caching phase, number of prompts dropped as too long)."""
    run = cfg.run_dir
    data_dir = run / "data"
    dropped = 0
    if (data_dir / "split.json").exists():
        data = RunData.load(data_dir)
    else:
        examples = build_examples(cfg.prior)
        examples, dropped = filter_length(examples, target.text_token_counts([e.text for e in examples]), target.config.max_prompt_tokens)
        train, held = split_indices(len(examples), cfg.prior.heldout, cfg.prior.seed)
        train, valid = split_validation(train, cfg.prior.valid, cfg.prior.seed)
        data = RunData(examples, train, held, valid)
        data.save(data_dir)
    sites = parse_sites(cfg.sites, target.n_layers, target.n_heads)
    cache = ActivationCache(run / "acts")
    timing = cache.build(target, data.texts, sites, batch_size=cfg.cache_batch_size, progress=progress, trunk_layer=trunk_layer_for(cfg, target))
    return data, cache, timing, dropped


DEFAULT_UPPER_BLOCKS = 4
# options whose defaults changed between recipes: a run resumed with all of them at their
# defaults resumes with the values it was trained with
RECIPE_FIELDS = ("recipe", "upper_blocks", "control_layers", "n_heads", "noise_distance", "neighbour_mix")


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
    """The generator's backbone is the target model itself, frozen and unchanged."""
    return (cfg.backbone == target.name and cfg.sft == "none" and upper_blocks_for(cfg, target) is None
            and cfg.target.dtype == "float32")


def shares_lower_blocks(cfg: TrainConfig, target: Target) -> bool:
    """The generator's backbone runs the target's own modules below the first control block
    (the frozen target itself, or `graft_upper` of it with fine-tuned upper blocks)."""
    return cfg.backbone == target.name and cfg.sft in ("none", "lora-upper") and cfg.target.dtype == "float32"


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


def density_ratio(site_stats: list[dict], eps: list[EpsChoice]) -> float | None:
    """Mean over sites of (median nearest-neighbour distance) / ε: how densely the prior fills a
    typical ε-ball with close variants (generated refusal prior at L18: 0.16; real prompts: 0.38)."""
    ratios = [nn / e.eps for st, e in zip(site_stats, eps) if (nn := nearest_neighbour_median(st, e.metric)) is not None and e.eps > 0]
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


def site_eps(cfg: TrainConfig, cache: ActivationCache, sites: list[Site]) -> list[EpsChoice]:
    stats = cache.stats()
    return [choose_eps(stats[s.name], s.name, cfg.metric, cfg.eps_quantile if cfg.eps is None else None, cfg.eps) for s in sites]


def _backbone_for(cfg: TrainConfig, target: Target, data: RunData) -> tuple[Backbone, GeneratorConfig]:
    site_names = [s.name for s in parse_sites(cfg.sites, target.n_layers, target.n_heads)]
    gcfg = GeneratorConfig(
        backbone=cfg.backbone, arch=cfg.arch, sites=site_names, d_act=target.d_model,
        control_layers=cfg.control_layers or (control_blocks(cfg, target) if cfg.backbone == target.name and cfg.arch == "inversescope" else None), n_heads=cfg.n_heads, head_dim=cfg.head_dim,
        system_prompt=cfg.target.system_prompt, scratch=cfg.scratch,
        backbone_weights_saved=cfg.backbone == "scratch" or cfg.sft != "none",
    )
    if cfg.backbone == "scratch":
        ids = target.tokenizer([data.examples[i].text for i in data.train], add_special_tokens=False).input_ids
        vocab = {t for s in ids for t in s}
        tok = target.tokenizer
        vocab |= {tok.eos_token_id} | ({tok.bos_token_id} if tok.bos_token_id is not None else set())
        if tok.unk_token_id is not None:
            vocab.add(tok.unk_token_id)
        gcfg.vocab = sorted(vocab) + [tok.pad_token_id] if tok.pad_token_id not in vocab else sorted(vocab)
        return build_backbone(gcfg, tokenizer=tok), gcfg
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
    return build_backbone(gcfg), gcfg


def finetune_backbone(bb: Backbone, train_ids: list[list[int]], held_ids: list[list[int]], mode: str, minutes: float, lr: float, batch_size: int, seed: int, log_path: Path, progress: bool,
                      from_block: int = 0) -> dict:
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

    best, best_state, bad, step, t0 = math.inf, None, 0, 0, time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(minutes * 60), desc=f"backbone SFT ({mode})", unit="s")
    while time.perf_counter() - t0 < minutes * 60:
        idx = rng.integers(0, len(train_ids), batch_size)
        batch = [train_ids[i] for i in idx]
        loss, _ = teacher_forced_loss(bb, batch, None, full_prefix_start(bb, len(batch)))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % 100 == 0:
            hl = held_loss()
            _log(log_path, {"phase": "sft", "step": step, "train_loss": float(loss), "heldout_loss": hl})
            if hl < best:
                best, bad = hl, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
                if bad >= 3:
                    break
        if bar:
            bar.n = min(int(time.perf_counter() - t0), bar.total)
            bar.set_postfix(loss=f"{float(loss):.3f}", best=f"{best:.3f}")
    if bar:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    if mode in ("lora", "lora-upper"):
        bb.model = model.merge_and_unload()
    bb.model.eval()
    for p in bb.model.parameters():
        p.requires_grad_(False)
    bb._prefix_kv = None
    return {"sft_heldout_loss": best, "sft_steps": step}


def describe_generator(gcfg: GeneratorConfig, target: Target) -> str:
    """One line for the result table: which blocks the generator runs and where it is conditioned."""
    ctl = f"control layers in blocks {', '.join(map(str, gcfg.control_layers or []))}" if gcfg.arch == "inversescope" else "condition as keys/values"
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


def train(cfg: TrainConfig, progress: bool = True, target: Target | None = None) -> TrainResult:
    run = cfg.run_dir
    cfg_path = run / "train_config.json"
    if cfg_path.exists() and (run / "data" / "split.json").exists():
        old = TrainConfig.load(cfg_path)
        if all(getattr(cfg, f) == TrainConfig.model_fields[f].default for f in RECIPE_FIELDS):
            # the recipe left to its defaults: the run keeps the recipe it was trained with
            cfg = cfg.model_copy(update={f: getattr(old, f) for f in RECIPE_FIELDS})
        keep = {"minutes", "total_minutes", "patience", "eval_every"}
        if old.model_dump(exclude=keep) != cfg.model_dump(exclude=keep):
            raise AutoscopeError(
                f"run {run} exists with a different configuration; pass a new --run name, or the same options to resume it"
            )
    phases: dict[str, float] = {}
    t_job = t = time.perf_counter()
    target = target or load_target(cfg.target)
    phases["load_target_s"] = time.perf_counter() - t

    t = time.perf_counter()
    data, cache, cache_timing, dropped = prepare_run(cfg, target, progress)
    cfg_path.write_text(cfg.model_dump_json(indent=1))  # only once the prompts exist: a failed start leaves no stale config
    phases["caching_s"] = time.perf_counter() - t
    phases["caching_tokens_per_s"] = cache_timing["tokens"] / cache_timing["seconds"] if cache_timing["seconds"] > 0 and cache_timing["tokens"] else 0.0
    sites = cache.sites
    eps = site_eps(cfg, cache, sites)
    (run / "eps.json").write_text(json.dumps([e.model_dump() for e in eps], indent=1))

    inv_dir = run / "inverter"
    inv_dir.mkdir(exist_ok=True)
    log_path = inv_dir / "log.jsonl"
    t = time.perf_counter()
    bb, gcfg = _backbone_for(cfg, target, data)
    max_tokens = gcfg.max_tokens
    train_ids = bb.encode([data.examples[i].text for i in data.train], max_tokens)
    # early stopping and the reported held-out loss use the validation split, never the
    # held-out queries that sampling and FCR are measured on (runs made before it existed: those)
    held_ids = bb.encode([data.examples[i].text for i in data.valid], max_tokens)
    oov_rate = 0.0
    if cfg.restrict_vocab and cfg.backbone != "scratch":
        gcfg.out_vocab = sorted({t for s in train_ids for t in s})
        bb.restrict_output(gcfg.out_vocab)
        held_tokens = [t for s in bb.encode([data.examples[i].text for i in data.heldout], max_tokens) for t in s]
        vocab_set = set(gcfg.out_vocab)
        oov_rate = sum(t not in vocab_set for t in held_tokens) / max(len(held_tokens), 1)
    sft_done = inv_dir / "backbone_sft.json"
    sft_mode = "full" if cfg.backbone == "scratch" else cfg.sft
    if sft_mode != "none":
        state_path = inv_dir / "state.pt"
        if state_path.exists():  # resumed after SFT: the backbone weights are in the checkpoint
            pass
        else:
            info = finetune_backbone(bb, train_ids, held_ids[: cfg.eval_size], sft_mode, cfg.sft_minutes,
                                     lr=1e-3 if cfg.backbone == "scratch" else 1e-4, batch_size=cfg.batch_size,
                                     seed=cfg.seed, log_path=log_path, progress=progress, from_block=gcfg.own_blocks_from or 0)
            sft_done.write_text(json.dumps(info))
    phases["backbone_s"] = time.perf_counter() - t

    torch.manual_seed(cfg.seed)
    inv = Inverter(gcfg, bb)
    acts = {s.name: cache.site(s) for s in sites}  # memory-mapped: rows are read when indexed
    for s in sites:
        m, sc = cache.mean_scale(s)
        inv.encoder.set_stats(s.name, m, sc)
    state_path = inv_dir / "state.pt"
    if state_path.exists() and (sft_mode != "none" or gcfg.upper_blocks is not None):
        from safetensors.torch import load_file

        bb.model.load_state_dict(backbone_state(load_file(str(inv_dir / "last.safetensors"))), strict=False)
        bb._prefix_kv = None

    stats = cache.stats()
    mix = cfg.neighbour_mix if cfg.neighbour_mix is not None else default_neighbour_mix(cfg, [stats[s.name] for s in sites], eps)
    noises = {}
    for s, e in zip(sites, eps):
        mean, _ = cache.mean_scale(s)
        dist = cfg.noise_distance if cfg.noise_distance is not None else default_noise_distance(cfg, stats[s.name], e)
        noises[s.name] = make_noise(cfg.metric, target.d_model, cfg.noise_mode if cfg.arch == "inversescope" else "none", dist, center=mean)
    # log the noise-distance quantiles actually produced: the shell, not ε_k, is what matters
    from .distances import distance as dist_fn

    rng_probe = np.random.default_rng(cfg.seed + 7)
    noise_report = {}
    for s in sites:
        z = acts[s.name][torch.tensor(data.train[:512])]
        mean, _ = cache.mean_scale(s)
        d = dist_fn(noises[s.name](z, rng_probe), z, cfg.metric, mean).numpy()
        noise_report[s.name] = {"q05": float(np.quantile(d, 0.05)), "q50": float(np.quantile(d, 0.5)), "q95": float(np.quantile(d, 0.95)), **noises[s.name].describe()}
    _log(log_path, {"phase": "noise", "noise_distance_quantiles": noise_report})
    if progress:
        from rich.console import Console

        con = Console(stderr=True)
        for s in sites:
            r = noise_report[s.name]
            con.print(f"[dim]noise at {s.name}: {cfg.metric} distance q05/q50/q95 = {r['q05']:.4f}/{r['q50']:.4f}/{r['q95']:.4f} (mode {r['mode']})[/dim]")

    balls = {}
    _log(log_path, {"phase": "recipe", "recipe": cfg.recipe, "neighbour_mix": mix, "neighbour_mix_from_data": cfg.neighbour_mix is None,
                    "density_ratio": density_ratio([stats[s.name] for s in sites], eps)})
    if mix > 0 and cfg.arch == "inversescope":
        t = time.perf_counter()
        train_index = torch.tensor(data.train)
        for s, e in zip(sites, eps):
            mean, _ = cache.mean_scale(s)
            balls[s.name] = neighbour_balls(acts[s.name][train_index], e.eps, cfg.metric, mean, seed=cfg.seed)
            sizes = balls[s.name].sizes()
            report = {"eps": e.eps, "q05": int(np.quantile(sizes, 0.05)), "q50": int(np.median(sizes)), "q95": int(np.quantile(sizes, 0.95))}
            if not balls[s.name].whole:  # past WHOLE_LISTS_MAX_N prompts: a uniform subset of each ball is kept
                report["members_kept_max"] = int(balls[s.name].stored().max())
            _log(log_path, {"phase": "neighbours", "site": s.name, "ball_sizes": report, "mix": mix})
            if progress:
                con.print(f"[dim]ε-balls at {s.name} (ε {e.eps:.4g}): training prompts per ball q05/q50/q95 = "
                          f"{report['q05']}/{report['q50']}/{report['q95']}; {mix:.0%} of examples conditioned on a neighbour[/dim]")
        phases["neighbours_s"] = time.perf_counter() - t

    # held-out evaluation set: clean query activations, sites cycled
    n_eval = min(cfg.eval_size, len(data.valid))
    ev_rows = data.valid[:n_eval]
    ev_site = torch.tensor([i % len(sites) for i in range(n_eval)])
    ev_z = torch.stack([acts[sites[int(k)].name][r] for r, k in zip(ev_rows, ev_site)])
    ev_ids = held_ids[:n_eval]
    trunk_all = cache.load_trunk() if inv.trunk_layer is not None and cache.manifest().get("trunk_layer") == inv.trunk_layer else None
    if trunk_all is not None:
        probe = [i for i in data.train[:8] if len(trunk_all[i]) > 0]
        if not probe or not _check_trunk(inv, [train_ids[data.train.index(i)] for i in probe], [trunk_all[i] for i in probe]):
            trunk_all = None
    phases["trunk_shortcut"] = float(trunk_all is not None)
    ev_trunk = [trunk_all[r] for r in ev_rows] if trunk_all is not None else None
    if gcfg.upper_blocks is None:
        uncond = _eval_losses(inv, ev_ids, ev_z, ev_site, conditional=False, trunk=ev_trunk)
    else:  # the shallow stack is not a language model until trained: the reference is the full target
        uncond = unconditional_loss(target, gcfg, ev_ids)

    params = [p for p in inv.parameters() if p.requires_grad]
    groups: list[dict] = [{"params": params}]
    if gcfg.upper_blocks is not None:  # the shallow generator's own blocks learn with the control layers, more gently
        own = own_block_parameters(bb.model, gcfg.own_blocks_from or 0)
        for p in own:
            p.requires_grad_(True)
        groups.append({"params": own, "lr": cfg.lr * UPPER_LR_FACTOR, "weight_decay": 0.0})
        params = params + own
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps))
    rng = np.random.default_rng(cfg.seed)
    st = {"step": 0, "tokens": 0, "elapsed": 0.0, "best": math.inf, "bad": 0, "stopped": ""}
    if state_path.exists():
        saved = torch.load(state_path, weights_only=False)
        from safetensors.torch import load_file

        inv.load_state_dict({k: v for k, v in load_file(str(inv_dir / "last.safetensors")).items() if not k.startswith("backbone.")}, strict=False)
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        rng.bit_generator.state = saved["rng"]
        torch.set_rng_state(saved["torch_rng"])
        st = saved["st"]
    train_s = training_seconds(cfg, st["elapsed"], time.perf_counter() - t_job)
    if train_s < cfg.minutes * 60:
        phases["training_cut_to_s"] = train_s
        _log(log_path, {"phase": "budget", "total_minutes": cfg.total_minutes, "training_seconds": train_s, "job_elapsed_s": time.perf_counter() - t_job})
    budget_left = 0.0 if st["stopped"] or (cfg.max_steps is not None and st["step"] >= cfg.max_steps) else train_s - st["elapsed"]

    bar = None
    if progress and budget_left > 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(train_s), initial=int(st["elapsed"]), desc=f"training {cfg.arch} ({sum(p.numel() for p in params) / 1e6:.1f}M params)", unit="s")
    train_rows = np.array(data.train)
    site_names = [s.name for s in sites]
    t_start = time.perf_counter() - st["elapsed"]
    t0 = time.perf_counter()
    last_loss = float("nan")
    while budget_left > 0 and not st["stopped"]:
        inv.train()
        pick = rng.integers(0, len(train_rows), cfg.batch_size)
        sidx = torch.from_numpy(rng.integers(0, len(sites), cfg.batch_size))
        swap = rng.random(cfg.batch_size) < mix if balls else np.zeros(cfg.batch_size, dtype=bool)
        z = torch.stack([acts[site_names[int(k)]][int(r)] for r, k in zip(train_rows[pick], sidx)])  # the conditions
        for k, name in enumerate(site_names):
            m = sidx == k
            noisy = m & torch.from_numpy(~swap)
            if noisy.any():
                z[noisy] = noises[name](z[noisy], rng)
            near = np.flatnonzero(m.numpy() & swap)
            if len(near):  # the text becomes a member of the condition's ε-ball; the condition stays clean
                pick[near] = balls[name].draw(pick[near], rng)
        rows = train_rows[pick]
        c = inv.encode(z, sidx)
        if cfg.condition_dropout > 0:
            c = torch.nn.functional.dropout(c, cfg.condition_dropout, training=True)
        batch_trunk = [trunk_all[int(r)] for r in rows] if trunk_all is not None else None
        loss, ntok = _batch_loss(inv, [train_ids[int(i)] for i in pick], c, batch_trunk)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        st["step"] += 1
        st["tokens"] += ntok
        last_loss = float(loss.detach())
        st["elapsed"] = time.perf_counter() - t_start
        if bar:
            bar.n = min(int(st["elapsed"]), bar.total)
            bar.set_postfix(loss=f"{last_loss:.3f}", heldout=f"{st['best']:.3f}", uncond=f"{uncond:.3f}")
        out_of_steps = cfg.max_steps is not None and st["step"] >= cfg.max_steps
        out_of_time = st["elapsed"] >= train_s or out_of_steps
        if st["step"] % cfg.eval_every == 0 or out_of_time:
            inv.eval()
            hl = _eval_losses(inv, ev_ids, ev_z, ev_site, trunk=ev_trunk)
            _log(log_path, {"phase": "control", "step": st["step"], "tokens": st["tokens"], "elapsed_s": st["elapsed"], "train_loss": last_loss, "heldout_loss": hl, "heldout_unconditional": uncond})
            if hl < st["best"] - 1e-4:
                st["best"], st["bad"] = hl, 0
                inv.save(inv_dir)
            else:
                st["bad"] += 1
                if st["bad"] >= cfg.patience:
                    st["stopped"] = "early stop (held-out loss stopped improving)"
            if out_of_time and not st["stopped"]:
                st["stopped"] = "step budget" if out_of_steps else "time budget" if train_s >= cfg.minutes * 60 else f"time budget (cut to {train_s / 60:.1f} min by --total-minutes)"
            inv.save(inv_dir, "last.safetensors")
            torch.save({"opt": opt.state_dict(), "sched": sched.state_dict(), "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "st": st}, inv_dir / "state.pt.tmp")
            (inv_dir / "state.pt.tmp").replace(state_path)
            if st["stopped"]:
                break
    if bar:
        bar.close()
    for p in own_block_parameters(bb.model, gcfg.own_blocks_from) if gcfg.upper_blocks is not None else []:
        p.requires_grad_(False)
    phases["control_training_s"] = time.perf_counter() - t0
    if not (inv_dir / "inverter.safetensors").exists():
        inv.save(inv_dir)
    result = TrainResult(
        run_dir=str(run), phases=phases, eps=eps, steps=st["step"], train_tokens=st["tokens"],
        heldout_loss=None if math.isinf(st["best"]) else st["best"], heldout_loss_unconditional=uncond,
        stopped=st["stopped"] or "time budget", n_train=len(data.train), n_heldout=len(data.heldout), dropped_long=dropped,
        heldout_oov_rate=oov_rate, out_vocab_size=len(bb.out_ids) if bb.out_ids is not None else None,
        generator=describe_generator(gcfg, target), recipe=cfg.recipe, neighbour_mix=mix,
        density_ratio=density_ratio([stats[s.name] for s in sites], eps),
        noise_distance={s.name: float(d) for s in sites if (d := noises[s.name].describe().get("distance")) is not None},
    )
    _log(run / "phases.jsonl", {"time": time.time(), **phases})
    (inv_dir / "train_summary.json").write_text(result.model_dump_json(indent=1))
    return result
