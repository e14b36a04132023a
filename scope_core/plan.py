"""`autoscope plan`: what a run will need — memory per process, activation cache on disk, and
time for caching, training and sampling — from the target's config alone.

No weights are read: the model is built on the meta device, which gives its exact parameter
count and the size of every block without allocating them. Everything else is arithmetic on
those shapes, the run's options and stated assumptions (`Plan.assumptions` lists them with
the numbers used), so the figures are estimates, not measurements:

* FLOPs: a forward costs 2 FLOPs per parameter per token it passes through; training costs
  4 per frozen parameter on the trained path (forward + gradient through it) and 6 per
  trainable one (forward + both gradients); attention's own score/value products are left
  out (prompts are at most 60 tokens, a few % of the matmuls at d_model ≥ 576).
* This machine: the effective FLOP/s of each phase is calibrated on the measurements of
  SmolLM2-135M on the project's 2-core CPU (BENCHMARKS.md §2, §3, §12), scaled by core count.
* GPUs: an assumed peak TFLOP/s per kind times an assumed utilisation; decoding is also held
  to the memory bandwidth (weights + KV cache read once per step).
* Several processes or GPUs split the prompts, the training batches and the queries
  data-parallel.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field, model_validator

from .data import PriorConfig
from .errors import AutoscopeError
from .generator import ControlLayer, SiteEncoder, default_control_layers
from .devices import GPU_MEMORY_SHARE
from .sample import DECODE_KV_BUDGET, MAX_DECODE_ROWS, MAX_DECODE_ROWS_GPU
from .sites import parse_sites
from .targets import TargetConfig, embedded_gguf_path, find_architecture
from .train import TrainConfig, site_encoder_hidden, spread_control_layers

GiB = float(1 << 30)
Dtype = Literal["float32", "bfloat16", "float16"]
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
SITE_BYTES = 4  # cached site activations are float32 whatever the target's dtype (extract: `.float()`)
TRUNK_BYTES = 2  # the trunk residual is kept in float16 (NOTES §1)
ADAMW_BYTES = 16  # per trainable parameter: float32 weight, gradient and AdamW's two moments
RUNTIME_GIB = 0.5  # torch/transformers (or the CUDA context) and the tokenizer, per process
CACHE_CHUNK = 1024  # prompts per cache chunk held in memory before it is written (ActivationCache.build)
TIGHT = 0.9  # over this share of the memory a figure is flagged as tight


@dataclass(frozen=True)
class GPUKind:
    name: str
    bf16_tflops: float  # dense, tensor cores
    fp32_tflops: float  # plain float32 (PyTorch does not use TF32 for matmuls by default)
    memory_gib: float
    bandwidth_tbs: float | None  # memory bandwidth, TB/s


GPU_KINDS = {
    "h100": GPUKind("H100 SXM", 989.0, 67.0, 80.0, 3.35),
    "h200": GPUKind("H200", 989.0, 67.0, 141.0, 4.8),
    "a100": GPUKind("A100 80GB", 312.0, 19.5, 80.0, 2.0),
    "l4": GPUKind("L4", 121.0, 30.3, 24.0, 0.3),
}
UTILISATION = {"caching": 0.35, "training": 0.30, "sampling": 0.35}  # share of the GPU's peak reached
BANDWIDTH_UTILISATION = 0.7


@dataclass(frozen=True)
class CPUReference:
    """The project's own measurements of SmolLM2-135M-Instruct (float32, the default run at L18)
    on its 2-core CPU; each phase's effective FLOP/s on this machine is derived from them."""

    cores: int = 2
    caching_tokens_per_s: tuple[float, ...] = (1153.0, 1551.0)  # BENCHMARKS §2 (2026-11-26) and §11 quickstarts
    training_steps: tuple[float, ...] = (844.0, 1134.0)  # control-training steps in the same two runs ...
    training_s: float = 482.0  # ... in 482 s each
    verified_samples_per_s: float = 34.1  # BENCHMARKS §12, recipe 2, generated prior (recipe 3 keeps its linear encoder there, §32)
    site: str = "L18"
    out_vocab: int = 2350  # the generated prior's output vocabulary (BENCHMARKS §2)


CPU_REF = CPUReference()


# -- the model's shape, from its config on the meta device --------------------------------

class ModelShape(BaseModel):
    """What the plan needs to know about the target; counted on the meta device."""

    model_type: str
    params: int  # every parameter once (tied embeddings counted once)
    block_params: list[int]  # per decoder block
    embed_params: int
    head_params: int  # 0 when the output layer is tied to the embedding
    d_model: int
    d_ff: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int

    def blocks(self, lo: int, hi: int) -> int:
        """Parameters of blocks lo..hi-1."""
        return sum(self.block_params[lo:hi])


def smollm2_shape() -> ModelShape:
    """SmolLM2-135M-Instruct, written out (the CPU calibration's reference; tests check it
    against the shape counted from its config)."""
    d, ff, kv = 576, 1536, 192
    block = 2 * d * d + 2 * d * kv + 3 * d * ff + 2 * d
    return ModelShape(model_type="llama", params=30 * block + 49152 * d + d, block_params=[block] * 30, embed_params=49152 * d,
                      head_params=0, d_model=d, d_ff=ff, n_layers=30, n_heads=9, n_kv_heads=3, head_dim=64, vocab=49152)


def load_config(target: str) -> tuple[Any, str]:
    """The target's transformers config, without its weights: 'embedded' (the GGUF's metadata),
    a .gguf file, a config.json, a model directory, or a hub id (needs network or the HF cache)."""
    from transformers import AutoConfig

    try:
        if target == "embedded":
            p = embedded_gguf_path()
            return AutoConfig.from_pretrained(p.parent, gguf_file=p.name), f"embedded ({p.name}, metadata only)"
        p = Path(target)
        if target.endswith(".gguf"):
            if not p.exists():
                raise AutoscopeError(f"GGUF file {target} does not exist")
            return AutoConfig.from_pretrained(p.parent, gguf_file=p.name), f"{target} (metadata only)"
        if p.is_file() or p.is_dir():
            if p.is_dir() and not (p / "config.json").exists():
                raise AutoscopeError(f"{target} holds no config.json")
            return AutoConfig.from_pretrained(str(p)), target
        if target.endswith(".json"):
            raise AutoscopeError(f"config file {target} does not exist")
        return AutoConfig.from_pretrained(target), target
    except AutoscopeError:
        raise
    except (OSError, ValueError, KeyError) as e:
        raise AutoscopeError(
            f"cannot read the config of {target!r} ({e.__class__.__name__}: {' '.join(str(e).split())[:160]}). Pass 'embedded', "
            "a config.json, a model directory, a .gguf file, or a hub id (needs network or a filled HF cache)"
        ) from None


def model_shape(config: Any) -> ModelShape:
    """Build the model on the meta device (no memory, no weights) and count its parameters."""
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError) as e:
        raise AutoscopeError(f"transformers cannot build a causal LM from this config: {e}") from None
    arch = find_architecture(model)
    emb, out = model.get_input_embeddings(), model.get_output_embeddings()
    tied = out is None or out.weight is emb.weight
    d = arch.d_model
    return ModelShape(
        model_type=config.model_type,
        params=sum(p.numel() for p in model.parameters()),
        block_params=[sum(p.numel() for p in layer.parameters()) for layer in arch.layers],
        embed_params=emb.weight.numel(),
        head_params=0 if tied else sum(p.numel() for p in out.parameters()),
        d_model=d,
        d_ff=getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d,
        n_layers=arch.n_layers,
        n_heads=arch.n_heads,
        n_kv_heads=getattr(config, "num_key_value_heads", None) or arch.n_heads,
        head_dim=arch.head_dim,
        vocab=emb.weight.shape[0],
    )


# -- the plan's input -----------------------------------------------------------------------

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def parse_memory(text: str | float) -> float:
    """'80GB', '80GiB', '80G', '512MB' or a number -> GiB. GB is read as GiB: a GPU sold as
    80GB holds 80 GiB."""
    if isinstance(text, (int, float)):
        return float(text)
    m = _SIZE.match(str(text))
    if not m:
        raise AutoscopeError(f"cannot read memory size {text!r}: write e.g. 80GB, 24GiB or 512MB")
    scale = {"": 1.0, "k": 1 / (1 << 20), "m": 1 / 1024, "g": 1.0, "t": 1024.0}[m[2].lower()]
    return float(m[1]) * scale


def this_machine() -> tuple[int, float]:
    """(CPU cores this process may use, RAM in GiB): psutil if installed, else /proc/meminfo."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        import psutil

        return cores, psutil.virtual_memory().total / GiB
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return cores, int(line.split()[1]) * 1024 / GiB
    except OSError:
        pass
    raise AutoscopeError("cannot read this machine's RAM: pass --ram, e.g. --ram 24GB")


class PlanConfig(BaseModel):
    """A run to plan: the target, what is cached and trained, and the hardware."""

    target: str = Field("embedded", description="'embedded', a hub id, a model directory, a config.json or a .gguf file")
    sites: str = Field("L18", description="sites the generator is trained on, e.g. L18 or L12,L18,L24")
    prompts: int = Field(PriorConfig().n, ge=1, description="prompts in the prior (all are cached)")
    text_tokens: float = Field(14.0, gt=0, description="mean tokens of a prompt's own text: the generated refusal prior "
                               "has 13.9 with SmolLM2's tokenizer")
    longest_text_tokens: int = Field(26, ge=1, description="longest prompt's text tokens: pads batches and caps a "
                                     "sample's length (refusal prior: 26; prompts over 60 are dropped)")
    template_tokens: int = Field(6, ge=0, description="chat-template tokens after the text, run with it when caching "
                                 "(SmolLM2: 20.1 tokens per cached prompt)")
    prefix_tokens: int = Field(14, ge=0, description="shared chat-template prefix (computed once; in every KV cache)")
    out_vocab: int = Field(2500, ge=1, description="generator output ids (restricted to the prior's tokens: 2,350 on "
                           "the refusal prior)")
    dtype: Dtype | None = Field(None, description="weights' dtype; default float32 on the CPU (what autoscope runs), "
                                "bfloat16 on GPUs")
    gpus: int = Field(0, ge=0, description="GPUs; 0 plans for the CPU")
    gpu_kind: str = Field("h100", description="h100, h200, a100, l4, or a peak dense TFLOP/s figure")
    gpu_memory_gib: float | None = Field(None, gt=0, description="memory per GPU (default: the kind's)")
    cpus: int | None = Field(None, ge=1, description="CPU cores (default: this machine's)")
    ram_gib: float | None = Field(None, gt=0, description="host RAM (default: this machine's when planning for the CPU; "
                                  "with GPUs it is checked only when given)")
    disk_free_gib: float | None = Field(None, ge=0, description="free disk for the activation cache (None: not checked)")
    processes: int | None = Field(None, ge=1, description="data-parallel processes (default: one per GPU, or one)")
    minutes: float = Field(TrainConfig().minutes, gt=0, description="control-layer training budget")
    queries: int = Field(40, ge=1, description="queries sampled per site")
    samples: int = Field(16, ge=1, description="samples per query")

    @model_validator(mode="after")
    def _check(self) -> PlanConfig:
        if self.gpus and self.gpu_kind.lower() == "cpu":
            raise AutoscopeError("--gpu-kind cpu plans for the CPU: leave out --gpus, or name a GPU kind")
        if self.longest_text_tokens > TargetConfig().max_prompt_tokens:
            raise AutoscopeError(f"prompts over {TargetConfig().max_prompt_tokens} tokens are dropped: "
                                 f"--longest-text-tokens must be at most that")
        return self


# -- the plan -------------------------------------------------------------------------------

class PhasePlan(BaseModel):
    phase: Literal["caching", "training", "sampling"]
    memory_gib: float  # per process, where the model runs (GPU memory, or RAM on the CPU)
    host_gib: float  # per process, host RAM for the data the phase holds in memory
    memory_formula: str
    flops: float  # the phase's whole work
    flops_per_s: float  # effective, all processes together
    seconds: float
    work: str  # the work, in words


class Plan(BaseModel):
    target: str
    model_type: str
    params: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int
    sites: list[str]
    control_blocks: list[int]
    trunk_layer: int | None  # block whose input the cache keeps per text token (trunk shortcut)
    fused_verification: bool
    dtype: str
    hardware: str
    devices: int  # GPUs used, or 1 for the CPU
    processes: int
    memory_per_device_gib: float | None  # GPU memory, or RAM on the CPU (None: unknown)
    weights_gib: float
    trainable_params: int
    cache_gib: float
    cache_sites_gib: float
    cache_trunk_gib: float
    phases: list[PhasePlan]
    training_steps: int  # per process, in the budget
    training_epochs: float  # passes over the training prompts in the budget, all processes together
    epoch_s: float
    decode_rows: int
    samples_total: int
    fits: bool
    problems: list[str]  # what will not fit, each with a suggestion
    notes: list[str]
    assumptions: list[str]

    def phase(self, name: str) -> PhasePlan:
        return next(p for p in self.phases if p.phase == name)


@dataclass
class _Work:
    """The run's workload in the quantities the FLOP and memory formulas read."""

    shape: ModelShape
    sites: list[Any]
    ctl: list[int]
    trunk: int | None
    text_tokens: float
    longest: int
    template_tokens: int
    prefix_tokens: int
    out_vocab: int
    n_heads_ctl: int
    head_dim_ctl: int
    batch: int
    encoder_hidden: int | None = None  # the site encoder's hidden width (None: linear)

    @property
    def deepest(self) -> int:
        return max(s.layer for s in self.sites)

    @property
    def cache_blocks(self) -> int:
        """Blocks a cached prompt runs through: the forward stops once the deepest site and the
        trunk residual are recorded."""
        return max(self.deepest + 1, self.trunk or 0)

    @property
    def fused(self) -> bool:
        return min(self.ctl) > self.deepest

    @property
    def train_from(self) -> int:
        return self.trunk if self.trunk is not None else 0

    def ctl_per_token(self) -> int:
        """Control-layer weights a token passes through (query projection), all control blocks."""
        h, hd, d = self.n_heads_ctl, self.head_dim_ctl, self.shape.d_model
        return len(self.ctl) * (d * h * hd + h * (hd + d))  # + the two einsums per head

    def ctl_per_row(self) -> int:
        """Weights a condition passes through once per row: keys, values, site encoder."""
        h, hd, d = self.n_heads_ctl, self.head_dim_ctl, self.shape.d_model
        encoder = 2 * d * self.encoder_hidden if self.encoder_hidden else d * d
        return len(self.ctl) * (d * h * hd + d * h * d) + encoder


def control_blocks_for(shape: ModelShape, sites: list[Any]) -> list[int]:
    """Where `train` puts the control layers by default (recipe 2, the target as backbone)."""
    return spread_control_layers(max(s.layer for s in sites) + 1, shape.n_layers) or default_control_layers(shape.n_layers)


def trainable_params(d: int, n_sites: int, n_ctl: int, n_heads: int, head_dim: int, encoder_hidden: int | None = None) -> int:
    """Parameters of the inverter (site encoders + control layers), counted on the meta device."""
    with torch.device("meta"):
        enc = SiteEncoder([f"s{i}" for i in range(n_sites)], d, encoder_hidden)
        ctl = ControlLayer(d, d, n_heads, head_dim)
    return sum(p.numel() for p in enc.parameters()) + n_ctl * sum(p.numel() for p in ctl.parameters())


def cache_flops_per_prompt(w: _Work) -> float:
    return 2.0 * w.shape.blocks(0, w.cache_blocks) * (w.text_tokens + w.template_tokens)


def train_flops_per_step(w: _Work) -> float:
    """One step of `batch` prompts from the trunk shortcut: frozen blocks from the first control
    block up and the (restricted) output layer at 4 FLOPs per parameter, control layers at 6."""
    s = w.shape
    frozen = s.blocks(w.train_from, s.n_layers) + s.d_model * w.out_vocab
    per_token = 4.0 * frozen + 6.0 * w.ctl_per_token()
    tokens = w.text_tokens + 1  # the text and the end token
    return w.batch * (tokens * per_token + 6.0 * w.ctl_per_row())


def sample_flops(w: _Work) -> tuple[float, float]:
    """(decoding FLOPs per decoded token, other FLOPs per sample: condition + verification)."""
    s = w.shape
    per_token = 2.0 * (s.blocks(0, s.n_layers) + s.d_model * w.out_vocab + w.ctl_per_token())
    site_blocks = s.blocks(0, w.deepest + 1)
    verify = w.template_tokens if w.fused else (w.text_tokens + w.template_tokens)
    return per_token, 2.0 * w.ctl_per_row() + 2.0 * site_blocks * verify


def sample_token_cap(w: _Work) -> int:
    """Scope.sample_token_cap: the longest training prompt + the end token + a margin of 4."""
    return w.longest + 1 + 4


def kv_bytes_per_row(w: _Work, dtype_bytes: int) -> int:
    """sample.decode_rows' formula: keys and values of every layer for prefix + the sample cap."""
    s = w.shape
    return 2 * s.n_layers * s.n_kv_heads * s.head_dim * (w.prefix_tokens + sample_token_cap(w)) * dtype_bytes


def _reference_work() -> _Work:
    from .sites import parse_site

    shape = smollm2_shape()
    sites = [parse_site(CPU_REF.site)]
    ctl = control_blocks_for(shape, sites)
    tc = TrainConfig()
    return _Work(shape, sites, ctl, min(ctl), 14.0, 26, 6, 14, CPU_REF.out_vocab, tc.n_heads, tc.head_dim, tc.batch_size)


def cpu_flops_per_s(cores: int) -> dict[str, float]:
    """Effective FLOP/s per phase on a CPU with `cores` cores: the reference measurements of
    SmolLM2 through this module's own FLOP formulas, scaled linearly by cores."""
    w = _reference_work()
    scale = cores / CPU_REF.cores
    tok = sum(CPU_REF.caching_tokens_per_s) / len(CPU_REF.caching_tokens_per_s)
    steps = sum(CPU_REF.training_steps) / len(CPU_REF.training_steps) / CPU_REF.training_s
    per_tok, per_sample = sample_flops(w)
    return {
        "caching": tok / (w.text_tokens + w.template_tokens) * cache_flops_per_prompt(w) * scale,
        "training": steps * train_flops_per_step(w) * scale,
        "sampling": CPU_REF.verified_samples_per_s * (per_tok * (w.text_tokens + 1) + per_sample) * scale,
    }


def _gpu_kind(text: str) -> GPUKind:
    key = text.strip().lower()
    if key in GPU_KINDS:
        return GPU_KINDS[key]
    try:
        tf = float(key.removesuffix("tflops").removesuffix("tflop/s").strip())
    except ValueError:
        raise AutoscopeError(f"unknown GPU kind {text!r}: use {', '.join(GPU_KINDS)}, cpu, or a peak dense TFLOP/s figure "
                             "such as 400") from None
    if tf <= 0:
        raise AutoscopeError(f"--gpu-kind {text}: a TFLOP/s figure must be positive")
    return GPUKind(f"GPU at {tf:g} TFLOP/s", tf, tf, 0.0, None)


def fmt_seconds(s: float) -> str:
    """A duration for people: seconds under 90 s, minutes under 90 min, else hours."""
    if s < 10:
        return f"{s:.2g} s"
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _g(x: float) -> str:
    return f"{x:.2f} GiB" if x < 10 else f"{x:.1f} GiB"


def plan(cfg: PlanConfig, shape: ModelShape | None = None) -> Plan:
    """Memory, cache size and time for the run `cfg` describes (`shape`: skip reading the config)."""
    if shape is None:
        config, label = load_config(cfg.target)
        shape = model_shape(config)
    else:
        label = cfg.target
    sites = parse_sites(cfg.sites, shape.n_layers, shape.n_heads)
    tc = TrainConfig()
    on_gpu = cfg.gpus > 0
    dtype = cfg.dtype or ("bfloat16" if on_gpu else "float32")
    b = DTYPE_BYTES[dtype]
    ctl = control_blocks_for(shape, sites)
    trunk = min(ctl)
    w = _Work(shape, sites, ctl, trunk, cfg.text_tokens, cfg.longest_text_tokens, cfg.template_tokens, cfg.prefix_tokens,
              min(cfg.out_vocab, shape.vocab), tc.n_heads, tc.head_dim, tc.batch_size, site_encoder_hidden(tc, shape.d_model))
    d, L, H = shape.d_model, shape.n_layers, shape.n_heads
    n, n_sites = cfg.prompts, len(sites)
    problems: list[str] = []
    notes: list[str] = []

    # -- hardware ------------------------------------------------------------------------
    if on_gpu:
        kind = _gpu_kind(cfg.gpu_kind)
        mem = cfg.gpu_memory_gib or kind.memory_gib or None
        if mem is None:
            raise AutoscopeError(f"--gpu-kind {cfg.gpu_kind}: pass --gpu-memory too, e.g. --gpu-memory 80GB")
        processes = cfg.processes or cfg.gpus
        devices = min(processes, cfg.gpus)
        per_device = math.ceil(processes / cfg.gpus)
        peak = (kind.bf16_tflops if b == 2 else kind.fp32_tflops) * 1e12
        rates = {k: devices * peak * u for k, u in UTILISATION.items()}
        ram = cfg.ram_gib
        hardware = f"{cfg.gpus} × {kind.name}, {mem:g} GiB each"
    else:
        cores, ram = (cfg.cpus, cfg.ram_gib) if cfg.cpus and cfg.ram_gib else this_machine()
        cores, ram = cfg.cpus or cores, cfg.ram_gib or ram
        mem = ram
        processes = cfg.processes or 1
        devices, per_device = 1, processes
        rates = cpu_flops_per_s(cores)
        kind = None
        hardware = f"CPU, {cores} cores, {ram:.1f} GiB RAM"
    rt = RUNTIME_GIB * GiB

    # -- sizes ---------------------------------------------------------------------------
    weights = shape.params * b
    # the mix is read from data not yet cached: count the MLP encoder the loose case gets (the larger, by 1M at SmolLM2's width)
    n_trainable = trainable_params(d, n_sites, len(ctl), tc.n_heads, tc.head_dim, w.encoder_hidden)
    cache_sites = n * n_sites * d * SITE_BYTES
    cache_trunk = n * cfg.text_tokens * d * TRUNK_BYTES + n * 4  # + one int32 length per prompt
    cache = cache_sites + cache_trunk

    # -- caching -------------------------------------------------------------------------
    t_suf = cfg.longest_text_tokens + cfg.template_tokens
    ctx = cfg.prefix_tokens + t_suf
    cb = tc.cache_batch_size
    act_cache = cb * t_suf * (4 * d + 3 * shape.d_ff) * b + cb * H * t_suf * ctx * 4
    chunk = CACHE_CHUNK * (n_sites * d * SITE_BYTES + cfg.text_tokens * d * TRUNK_BYTES)
    caching_flops = n * cache_flops_per_prompt(w)
    caching = PhasePlan(
        phase="caching", memory_gib=(weights + act_cache + rt) / GiB, host_gib=chunk / GiB,
        memory_formula=f"weights {_g(weights / GiB)} + activations of a batch of {cb} × {t_suf} tokens "
                       f"[{cb}·T·(4·d + 3·d_ff)·{b} B + {cb}·heads·T·(T + prefix)·4 B] {_g(act_cache / GiB)} + runtime {RUNTIME_GIB} GiB; "
                       f"host: one chunk of {CACHE_CHUNK} prompts {_g(chunk / GiB)}",
        flops=caching_flops, flops_per_s=rates["caching"], seconds=caching_flops / rates["caching"],
        work=f"{n:,} prompts × {cfg.text_tokens + cfg.template_tokens:g} tokens through blocks 0-{w.cache_blocks - 1} "
             f"at 2 × {shape.blocks(0, w.cache_blocks) / 1e6:,.1f}M FLOPs per token",
    )

    # -- training ------------------------------------------------------------------------
    t_tr = cfg.longest_text_tokens + 1
    run_blocks = L - w.train_from
    act_train = tc.batch_size * t_tr * run_blocks * (6 * d + 4 * shape.d_ff + 2 * H * t_tr) * b
    logits = tc.batch_size * t_tr * w.out_vocab * 4 * 3
    optim = n_trainable * ADAMW_BYTES
    train_data = cache  # the whole cache (site activations and trunk) is loaded for training
    step_flops = train_flops_per_step(w)
    step_s = step_flops * devices / rates["training"]  # each process runs its own batch
    budget_s = cfg.minutes * 60
    steps = int(budget_s / step_s)
    n_train = max(1, n - PriorConfig().heldout - PriorConfig().valid)
    epoch_s = n_train / (tc.batch_size * devices) * step_s
    training = PhasePlan(
        phase="training", memory_gib=(weights + optim + act_train + logits + rt) / GiB, host_gib=train_data / GiB,
        memory_formula=f"frozen weights {_g(weights / GiB)} + {n_trainable / 1e6:,.1f}M trainable × {ADAMW_BYTES} B "
                       f"(float32 weight, gradient, AdamW moments) {_g(optim / GiB)} + activations kept for the backward "
                       f"[{tc.batch_size}·T·{run_blocks} blocks·(6·d + 4·d_ff + 2·heads·T)·{b} B, T = {t_tr}] "
                       f"{_g(act_train / GiB)} + logits [{tc.batch_size}·T·{w.out_vocab}·4 B·3] {_g(logits / GiB)} + runtime; "
                       f"host: the activation cache, loaded whole {_g(train_data / GiB)}",
        flops=steps * step_flops * devices, flops_per_s=rates["training"], seconds=budget_s,
        work=f"{cfg.minutes:g} min budget: ~{steps:,} steps of {tc.batch_size} prompts per process "
             f"({steps * tc.batch_size * devices / n_train:.1f} epochs of {n_train:,}); one epoch {fmt_seconds(epoch_s)}",
    )

    # -- sampling ------------------------------------------------------------------------
    job_rows = cfg.queries * cfg.samples  # per site
    per_row_kv = kv_bytes_per_row(w, b)
    # sample.decode_rows: on a GPU, half of what the weights, the inverter and the runtime leave free (devices.memory_budget)
    kv_budget = int(GPU_MEMORY_SHARE * max(0.0, mem * GiB - weights - n_trainable * 4 - rt)) if on_gpu else DECODE_KV_BUDGET
    rows = max(1, min(MAX_DECODE_ROWS_GPU if on_gpu else MAX_DECODE_ROWS, math.ceil(job_rows / devices), kv_budget // per_row_kv))
    kv = rows * per_row_kv
    cond = rows * len(ctl) * tc.n_heads * (d + tc.head_dim) * 4
    inv_w = n_trainable * 4
    site_acts = n * n_sites * d * SITE_BYTES  # every sampled site's cached activations (queries, references)
    n_samples = job_rows * n_sites
    per_tok, per_sample = sample_flops(w)
    dec_tokens = n_samples * (cfg.text_tokens + 1)
    sampling_flops = dec_tokens * per_tok + n_samples * per_sample
    sample_s = sampling_flops / rates["sampling"]
    bound = ""
    if on_gpu and kind is not None and kind.bandwidth_tbs:
        # a decoding step reads every weight and the filled KV cache once, whatever the batch
        steps_dec = dec_tokens / rows / devices
        step_bytes = weights + inv_w + rows * per_row_kv / 2
        mem_s = steps_dec * step_bytes / (kind.bandwidth_tbs * 1e12 * BANDWIDTH_UTILISATION)
        comp_s = dec_tokens * per_tok / rates["sampling"]
        if mem_s > comp_s:
            sample_s += mem_s - comp_s
            bound = f"; decoding held by memory bandwidth ({fmt_seconds(mem_s)} against {fmt_seconds(comp_s)} of compute)"
    sampling = PhasePlan(
        phase="sampling", memory_gib=(weights + inv_w + kv + cond + rows * w.out_vocab * 4 + rt) / GiB, host_gib=site_acts / GiB,
        memory_formula=f"weights {_g(weights / GiB)} + inverter {_g(inv_w / GiB)} + KV cache of {rows} rows × "
                       f"{per_row_kv / 2**20:.1f} MiB [2·layers·kv_heads·head_dim·(prefix {cfg.prefix_tokens} + cap "
                       f"{sample_token_cap(w)})·{b} B] {_g(kv / GiB)} + the rows' projected conditions {_g(cond / GiB)} + runtime; "
                       f"host: the sites' cached activations {_g(site_acts / GiB)}",
        flops=sampling_flops, flops_per_s=rates["sampling"], seconds=sample_s,
        work=f"{cfg.queries} queries × {cfg.samples} samples × {n_sites} site{'s' if n_sites > 1 else ''} = {n_samples:,} "
             f"samples of ~{cfg.text_tokens + 1:g} tokens, {rows} rows per decoding batch, "
             f"{'fused' if w.fused else 'full'} verification{bound}",
    )
    phases = [caching, training, sampling]

    # -- what fits -----------------------------------------------------------------------
    fits = True
    where = "GPU" if on_gpu else "RAM"
    for ph in phases:
        need = ph.memory_gib * per_device + (0 if on_gpu else ph.host_gib * processes)
        share = f" ({per_device} processes share each {'GPU' if on_gpu else 'machine'})" if per_device > 1 else ""
        if mem is not None and need > mem:
            fits = False
            problems.append(f"{ph.phase} needs {_g(need)} of {where}{share}, over the {mem:g} GiB there: "
                            + _suggest(ph.phase, dtype, weights / GiB, n_trainable * ADAMW_BYTES / GiB, need, mem, on_gpu, per_device))
        elif mem is not None and need > TIGHT * mem:
            notes.append(f"{ph.phase} needs {_g(need)} of the {mem:g} GiB {where}: tight, little room for anything else")
        if on_gpu and ram is not None and ph.host_gib * processes > ram:
            fits = False
            problems.append(f"{ph.phase} holds {_g(ph.host_gib * processes)} of data in host RAM ({processes} processes), over "
                            f"the {ram:g} GiB there: fewer prompts or sites, or fewer processes per machine")
    if weights / GiB > (mem or math.inf):
        problems.insert(0, f"the weights alone ({_g(weights / GiB)} at {dtype}) are over the {mem:g} GiB of "
                        f"{'one GPU' if on_gpu else 'RAM'}" + (": use --dtype bfloat16" if dtype == "float32" else
                                                               ": a device with more memory; autoscope does not shard a model"))
    if cfg.disk_free_gib is not None and cache / GiB > cfg.disk_free_gib:
        fits = False
        problems.append(f"the activation cache ({_g(cache / GiB)}) is over the {cfg.disk_free_gib:.1f} GiB free on disk: "
                        f"fewer prompts or sites, or another --runs-dir")
    if not w.fused:
        top = next(s.name for s in sites if s.layer == w.deepest)
        notes.append(f"site {top} is in the top block: control layers go in blocks {ctl}, at or below it, so samples are "
                     "verified by a full re-run of the target")
    total_minutes = 14.5
    if caching.seconds > (total_minutes - cfg.minutes) * 60:
        left = max(2.0, total_minutes - caching.seconds / 60)
        notes.append(f"`train`'s default --total-minutes {total_minutes} would cut training to {min(left, cfg.minutes):.1f} min "
                     f"after {fmt_seconds(caching.seconds)} of caching: pass --total-minutes 0 (or a larger budget)")
    epochs = steps * tc.batch_size * devices / n_train
    if epochs < 1:
        want = 3 * epoch_s / 60
        notes.append(f"training passes over only {epochs:.0%} of the training prompts in {cfg.minutes:g} min: about "
                     f"{want:,.0f} min (--minutes) would give the ~3 passes the default run makes on this CPU")
    elif epochs > 10:
        notes.append(f"{cfg.minutes:g} min make ~{epochs:.0f} passes over the training prompts; early stopping on held-out loss "
                     f"(patience {tc.patience} evaluations) will likely end training sooner, or the prior can be larger")
    if on_gpu:
        notes.append(f"run it with `train --device cuda --dtype {dtype}`" + (f" and `--processes {processes}` (one per GPU: caching and "
                     "training split data-parallel)" if processes > 1 else "") + "; GPU runs are estimates, not yet measured (README "
                     "\"GPUs and several processes\")")
    elif processes > 1:
        notes.append(f"{processes} processes on one CPU share its cores: no faster than one, and each holds its own copy of the weights")

    # -- assumptions, with the numbers used ------------------------------------------------
    if on_gpu:
        speed = (f"{kind.name}: {(kind.bf16_tflops if b == 2 else kind.fp32_tflops):g} TFLOP/s peak at {dtype} "
                 f"({'dense bf16/fp16 tensor cores' if b == 2 else 'plain fp32, no TF32'}), utilisation "
                 + ", ".join(f"{k} {u:.0%}" for k, u in UTILISATION.items())
                 + (f"; decoding also bounded by {kind.bandwidth_tbs:g} TB/s × {BANDWIDTH_UTILISATION:.0%} per step "
                    "(every weight and the KV cache read once)" if kind.bandwidth_tbs else "; memory bandwidth not modelled"))
    else:
        ref = cpu_flops_per_s(CPU_REF.cores)
        speed = (f"this CPU: effective GFLOP/s per phase calibrated on SmolLM2-135M (float32, L18) on the project's 2-core host — "
                 f"caching {'/'.join(f'{x:,.0f}' for x in CPU_REF.caching_tokens_per_s)} tokens/s → {ref['caching'] / 1e9:.0f}, "
                 f"training {'/'.join(f'{x:.0f}' for x in CPU_REF.training_steps)} steps in {CPU_REF.training_s:.0f} s → "
                 f"{ref['training'] / 1e9:.0f}, sampling {CPU_REF.verified_samples_per_s} verified samples/s → "
                 f"{ref['sampling'] / 1e9:.0f} (BENCHMARKS §2, §11, §12) — scaled by {rates['caching'] / ref['caching']:.2f} "
                 "for this machine's cores; the same at 16-bit dtypes (NOTES §18); memory bandwidth not modelled")
    assumptions = [
        f"parameters counted on the meta device from the config: {shape.params:,}; weights at {dtype}, {b} bytes each",
        f"prompts: {cfg.text_tokens:g} text tokens on average (longest {cfg.longest_text_tokens}), {cfg.template_tokens} template "
        f"tokens after the text, a {cfg.prefix_tokens}-token shared prefix computed once (the refusal prior on SmolLM2)",
        f"FLOPs: forward 2 per parameter per token; training 4 per frozen and 6 per trainable parameter on the trained path; "
        f"attention scores and softmax left out",
        f"caching stops after the deepest site and the trunk residual (block {w.cache_blocks - 1}); site activations float32, "
        f"trunk residual float16 at each text token (NOTES §1)",
        f"generator: the target as its frozen backbone, control layers in blocks {ctl} ({tc.n_heads} heads of {tc.head_dim}), "
        f"trained from the trunk at block {trunk} with batches of {tc.batch_size}; output restricted to {w.out_vocab:,} ids",
        f"training runs for the --minutes budget; {n_train:,} training prompts after {PriorConfig().heldout} held-out and "
        f"{PriorConfig().valid} validation ones",
        f"sampling: decoding batch of up to {MAX_DECODE_ROWS_GPU if on_gpu else MAX_DECODE_ROWS} rows within a "
        f"{_g(kv_budget / GiB)} KV cache ({'half the GPU memory the weights and inverter leave' if on_gpu else 'the CPU default'}), samples "
        f"~{cfg.text_tokens + 1:g} tokens (cap {sample_token_cap(w)})",
        speed,
        f"data-parallel: {processes} process{'es' if processes > 1 else ''} on {devices} device{'s' if devices > 1 else ''} "
        "split prompts, batches and queries evenly; model loading and start-up not counted",
        f"memory adds {RUNTIME_GIB} GiB per process for the runtime; over {TIGHT:.0%} of a device is flagged as tight",
    ]
    return Plan(
        target=label, model_type=shape.model_type, params=shape.params, d_model=d, n_layers=L, n_heads=H,
        n_kv_heads=shape.n_kv_heads, head_dim=shape.head_dim, vocab=shape.vocab, sites=[s.name for s in sites],
        control_blocks=ctl, trunk_layer=trunk, fused_verification=w.fused, dtype=dtype, hardware=hardware, devices=devices,
        processes=processes, memory_per_device_gib=mem, weights_gib=weights / GiB, trainable_params=n_trainable,
        cache_gib=cache / GiB, cache_sites_gib=cache_sites / GiB, cache_trunk_gib=cache_trunk / GiB, phases=phases,
        training_steps=steps, training_epochs=steps * tc.batch_size * devices / n_train, epoch_s=epoch_s, decode_rows=rows,
        samples_total=n_samples, fits=fits and not problems, problems=problems, notes=notes, assumptions=assumptions,
    )


def _suggest(phase: str, dtype: str, weights: float, optim: float, need: float, mem: float, on_gpu: bool, per_device: int) -> str:
    """A plain next step for a phase that does not fit."""
    tips = []
    if dtype == "float32":
        tips.append(f"--dtype bfloat16 halves the weights ({weights:.1f} → {weights / 2:.1f} GiB)")
    if per_device > 1:
        tips.append("one process per " + ("GPU" if on_gpu else "machine"))
    if phase == "training" and optim > 0.25 * need:
        tips.append(f"{optim:.1f} GiB of it is the control layers' AdamW state (6 blocks × 16 heads × d² values), "
                    "which only more memory per device holds")
    if on_gpu:
        tips.append("a GPU with more memory")
    else:
        tips.append("a machine with more RAM, or GPUs (--gpus 1 --gpu-kind h100)")
    return "; ".join(tips)
