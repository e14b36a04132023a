"""A decoding KV cache that writes into preallocated buffers instead of concatenating.

Why: transformers' `DynamicLayer` grows by `torch.cat` every step, which copies the whole
cache of every layer once per generated token; in the sampler's profile that copy was 22%
of a decoding step. Here each layer owns a buffer with room for the whole sample (the
prefix plus the sample cap), a step writes its one new position in place, and attention
reads a view of the filled part. Rows that finish still leave the batch — the buffer is
compacted then, which costs one copy of the live rows on the steps where rows end rather
than on every step.

Only decoding uses it (`Inverter.start_cache(..., capacity=)`); training keeps the dynamic
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


def drop_rows(cache: DynamicCache, done: torch.Tensor) -> torch.Tensor:
    """Remove the rows where `done` is true; returns, for each remaining row in its new
    position, its old position. A `PreallocatedCache` fills the holes with rows from the end
    (so the order changes and only as many rows move as ended); any other cache keeps its
    order through `batch_select_indices`."""
    keep = (~done).nonzero().squeeze(1)
    if not isinstance(cache, PreallocatedCache):
        cache.batch_select_indices(keep)
        return keep
    m = len(keep)
    order = torch.arange(m)
    holes = done[:m].nonzero().squeeze(1)
    movers = (~done[m:]).nonzero().squeeze(1) + m
    order[holes] = movers
    for layer in cache.layers:
        layer.swap_remove(holes, movers, m)  # type: ignore[attr-defined]
    return order


def preallocated(cache: DynamicCache | None, n_layers: int, capacity: int) -> PreallocatedCache:
    """A preallocated copy of `cache` (None: an empty one) with room for `capacity` positions."""
    init = [(layer.keys, layer.values) for layer in cache.layers] if cache is not None and cache.get_seq_length() > 0 else None
    return PreallocatedCache(n_layers, capacity, init)
