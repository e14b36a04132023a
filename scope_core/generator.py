"""The conditional generator G(x | ẑ, site): a frozen decoder-only backbone plus
per-site encoders and tanh-gated control layers (InverseScope), or the InversionView
baseline (the activation as one extra key/value per layer).

Read top to bottom: `SiteEncoder` → `ControlLayer` → `KVCondition` (baseline) →
`Backbone` (wraps any HF causal LM, its prompt format and an optional restricted
vocabulary) → `Inverter` (ties them together; forward, save, load).

This is the method alone. Entering the backbone at its first control block (training's
trunk shortcut, continuous decoding's priming) is a speed-up: it lives in `priming.py`, in
mixins that `Backbone` and `Inverter` inherit; `speedups.py` lists every speed-up.

Control layer ℓ, per head h (paper §3.1, DESIGN.md):
    q_i = Q h_i + q̄,  k = K c + k̄,  v = V c + v̄,  ω_i = tanh(q_i·k / √d_h),
    Control(h_i, c) = Σ_h ω_i^h v^h   — added to the output of block ℓ's attention.
There is a single key, so softmax would be constant: tanh is the point. V and v̄ start
at zero, so training starts from the backbone's own distribution.
"""

from __future__ import annotations

import copy
import json
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field
from safetensors.torch import load_file, save_file
from torch import nn

from .devices import module_device
from .errors import AutoscopeError
from .kv_cache import preallocated
from .priming import BlockEntry, TrunkShortcut
from .targets import Target, TargetConfig, find_architecture, load_model_and_tokenizer


class ScratchConfig(BaseModel):
    """The small GPT-2-shaped backbone trained from scratch on the prior."""

    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    n_positions: int = 96


class GeneratorConfig(BaseModel):
    backbone: str = Field("embedded", description="'embedded', 'scratch', a hub id or a local path")
    arch: Literal["inversescope", "inversionview"] = "inversescope"
    sites: list[str]
    d_act: int
    control_layers: list[int] | None = Field(None, description="backbone blocks that carry control layers; default three upper blocks")
    n_heads: int = 8
    head_dim: int = 64
    encoder_hidden: int | None = Field(None, description="hidden width of an MLP site encoder (Linear, GELU, Linear); None: "
                                       "the paper's one linear map (runs saved before the option)")
    system_prompt: str | None = "You are a helpful assistant."
    scratch: ScratchConfig = ScratchConfig()
    vocab: list[int] | None = Field(None, description="restricted vocabulary (tokenizer ids) of a scratch backbone")
    backbone_weights_saved: bool = Field(False, description="the backbone was trained (scratch or SFT) and lives in the checkpoint")
    own_blocks_from: int | None = Field(None, description="blocks from this one up are the backbone's own (fine-tuned, saved); "
                                        "the blocks below and the embeddings are the target's, shared")
    upper_blocks: int | None = Field(None, description="a shallow generator: its own blocks are copies of only the backbone's last "
                                     "`upper_blocks` blocks, trained with the control layers (needs own_blocks_from); None: all of them")
    out_vocab: list[int] | None = Field(None, description="output restricted to these token ids (the prior's vocabulary + end)")
    max_tokens: int = 64


def default_control_layers(n_layers: int) -> list[int]:
    """Three upper blocks, as in the CPU prototype (22, 25, 28 of 30); all blocks of a small model."""
    if n_layers <= 6:
        return list(range(n_layers))
    return sorted({round(n_layers * f) for f in (0.73, 0.83, 0.93)} - {n_layers} | set())


class SiteEncoder(nn.Module):
    """One map per site on standardised activations: outlier dimensions (one L24
    dimension averages |z| ≈ 182) must not swamp the shared generator.

    The map is linear (the paper's), or with `hidden` a two-layer MLP. Why an MLP: each
    control layer's keys and values are linear in the encoded condition, so with a linear
    encoder the only non-linearity between ẑ and what is written into the residual stream is
    the tanh gate; on the real refusal sets an MLP of twice the width lowered held-out loss by
    0.06–0.08 nats for 1M more parameters (BENCHMARKS §31)."""

    def __init__(self, sites: list[str], d_act: int, hidden: int | None = None) -> None:
        super().__init__()
        self.sites = list(sites)
        if hidden:
            self.proj = nn.ModuleDict({s: nn.Sequential(nn.Linear(d_act, hidden), nn.GELU(), nn.Linear(hidden, d_act)) for s in sites})
        else:
            self.proj = nn.ModuleDict({s: nn.Linear(d_act, d_act) for s in sites})
        for s in sites:
            if not hidden:
                nn.init.kaiming_uniform_(self.proj[s].weight, a=math.sqrt(5))
            self.register_buffer(f"mean_{s}", torch.zeros(d_act))
            self.register_buffer(f"scale_{s}", torch.ones(d_act))

    def set_stats(self, site: str, mean: torch.Tensor, scale: torch.Tensor) -> None:
        getattr(self, f"mean_{site}").copy_(mean)
        getattr(self, f"scale_{site}").copy_(scale)

    def forward(self, z: torch.Tensor, site_idx: torch.Tensor) -> torch.Tensor:
        """z [B, d_act] raw activations, site_idx [B] index into `sites` -> c [B, d_act]."""
        c = torch.empty_like(z)
        for i, s in enumerate(self.sites):
            rows = site_idx == i
            if rows.any():
                zn = (z[rows] - getattr(self, f"mean_{s}")) / getattr(self, f"scale_{s}")
                c[rows] = self.proj[s](zn)
        return c


class ControlLayer(nn.Module):
    """Multi-head tanh-gated read of a single condition vector."""

    def __init__(self, d_model: int, d_cond: int, n_heads: int, head_dim: int):
        super().__init__()
        self.n_heads, self.head_dim, self.d_model = n_heads, head_dim, d_model
        self.q = nn.Linear(d_model, n_heads * head_dim)
        self.k = nn.Linear(d_cond, n_heads * head_dim)
        self.v = nn.Linear(d_cond, n_heads * d_model)
        nn.init.zeros_(self.v.weight)
        nn.init.zeros_(self.v.bias)

    def project(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The condition's keys [B, heads, head_dim] and values [B, heads, d_model]: they depend
        on c alone, so decoding computes them once per batch, not once per token (the value
        projection alone costs as much as a backbone MLP per row)."""
        B = c.shape[0]
        return self.k(c).view(B, self.n_heads, self.head_dim), self.v(c).view(B, self.n_heads, self.d_model)

    def apply(self, h: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """h [B, T, d_model] read against projected keys/values -> control signal [B, T, d_model]."""
        B, T, _ = h.shape
        q = self.q(h).view(B, T, self.n_heads, self.head_dim)
        w = torch.tanh(torch.einsum("bthd,bhd->bth", q, k) / math.sqrt(self.head_dim))
        return torch.einsum("bth,bhd->btd", w, v)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """h [B, T, d_model], c [B, d_cond] -> control signal [B, T, d_model]."""
        return self.apply(h, *self.project(c))


@dataclass
class Condition:
    """A batch's condition, projected once for every control layer: `select` follows the
    decoder when rows leave the batch."""

    kv: dict[str, tuple[torch.Tensor, torch.Tensor]]

    def select(self, rows: torch.Tensor) -> "Condition":
        return Condition({layer: (k[rows], v[rows]) for layer, (k, v) in self.kv.items()})

    def extend(self, other: "Condition") -> "Condition":
        """This batch's rows followed by `other`'s (rows joining a continuous batch)."""
        return Condition({layer: (torch.cat([k, other.kv[layer][0]]), torch.cat([v, other.kv[layer][1]])) for layer, (k, v) in self.kv.items()})


class KVCondition(nn.Module):
    """InversionView baseline: the encoded activation becomes one extra key/value per layer."""

    def __init__(self, n_layers: int, d_cond: int, n_kv_heads: int, head_dim: int):
        super().__init__()
        self.n_kv_heads, self.head_dim = n_kv_heads, head_dim
        self.kv = nn.ModuleList(nn.Linear(d_cond, 2 * n_kv_heads * head_dim) for _ in range(n_layers))

    def forward(self, c: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        B = c.shape[0]
        out = []
        for lin in self.kv:
            k, v = lin(c).view(B, 2, self.n_kv_heads, 1, self.head_dim).unbind(1)
            out.append((k, v))
        return out


class Backbone(BlockEntry):
    """A causal LM used as the generator's language model, with its text format.

    Sequences are `prefix + text + end`. `prefix` is fixed (the chat template up to the
    user's text for chat models, a BOS token otherwise), so its KV cache — all but its
    last token — is computed once; the last prefix token is fed each time so that the
    first text token is predicted under the condition. (`BlockEntry`, priming.py: running
    it from block k on, a speed-up.)
    """

    def __init__(self, model: Any, tokenizer: Any, prefix_ids: list[int], end_id: int, vocab: list[int] | None = None,
                 out_vocab: list[int] | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.prefix_ids, self.end_id = prefix_ids, end_id
        self.arch = find_architecture(model)
        self.vocab = vocab
        self._prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        if vocab is not None:
            self._to_internal = torch.full((max(len(tokenizer), max(vocab) + 1),), len(vocab) - 1, dtype=torch.long)
            self._to_internal[torch.tensor(vocab)] = torch.arange(len(vocab))
            self._to_external = torch.tensor(vocab)
        self.out_ids: torch.Tensor | None = None
        if out_vocab is not None and vocab is None:
            self.restrict_output(out_vocab)

    def restrict_output(self, out_vocab: list[int]) -> None:
        """Why: the prior uses a few thousand of the 49k ids, and the output layer was half
        of a training step's compute. The generator's support becomes the prior's vocabulary
        (plus the end token), for training, evaluation and sampling alike."""
        self.out_ids = torch.tensor(sorted(set(out_vocab) | {self.end_id}))
        self._out_pos = torch.full((max(len(self.tokenizer), int(self.out_ids.max()) + 1),), -100, dtype=torch.long)
        self._out_pos[self.out_ids] = torch.arange(len(self.out_ids))
        self._head_w = None

    @property
    def device(self) -> torch.device:
        """Where the backbone's weights are; its inputs are moved there."""
        return module_device(self.model)

    # vocabulary mapping (identity unless the vocabulary is restricted). The tables stay on the
    # CPU; ids are looked up there and come back on their own device (no-ops on the CPU).
    def to_internal(self, ids: torch.Tensor) -> torch.Tensor:
        return ids if self.vocab is None else self._to_internal[ids.cpu()].to(ids.device)

    def to_external(self, ids: torch.Tensor) -> torch.Tensor:
        return ids if self.vocab is None else self._to_external[ids.cpu()].to(ids.device)

    def out_index(self, ext: torch.Tensor) -> torch.Tensor:
        """External ids -> indices of the output layer (-100 where an id cannot be produced)."""
        if self.out_ids is not None:
            ext = ext.clamp_max(len(self._out_pos) - 1)
            return self._out_pos[ext.cpu()].to(ext.device)
        return self.to_internal(ext)

    def out_to_external(self, idx: torch.Tensor) -> torch.Tensor:
        if self.out_ids is not None:
            return self.out_ids[idx.cpu()].to(idx.device)
        return self.to_external(idx)

    def logits(self, cache: Any, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None, **forward: Any) -> torch.Tensor:
        """Output-layer logits [B, T, V_out] (the restricted vocabulary when there is one);
        `forward`: more model arguments (explicit positions and mask for a ragged batch)."""
        kw = dict(input_ids=input_ids, inputs_embeds=inputs_embeds, past_key_values=cache, use_cache=cache is not None, **forward)
        if self.out_ids is None:
            return self.model(**kw).logits
        hf = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model  # unwrap peft
        h = hf.base_model(**kw).last_hidden_state
        head = hf.get_output_embeddings()
        w, b = head.weight, getattr(head, "bias", None)
        if torch.is_grad_enabled() and w.requires_grad:  # the head is being trained (--sft full): slice it live
            return nn.functional.linear(h, w[self.out_ids], b[self.out_ids] if b is not None else None)
        # otherwise its rows for the restricted vocabulary are sliced once, and again whenever the
        # head changes: another weight, or this one written in place (an optimiser step bumps _version)
        if getattr(self, "_head_w", None) is None or self._head_src is not w or self._head_version != w._version:
            self._head_w, self._head_src, self._head_version = w[self.out_ids].detach(), w, w._version
            self._head_b = b[self.out_ids].detach() if b is not None else None
        return nn.functional.linear(h, self._head_w, self._head_b)

    def encode(self, texts: list[str], max_tokens: int) -> list[list[int]]:
        """Token ids (external) of each text followed by the end token, truncated to max_tokens."""
        ids = self.tokenizer(texts, add_special_tokens=False).input_ids
        return [s[: max_tokens - 1] + [self.end_id] for s in ids]

    def decode(self, ids: list[int]) -> str:
        if ids and ids[-1] == self.end_id:
            ids = ids[:-1]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    @torch.no_grad()
    def prefix_kv(self) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Keys/values [1, H, P-1, D] per layer of prefix[:-1], computed once (None when the
        prefix is one token)."""
        if len(self.prefix_ids) <= 1:
            return None
        if self._prefix_kv is None:
            ids = self.to_internal(torch.tensor([self.prefix_ids[:-1]])).to(self.device)
            out = self.model(input_ids=ids, use_cache=True)
            self._prefix_kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        return self._prefix_kv

    def prefix_cache(self, batch_size: int) -> Any:
        """DynamicCache of prefix[:-1] for `batch_size` rows (None when the prefix is one token)."""
        from transformers.cache_utils import DynamicCache

        kv = self.prefix_kv()
        if kv is None:
            return None
        return DynamicCache([(k.expand(batch_size, -1, -1, -1), v.expand(batch_size, -1, -1, -1)) for k, v in kv])

    @property
    def n_kv_heads(self) -> int:
        cfg = self.model.config
        return getattr(cfg, "num_key_value_heads", None) or getattr(cfg, "num_attention_heads", None) or cfg.n_head


def teacher_forced_loss(bb: Backbone, ids: list[list[int]], cache: Any, first: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Cross-entropy of `ids` after the start tokens `first` [B, k] (and `cache`), per token."""
    B = len(ids)
    T = max(len(s) for s in ids)
    tgt = torch.full((B, T), -100, dtype=torch.long)
    feed = torch.zeros((B, T), dtype=torch.long)
    for i, s in enumerate(ids):
        ext = torch.tensor(s)
        tgt[i, : len(s)] = bb.out_index(ext)
        feed[i, : len(s)] = bb.to_internal(ext)
    inp = torch.cat([first.cpu(), feed[:, :-1]], dim=1).to(bb.device)
    tgt = tgt.to(bb.device)
    logits = bb.logits(cache, input_ids=inp)
    logits = logits[:, first.shape[1] - 1 :, :]
    n = int((tgt != -100).sum())
    loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tgt.reshape(-1), ignore_index=-100, reduction="sum")
    return loss / n, n


def full_prefix_start(bb: Backbone, batch_size: int) -> torch.Tensor:
    """Start tokens when the backbone itself changes (SFT): the whole prefix, no cache."""
    return bb.to_internal(torch.tensor(bb.prefix_ids)).expand(batch_size, -1)


def _scratch_model(cfg: ScratchConfig, vocab_size: int) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    conf = GPT2Config(vocab_size=vocab_size, n_positions=cfg.n_positions, n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head,
                      bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(conf)


def graft_upper(model: nn.Module, k: int, keep_last: int | None = None) -> nn.Module:
    """A model that *is* `model` below block k — the same embedding, blocks 0..k-1, final norm
    and head modules, shared, not copied — with its own copies of blocks k.. .

    `keep_last` N: only copies of the last N blocks follow block k-1 (renumbered k..k+N-1);
    the blocks between are left out — the shallow generator (NOTES §27), which decodes
    k + N blocks per token instead of all of them.

    Why: fitting the backbone to P(X) (the paper's step 1) changes the blocks it touches; if
    only blocks at or above the first control block change, the residual entering that block
    is still the target's, so the trunk shortcut and fused verification stay exact, and only
    the upper blocks cost memory and checkpoint space."""
    arch = find_architecture(model)
    own = {id(x) for b in list(arch.layers)[k:] for x in [*b.modules(), *b.parameters()]}
    # the layer list and its ancestors are rebuilt around the copies; everything else is shared
    path = {id(m) for m in model.modules() if any(x is arch.layers for x in m.modules())}
    memo: dict[int, Any] = {id(x): x for x in [*model.modules(), *model.parameters()] if id(x) not in own | path}
    memo.update({id(b): b for b in model.buffers()})  # constant tables (rotary frequencies, masks)
    graft = copy.deepcopy(model, memo)
    if keep_last is not None:
        n = arch.n_layers
        if not 1 <= keep_last <= n - k:
            raise AutoscopeError(f"a shallow generator keeps 1 to {n - k} of the blocks above block {k - 1}, not {keep_last}")
        g = find_architecture(graft)
        blocks = list(g.layers)
        kept = blocks[:k] + blocks[n - keep_last:]
        for new, block in enumerate(kept[k:], start=k):
            for m in block.modules():  # the KV cache is indexed by the attention's layer_idx
                if hasattr(m, "layer_idx"):
                    m.layer_idx = new
        setattr(g.layers_parent, g.layers_attr, nn.ModuleList(kept))
        graft.config.num_hidden_layers = len(kept)  # the copy's own config (deep-copied with the model)
    return graft


def own_block_parameters(model: nn.Module, k: int) -> list[nn.Parameter]:
    """Parameters of blocks k.. (the backbone's own blocks in a graft)."""
    return [p for b in list(find_architecture(model).layers)[k:] for p in b.parameters()]


def backbone_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone's weights in a checkpoint (keys `backbone.*`, prefix removed)."""
    return {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}


def arch_layers_prefix(model: nn.Module) -> str:
    """The state-dict prefix of the decoder blocks, e.g. 'model.layers'."""
    layers = find_architecture(model).layers
    return next(name for name, m in model.named_modules() if m is layers)


def shares_blocks(a: nn.Module, b: nn.Module, upto: int) -> bool:
    """Whether models a and b run the very same modules for the embedding and blocks 0..upto."""
    if a is b:
        return True
    aa, ab = find_architecture(a), find_architecture(b)
    return (a.get_input_embeddings() is b.get_input_embeddings()
            and all(aa.layers[i] is ab.layers[i] for i in range(min(upto + 1, aa.n_layers, ab.n_layers))))


def build_backbone(config: GeneratorConfig, tokenizer: Any = None, model: Any = None, device: torch.device | None = None,
                   dtype: str = "float32") -> Backbone:
    """Instantiate the backbone named in `config` (weights: pretrained, or fresh for scratch).
    A backbone loaded here (not the target's own model) goes to `device` (the target's) in
    `dtype`; a scratch one is trained, so it stays float32 there."""
    if config.backbone == "scratch":
        if tokenizer is None or config.vocab is None:
            raise AutoscopeError("a scratch backbone needs the target's tokenizer and a vocabulary")
        model = model or _scratch_model(config.scratch, len(config.vocab)).to(device or "cpu")
        end = tokenizer.eos_token_id
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else end
        return Backbone(model, tokenizer, [bos], end, vocab=config.vocab)
    if model is None:
        model, tokenizer = load_model_and_tokenizer(config.backbone, dtype, device or "cpu")
    fmt = Target(model=model, tokenizer=tokenizer, config=TargetConfig(model=config.backbone, system_prompt=config.system_prompt))
    if fmt.is_chat:
        end_id = fmt.tail_ids()[0]
        prefix = fmt.prefix_ids
    else:
        end_id = tokenizer.eos_token_id
        prefix = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else end_id]
    return Backbone(model, tokenizer, prefix, end_id, out_vocab=config.out_vocab)


def whole_target_config(config: GeneratorConfig) -> GeneratorConfig:
    """`config` with the whole target as its backbone instead of a shallow graft (the
    unconditional reference of a shallow run): same output vocabulary, no own blocks."""
    return config.model_copy(update={"own_blocks_from": None, "upper_blocks": None, "control_layers": None,
                                     "backbone_weights_saved": False})


class Inverter(TrunkShortcut, nn.Module):
    """Trainable parts of the generator (site encoder + control layers or KV condition),
    attached to a frozen backbone with forward hooks. (`TrunkShortcut`, priming.py: its loss
    from the residuals entering the first control block, a speed-up of training.)"""

    def __init__(self, config: GeneratorConfig, backbone: Backbone):
        super().__init__()
        self.config, self.backbone = config, backbone
        d_model = backbone.arch.d_model
        self.encoder = SiteEncoder(config.sites, config.d_act, config.encoder_hidden)
        if config.arch == "inversescope":
            layers = config.control_layers or default_control_layers(backbone.arch.n_layers)
            bad = [i for i in layers if not 0 <= i < backbone.arch.n_layers]
            if bad:
                raise AutoscopeError(f"control layers {bad} do not exist: the backbone has blocks 0-{backbone.arch.n_layers - 1}")
            self.config.control_layers = layers
            self.controls = nn.ModuleDict({str(i): ControlLayer(d_model, config.d_act, config.n_heads, config.head_dim) for i in layers})
            self.kv_condition = None
        else:
            self.controls = nn.ModuleDict()
            hd = backbone.arch.head_dim
            self.kv_condition = KVCondition(backbone.arch.n_layers, config.d_act, backbone.n_kv_heads, hd)
        self._cond: Condition | None = None
        self._hooks = [backbone.arch.attn(int(i)).register_forward_hook(self._control_hook, with_kwargs=True) for i in self.controls]
        for p in backbone.model.parameters():
            p.requires_grad_(False)
        self.to(backbone.device)  # the trainable parts (float32) live where the backbone runs

    def _control_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        if self._cond is None:
            return output
        h = kwargs.get("hidden_states", args[0] if args else None)
        layer = next(i for i in self.controls if self.backbone.arch.attn(int(i)) is module)
        ctl = self.controls[layer]
        # the control layers keep float32 weights whatever the backbone's dtype (no-op in float32)
        delta = ctl.apply(h.to(ctl.q.weight.dtype), *self._cond.kv[layer])
        if isinstance(output, tuple):
            return (output[0] + delta.to(output[0].dtype),) + tuple(output[1:])
        return output + delta.to(output.dtype)

    def site_index(self, site: str) -> int:
        try:
            return self.config.sites.index(site)
        except ValueError:
            raise AutoscopeError(f"this inverter was not trained on site {site}; its sites: {', '.join(self.config.sites)}") from None

    def encode(self, z: torch.Tensor, site_idx: torch.Tensor) -> torch.Tensor:
        """Encoded conditions [B, d_act] of raw activations z (from the cache: moved to where
        the encoder is, in float32) at sites `site_idx`."""
        dev = next(self.encoder.proj[self.config.sites[0]].parameters()).device
        return self.encoder(z.to(dev, torch.float32), site_idx.to(dev))

    def start_cache(self, c: torch.Tensor | None, batch_size: int, room: int | None = None) -> tuple[Any, torch.Tensor]:
        """KV cache and first input tokens [B, k] for decoding or teacher forcing.

        InverseScope: cached prefix[:-1], first input = last prefix token.
        InversionView: one condition key/value per layer, then the whole prefix as input.
        `room` (decoding): the cache is preallocated with that many free positions after
        the cached ones (`kv_cache.PreallocatedCache`) instead of growing by concatenation."""
        from transformers.cache_utils import DynamicCache

        bb = self.backbone
        if self.kv_condition is not None and c is not None:
            cache = DynamicCache(self.kv_condition(c))
            first = torch.tensor(bb.prefix_ids).expand(batch_size, -1)
        else:
            cache = bb.prefix_cache(batch_size)
            first = torch.tensor(bb.prefix_ids[-1:]).expand(batch_size, -1)
        if room is not None:
            cache = preallocated(cache, bb.arch.n_layers, room + (0 if cache is None else cache.get_seq_length()))
        elif cache is None:  # a one-token prefix: start from an empty cache that decoding fills in place
            cache = DynamicCache()
        return cache, bb.to_internal(first).to(bb.device)

    def condition(self, c: torch.Tensor | None) -> Condition | None:
        """c [B, d_act] projected for every control layer (None for InversionView or c=None)."""
        if c is None or self.kv_condition is not None:
            return None
        return Condition({layer: ctl.project(c) for layer, ctl in self.controls.items()})

    @contextmanager
    def conditioned(self, c: torch.Tensor | Condition | None):
        """Inside, the control hooks add Control(h, c) (c: [B, d_act] or its `condition`);
        c=None is unconditional."""
        cond = c if isinstance(c, Condition) else self.condition(c)
        prev, self._cond = self._cond, cond
        try:
            yield
        finally:
            self._cond = prev

    def loss(self, ids: list[list[int]], c: torch.Tensor | None) -> tuple[torch.Tensor, int]:
        """Mean next-token cross-entropy (nats/token) of `ids` (external ids, ending with the
        end token) given condition c [B, d_act] (None = unconditional); returns (loss, n_tokens)."""
        cache, first = self.start_cache(c, len(ids))
        with self.conditioned(c):
            return teacher_forced_loss(self.backbone, ids, cache, first)

    # -- persistence ------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if not k.startswith("backbone")}

    def save(self, directory: Path, filename: str = "inverter.safetensors") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        tensors = self.trainable_state()
        if self.config.backbone_weights_saved:
            state = self.backbone.model.state_dict()
            if self.config.own_blocks_from is not None:  # only the backbone's own blocks; the rest is the target's
                arch = self.backbone.arch
                prefix = arch_layers_prefix(self.backbone.model)
                own = tuple(f"{prefix}.{i}." for i in range(self.config.own_blocks_from, arch.n_layers))
                state = {k: v for k, v in state.items() if k.startswith(own)}
            tensors.update({f"backbone.{k}": v.contiguous() for k, v in state.items()})
            # tied weights are stored once
            if "backbone.lm_head.weight" in tensors and self.backbone.model.config.tie_word_embeddings:
                del tensors["backbone.lm_head.weight"]
        tmp = directory / (filename + ".tmp")
        save_file(tensors, str(tmp))
        tmp.replace(directory / filename)
        (directory / "generator.json").write_text(self.config.model_dump_json(indent=1))

    @classmethod
    def load(cls, directory: Path, tokenizer: Any = None, filename: str = "inverter.safetensors",
             target_model: Any = None, device: torch.device | None = None, dtype: str = "float32") -> Inverter:
        """`target_model`: the target's own model, for a backbone that is the frozen target or is
        grafted onto it (`own_blocks_from`) — its modules are shared, not loaded a second time.
        `device`/`dtype`: where and how a backbone loaded here runs (the target's)."""
        directory = Path(directory)
        if not (directory / "generator.json").exists():
            raise AutoscopeError(f"no trained inverter in {directory}: run `autoscope train` first")
        config = GeneratorConfig.model_validate_json((directory / "generator.json").read_text())
        tensors = load_file(str(directory / filename))
        model = target_model
        if config.upper_blocks is not None and (target_model is None or config.own_blocks_from is None):
            raise AutoscopeError(f"the shallow generator in {directory} is grafted onto its target; load it through its run (Scope)")
        if target_model is not None and config.own_blocks_from is not None:
            model = graft_upper(target_model, config.own_blocks_from, config.upper_blocks)
        backbone = build_backbone(config, tokenizer=tokenizer, model=model, device=device, dtype=dtype)
        if config.backbone_weights_saved:
            backbone.model.load_state_dict(backbone_state(tensors), strict=False)
            backbone.model.tie_weights() if hasattr(backbone.model, "tie_weights") else None
            backbone._prefix_kv = None
        inv = cls(config, backbone)
        own = {k: v for k, v in tensors.items() if not k.startswith("backbone.")}
        missing, unexpected = inv.load_state_dict(own, strict=False)
        if unexpected or [m for m in missing if not m.startswith("backbone")]:
            raise AutoscopeError(f"checkpoint in {directory} does not fit its config; retrain")
        backbone.model.eval()
        return inv


def n_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def config_json(config: GeneratorConfig) -> str:
    return json.dumps(config.model_dump(), indent=1)
