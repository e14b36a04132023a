"""A decoding KV cache that writes into preallocated buffers instead of concatenating.

Why: transformers' `DynamicLayer` grows by `torch.cat` every step, which copies the whole
cache of every layer once per generated token; in the sampler's profile that copy was 22%
of a decoding step. Here each layer owns a buffer with room for the whole sample (the
prefix plus the sample cap), a step writes its one new position in place, and attention
reads a view of the filled part. Rows that finish still leave the batch — the buffer is
compacted then, which costs one copy of the live rows on the steps where rows end rather
than on every step.

Only decoding uses it (`Inverter.start_cache(..., room=)`); training keeps the dynamic
cache, whose gradients flow through `cat` as usual.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """One layer's keys/values in a buffer [B, H, capacity, D]; `keys`/`values` are views of
    the first `n` positions, so code that reads a `DynamicLayer` reads this one unchanged."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self._n = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        B, H, T, D = key_states.shape
        if self._k is None:
            self.is_initialized, self.device = True, key_states.device
            cap = max(self.capacity, T)
            self._k = key_states.new_empty((B, H, cap, D))
            self._v = value_states.new_empty((B, value_states.shape[1], cap, value_states.shape[-1]))
        elif self._n + T > self._k.shape[2]:  # past the planned length: grow once, doubling
            self._grow(max(2 * self._k.shape[2], self._n + T))
        assert self._v is not None
        self._k[:, :, self._n : self._n + T] = key_states
        self._v[:, :, self._n : self._n + T] = value_states
        self._n += T
        self._refresh_views()
        return self.keys, self.values

    @classmethod
    def over(cls, keys: torch.Tensor, values: torch.Tensor, filled: int) -> PreallocatedLayer:
        """A layer over buffers someone else allocated (possibly views of a larger batch's
        rows), whose first `filled` positions count as written: the next `update` writes at
        `filled`, into the caller's memory."""
        layer = cls(keys.shape[2])
        layer.is_initialized, layer.device = True, keys.device
        layer._k, layer._v, layer._n = keys, values, filled
        layer._refresh_views()
        return layer

    def _grow(self, cap: int) -> None:
        assert self._k is not None and self._v is not None
        k = self._k.new_empty(self._k.shape[:2] + (cap,) + self._k.shape[3:])
        v = self._v.new_empty(self._v.shape[:2] + (cap,) + self._v.shape[3:])
        k[:, :, : self._n], v[:, :, : self._n] = self._k[:, :, : self._n], self._v[:, :, : self._n]
        self._k, self._v = k, v

    def _refresh_views(self) -> None:
        assert self._k is not None and self._v is not None
        self.keys, self.values = self._k[:, :, : self._n], self._v[:, :, : self._n]

    def get_seq_length(self) -> int:
        return self._n

    def swap_remove(self, holes: torch.Tensor, movers: torch.Tensor, m: int) -> None:
        """Drop rows by moving the live rows at `movers` (behind position m) into the dead
        rows at `holes` (before m), then truncating to m rows: a copy of as many rows as
        ended, instead of a copy of every row."""
        if self._k is None:
            return
        if len(holes):
            self._k[holes, :, : self._n] = self._k[movers, :, : self._n]
            self._v[holes, :, : self._n] = self._v[movers, :, : self._n]  # type: ignore[index]
        self._k, self._v = self._k[:m], self._v[:m]  # type: ignore[index]
        self._refresh_views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep rows `indices` (ascending, as `nonzero` gives them): moved to the front of the
        same buffer, so no new buffer is allocated; the rows behind them are dropped."""
        if self._k is None:
            return
        m = len(indices)
        self._k[:m, :, : self._n] = self._k[indices, :, : self._n]
        self._v[:m, :, : self._n] = self._v[indices, :, : self._n]
        self._k, self._v = self._k[:m], self._v[:m]
        self._refresh_views()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self._k is None:
            return
        self._k = self._k.repeat_interleave(repeats, dim=0)
        self._v = self._v.repeat_interleave(repeats, dim=0)  # type: ignore[union-attr]
        self._refresh_views()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative count (tokens to remove from the end)")
        self._n = max(0, self._n + tokens_to_remove)
        if self._k is not None:
            self._refresh_views()

    def reset(self) -> None:
        self._k = self._v = None
        self._n = 0
        super().reset()


class PreallocatedCache(DynamicCache):
    """A `DynamicCache` made of `PreallocatedLayer`s (a subclass, so the model's mask and
    position logic treat it as the dynamic cache it behaves like)."""

    def __init__(self, n_layers: int, capacity: int, init: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None):
        layers = [PreallocatedLayer(capacity) for _ in range(n_layers)]
        for layer, kv in zip(layers, init or []):
            layer.update(kv[0], kv[1])
        Cache.__init__(self, layers=layers)

    @classmethod
    def over(cls, buffers: Sequence[tuple[torch.Tensor, torch.Tensor]], filled: int) -> PreallocatedCache:
        """A cache over per-layer (keys, values) buffers [B, H, capacity, D] the caller owns,
        `filled` positions already written (see `PreallocatedLayer.over`)."""
        cache = cls.__new__(cls)
        Cache.__init__(cache, layers=[PreallocatedLayer.over(k, v, filled) for k, v in buffers])
        return cache


def swap_plan(done: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]:
    """How to drop the rows where `done` is true by moving live rows from the end into their
    places: (rows left m, holes before m, movers from behind m, and for each remaining row in
    its new position its old one)."""
    m = int((~done).sum())
    holes = done[:m].nonzero().squeeze(1)
    movers = (~done[m:]).nonzero().squeeze(1) + m
    order = torch.arange(m)
    order[holes] = movers
    return m, holes, movers, order


def drop_rows(cache: DynamicCache, done: torch.Tensor) -> torch.Tensor:
    """Remove the rows where `done` is true; returns, for each remaining row in its new
    position, its old position. A `PreallocatedCache` fills the holes with rows from the end
    (so the order changes and only as many rows move as ended); any other cache keeps its
    order through `batch_select_indices`."""
    if not isinstance(cache, PreallocatedCache):
        keep = (~done).nonzero().squeeze(1)
        cache.batch_select_indices(keep)
        return keep
    m, holes, movers, order = swap_plan(done)
    for layer in cache.layers:
        layer.swap_remove(holes, movers, m)  # type: ignore[attr-defined]
    return order


def preallocated(cache: DynamicCache | None, n_layers: int, capacity: int) -> PreallocatedCache:
    """A preallocated copy of `cache` (None: an empty one) with room for `capacity` positions."""
    init = [(layer.keys, layer.values) for layer in cache.layers] if cache is not None and cache.get_seq_length() > 0 else None
    return PreallocatedCache(n_layers, capacity, init)


class RaggedLayer(DynamicLayer):
    """One layer of a `RaggedCache`: row b's keys/values sit at positions 0..lens[b]-1 of its
    own buffer row, so rows that joined the batch at different steps share one buffer."""

    def __init__(self, owner: RaggedCache, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.owner, self._k, self._v = owner, keys, values
        self.is_initialized, self.device = True, keys.device

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        o = self.owner
        B = key_states.shape[0]
        if key_states.shape[2] != 1 or B != o.rows:
            raise ValueError("a ragged cache takes one new token for every live row per step")
        rows = o.row_index[:B]
        self._k[rows, :, o.lens] = key_states[:, :, 0]
        self._v[rows, :, o.lens] = value_states[:, :, 0]
        S = int(o.lens.max()) + 1
        self.keys, self.values = self._k[:B, :, :S], self._v[:B, :, :S]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return int(self.owner.lens.max()) if self.owner.rows else 0


class RaggedCache(DynamicCache):
    """A decoding cache whose rows have their own lengths — continuous batching.

    Why: a batch whose rows all start together ends with a tail of a few long samples
    decoding alone, and a forward over a few rows costs what reading the weights costs
    (BENCHMARKS §3: 60–85 ms per step for 1–8 rows against ~2 ms per row at full batch).
    Here a row that ends leaves at once and a waiting row takes its place: its shared
    prefix keys/values are copied in, it starts at position len(prefix) - 1 while the
    others are further on, and `step_mask` hides what it must not see. Positions are
    explicit (`positions`), so rotary embeddings see each row's own position.

    One token per live row per step; call `advance` after each forward."""

    def __init__(self, n_layers: int, kv_shape: tuple[int, int, int, int], prefix: Sequence[tuple[torch.Tensor, torch.Tensor]] | None,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        """kv_shape: (max rows, kv heads, capacity per row, head dim); prefix: per layer the
        shared prefix's (keys, values) [1, H, P, D], or None (no cached prefix)."""
        Bmax, H, cap, D = kv_shape
        self.prefix = list(prefix) if prefix else None
        self.prefix_len = self.prefix[0][0].shape[2] if self.prefix else 0
        self.rows = 0
        self.lens = torch.zeros(0, dtype=torch.long, device=device)
        self.row_index = torch.arange(Bmax, device=device)
        # zeros, not empty: slots past a row's length are read (and masked) — masked scores
        # must stay finite, and uninitialised memory can hold values whose dot products
        # overflow to inf, which the mask cannot cancel (inf - inf = nan)
        layers = [RaggedLayer(self, torch.zeros(kv_shape, dtype=dtype, device=device), torch.zeros(kv_shape, dtype=dtype, device=device))
                  for _ in range(n_layers)]
        Cache.__init__(self, layers=layers)

    def add(self, n: int) -> None:
        """Append n rows holding just the shared prefix."""
        a, b = self.rows, self.rows + n
        if b > len(self.row_index):
            raise ValueError(f"a ragged cache of {len(self.row_index)} rows cannot take {b}")
        if self.prefix:
            for layer, (k, v) in zip(self.layers, self.prefix):
                layer._k[a:b, :, : self.prefix_len] = k  # type: ignore[attr-defined]
                layer._v[a:b, :, : self.prefix_len] = v  # type: ignore[attr-defined]
        self.lens = torch.cat([self.lens, torch.full((n,), self.prefix_len, dtype=torch.long, device=self.lens.device)])
        self.rows = b

    def positions(self) -> torch.Tensor:
        """Position ids [B, 1] of the tokens this step feeds."""
        return self.lens[:, None].clone()

    def step_mask(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Additive attention mask [B, 1, 1, S] for this step: row b sees its positions
        0..lens[b] (lens[b] is where this step's token is written), nothing beyond."""
        S = int(self.lens.max()) + 1
        visible = torch.arange(S, device=self.lens.device)[None, :] <= self.lens[:, None]
        mask = torch.zeros((self.rows, 1, 1, S), dtype=dtype, device=self.lens.device)
        return mask.masked_fill_(~visible[:, None, None, :], torch.finfo(dtype).min)

    def advance(self) -> None:
        self.lens += 1

    def write_last(self, n: int, kv: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Write one position for the last n rows (per layer keys/values [n, H, D], or [H, D]
        shared by them) and advance just those rows: rows joining the batch whose first
        token was computed on the side (`continuous.prime`)."""
        a = self.rows - n
        pos = self.lens[a:]
        rows = self.row_index[a:self.rows]
        for layer, (k, v) in zip(self.layers, kv):
            layer._k[rows, :, pos] = k  # type: ignore[attr-defined]
            layer._v[rows, :, pos] = v  # type: ignore[attr-defined]
        self.lens[a:] += 1

    def remove(self, done: torch.Tensor) -> torch.Tensor:
        """Drop the rows where `done` is true by moving live rows from the end into their
        places; returns, for each remaining row in its new position, its old position."""
        m, holes, movers, order = swap_plan(done.cpu())
        if len(holes):
            S = int(self.lens.max())
            for layer in self.layers:
                layer._k[holes, :, :S] = layer._k[movers, :, :S]  # type: ignore[attr-defined]
                layer._v[holes, :, :S] = layer._v[movers, :, :S]  # type: ignore[attr-defined]
        self.lens = self.lens[order.to(self.lens.device)]
        self.rows = m
        return order

    def gather(self, sel: torch.Tensor, n_layers: int) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """`gather_rows` for this cache: rows cut to the longest of their own lengths."""
        lengths = self.lens[sel].clone()
        L = int(lengths.max())
        return lengths, [(layer._k[sel, :, :L], layer._v[sel, :, :L]) for layer in self.layers[:n_layers]]  # type: ignore[attr-defined]


def gather_rows(cache: DynamicCache, sel: torch.Tensor, n_layers: int) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Rows `sel`'s keys/values in layers 0..n_layers-1, copied out in one indexing per layer
    (per-row copies were ~5% of a sampling job): returns each row's length [n] and per layer
    (keys, values) [n, H, L, D], L the longest of the rows; a row's slots past its length
    hold whatever its buffer held there and must be masked by the caller."""
    if isinstance(cache, RaggedCache):
        return cache.gather(sel.to(cache.lens.device), n_layers)
    sel = sel.to(cache.layers[0].keys.device)
    kv = [(layer.keys.index_select(0, sel), layer.values.index_select(0, sel)) for layer in cache.layers[:n_layers]]
    return torch.full((len(sel),), kv[0][0].shape[2], dtype=torch.long, device=sel.device), kv
