"""Read site activations at the decision position with forward hooks.

The forward stops (by exception) as soon as every requested site has been recorded, so
reading L18 of a 30-layer model costs 19 layers. Prompts are right-padded: with causal
attention no real token attends to a pad that follows it, so no attention mask is
needed and each row's decision position is simply its last real token.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from .fast_linear import prepacked_linears
from .sites import Site
from .targets import Target


class _StopForward(Exception):
    pass


def trunk_dtype(model_dtype: torch.dtype) -> torch.dtype:
    """How cached trunk residuals are stored: float16 (half the disk of float32, and what every
    float32 run kept), but bfloat16 for a bfloat16 target, whose residuals can exceed float16's range."""
    return torch.bfloat16 if model_dtype == torch.bfloat16 else torch.float16


class _Recorder:
    def __init__(self, target: Target, sites: Sequence[Site]):
        self.target = target
        self.sites = list(sites)
        self.positions: torch.Tensor | None = None  # [B] index of the decision token per row
        self.out: dict[Site, torch.Tensor] = {}
        self.stop_when_done = True
        self.trunk_layer: int | None = None  # also record the input of this block ...
        self.trunk_lengths: list[int] = []  # ... at the first n positions of each row
        self.trunk: list[torch.Tensor] | None = None

    def _take(self, x: torch.Tensor) -> torch.Tensor:
        assert self.positions is not None
        rows = torch.arange(x.shape[0], device=x.device)
        return x[rows, self.positions.to(x.device)]

    def _done(self) -> bool:
        return len(self.out) == len(self.sites) and (self.trunk_layer is None or self.trunk is not None)

    def _store(self, site: Site, value: torch.Tensor) -> None:
        self.out[site] = value.detach().float().cpu()  # activations are kept on the CPU, in float32
        if self.stop_when_done and self._done():
            raise _StopForward

    def _store_trunk(self, x: torch.Tensor) -> None:
        keep = trunk_dtype(x.dtype)
        self.trunk = [x[i, :n].detach().to(keep).cpu() for i, n in enumerate(self.trunk_lengths)]
        if self.stop_when_done and self._done():
            raise _StopForward

    def hooks(self) -> list[torch.utils.hooks.RemovableHandle]:
        arch = self.target.arch
        handles = []
        for site in self.sites:
            if site.component == "attn":
                def fn(_m, _i, out, site=site):
                    self._store(site, self._take(out[0] if isinstance(out, tuple) else out))
                handles.append(arch.out_proj(site.layer).register_forward_hook(fn))
            elif site.component == "head":
                w = arch.head_out_weight(site.layer, site.head)  # [d_model, head_dim]
                hd = arch.head_dim

                def pre(_m, args, site=site, w=w, hd=hd):
                    z = self._take(args[0])[:, site.head * hd : (site.head + 1) * hd]
                    self._store(site, z @ w.T)
                handles.append(arch.out_proj(site.layer).register_forward_pre_hook(pre))
            elif site.component == "mlp":
                def fn(_m, _i, out, site=site):
                    self._store(site, self._take(out[0] if isinstance(out, tuple) else out))
                handles.append(arch.mlp(site.layer).register_forward_hook(fn))
            else:  # resid
                def fn(_m, _i, out, site=site):
                    self._store(site, self._take(out[0] if isinstance(out, tuple) else out))
                handles.append(arch.layers[site.layer].register_forward_hook(fn))
        if self.trunk_layer is not None:
            def pre(_m, args, kwargs):
                self._store_trunk(kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])
            handles.append(arch.layers[self.trunk_layer].register_forward_pre_hook(pre, with_kwargs=True))
        return handles


@contextmanager
def recording(target: Target, sites: Sequence[Site], trunk_layer: int | None = None) -> Iterator[_Recorder]:
    rec = _Recorder(target, sites)
    rec.trunk_layer = trunk_layer
    handles = rec.hooks()
    try:
        yield rec
    finally:
        for h in handles:
            h.remove()


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists; return ids [B, T] and lengths [B]."""
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.full((len(seqs), int(lengths.max())), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return ids, lengths


@torch.no_grad()
def forward_suffixes(
    target: Target,
    suffixes: Sequence[Sequence[int]],
    sites: Sequence[Site],
    trunk_layer: int | None = None,
    trunk_lengths: Sequence[int] | None = None,
) -> dict[Site, torch.Tensor] | tuple[dict[Site, torch.Tensor], list[torch.Tensor]]:
    """One batched, truncated forward over suffix ids that share the target's cached prefix.

    With `trunk_layer` k, also return the residual stream entering block k at the first
    `trunk_lengths[i]` positions of each row (fp16): when the generator's backbone is the
    target itself, these are exactly the frozen lower layers' outputs it would recompute
    at every training step."""
    ids, lengths = pad_right(suffixes, target.tokenizer.pad_token_id)
    ids = ids.to(target.device)
    cache = target.prefix_cache(len(suffixes))
    with recording(target, sites, trunk_layer) as rec, prepacked_linears(target.model):
        rec.positions = lengths - 1
        rec.trunk_lengths = list(trunk_lengths or [])
        try:
            target.model(input_ids=ids, past_key_values=cache, use_cache=cache is not None)
        except _StopForward:
            pass
    out = {s: rec.out[s] for s in sites}
    if trunk_layer is None:
        return out
    assert rec.trunk is not None
    return out, rec.trunk


def length_buckets(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, so padding wastes little compute."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def shard_batches(lengths: Sequence[int], batch_size: int, shard: tuple[int, int] = (0, 1)) -> list[list[int]]:
    """The length buckets process `shard[0]` of `shard[1]` computes: every shard[1]-th batch of
    the one-process order. Why whole batches: each prompt is then computed in the very batch one
    process computes it in, so several processes write a bit-identical cache."""
    rank, world = shard
    return length_buckets(lengths, batch_size)[rank::world]


def extract(
    target: Target,
    texts: Sequence[str],
    sites: Sequence[Site],
    batch_size: int = 32,
    progress: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> dict[Site, torch.Tensor]:
    """Activations [N, d_model] per site for `texts`, in the input order (with `shard`, only the
    rows of that shard's batches are filled: `shard_batches`)."""
    suffixes = target.suffix_ids(list(texts))
    d = target.d_model
    out = {s: torch.empty(len(texts), d) for s in sites}
    batches = shard_batches([len(s) for s in suffixes], batch_size, shard)
    it = batches
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(batches, desc="verifying with the target", unit="batch")
    for idx in it:
        acts = forward_suffixes(target, [suffixes[i] for i in idx], sites)
        assert isinstance(acts, dict)
        for s in sites:
            out[s][idx] = acts[s]
    return out


def extract_with_trunk(
    target: Target, texts: Sequence[str], sites: Sequence[Site], trunk_layer: int, batch_size: int = 32, shard: tuple[int, int] = (0, 1)
) -> tuple[dict[Site, torch.Tensor], list[torch.Tensor]]:
    """`extract` plus the residual entering block `trunk_layer` at each text token."""
    suffixes = target.suffix_ids(list(texts))
    n_text = target.text_token_counts(list(texts))
    out = {s: torch.empty(len(texts), target.d_model) for s in sites}
    trunk: list[torch.Tensor] = [torch.empty(0)] * len(texts)
    for idx in shard_batches([len(s) for s in suffixes], batch_size, shard):
        acts, tr = forward_suffixes(target, [suffixes[i] for i in idx], sites, trunk_layer, [n_text[i] for i in idx])  # type: ignore[misc]
        for s in sites:
            out[s][idx] = acts[s]
        for j, i in enumerate(idx):
            trunk[i] = tr[j]
    return out, trunk
