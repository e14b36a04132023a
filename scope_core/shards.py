"""Rows of the activation cache's safetensors shards, read through memory maps.

Why: a chunk file holds every cached site of 1,024 prompts and, for the trunk shortcut, the
residual stream at every text token (most of the file). Reading it whole (`load_file`) to take
one site out of it reads everything; at 200k prompts one site is 0.46 GB and the trunk several
GB. The safetensors layout — an 8-byte little-endian header length, a JSON header with each
tensor's dtype, shape and byte range, then the raw data — maps straight onto numpy arrays, so a
site's rows are read where they lie, one shard at a time, and nothing else is touched. The
files are exactly the ones `save_file` writes: caches built before this module read unchanged.

Open maps are kept in a small least-recently-used table: CPython's mmap holds a file
descriptor per map, and a cache of 30 sites × 200 shards must not run out of them. Every read
returns a copy, so evicting a map never invalidates a tensor handed out.
"""

from __future__ import annotations

import json
import os
import struct
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# safetensors dtype -> numpy dtype of the stored bytes (BF16: numpy has none, so its bits are read
# as uint16 and viewed as bfloat16 in torch)
_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}


@dataclass(frozen=True)
class Entry:
    """Where one tensor lies in a shard file."""

    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int


def read_header(path: Path) -> dict[str, Entry]:
    """The tensors of a safetensors file and their byte ranges (only the header is read)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    base = 8 + n
    return {k: Entry(v["dtype"], tuple(v["shape"]), base + v["data_offsets"][0], base + v["data_offsets"][1])
            for k, v in header.items() if k != "__metadata__"}


def to_torch(a: np.ndarray, dtype: str) -> torch.Tensor:
    """A torch tensor that owns a copy of `a` (rows read from a map), in the shard's dtype."""
    t = torch.from_numpy(np.array(a, copy=True))
    return t.view(torch.bfloat16) if dtype == "BF16" else t


class ShardFiles:
    """Memory maps of shard files, at most `max_open` at once, with their headers.

    A file is identified by path, inode, size and modification time, so a chunk rewritten by
    a resumed build (written to a temp file, then renamed over) is mapped afresh."""

    def __init__(self, max_open: int = 64):
        self.max_open = max_open
        self._maps: OrderedDict[tuple, np.memmap] = OrderedDict()
        self._headers: dict[tuple, dict[str, Entry]] = {}

    @staticmethod
    def _key(path: Path) -> tuple:
        st = os.stat(path)
        return (str(path), st.st_ino, st.st_size, st.st_mtime_ns)

    def header(self, path: Path) -> dict[str, Entry]:
        key = self._key(path)
        if key not in self._headers:
            self._headers[key] = read_header(path)
        return self._headers[key]

    def array(self, path: Path, name: str) -> np.ndarray:
        """Tensor `name` of `path` as a read-only numpy view into the mapped file."""
        key = self._key(path)
        e = self.header(path)[name]
        np_dtype = _DTYPES[e.dtype]
        if e.end == e.start:  # an empty tensor: nothing to map (mmap refuses length 0)
            return np.empty(e.shape, dtype=np_dtype)
        mm = self._maps.pop(key, None)
        if mm is None:
            mm = np.memmap(path, dtype=np.uint8, mode="r")
            while len(self._maps) >= self.max_open:
                self._maps.popitem(last=False)
        self._maps[key] = mm
        return np.frombuffer(mm, dtype=np_dtype, count=(e.end - e.start) // np_dtype.itemsize, offset=e.start).reshape(e.shape)


class ShardedRows:
    """One tensor (a site's activations) laid out over shards in row order, read lazily.

    Indexing with an int gives one row; with a slice, a list, an array or a tensor of row
    numbers, the rows stacked in that order. `whole()` reads every shard once (what
    `ActivationCache.load` returns); `blocks()` yields them one at a time."""

    def __init__(self, files: ShardFiles, paths: Sequence[Path], name: str):
        self.files, self.paths, self.name = files, list(paths), name
        entries = [files.header(p)[name] for p in self.paths]
        self.dtype = entries[0].dtype if entries else "F32"
        self.row_shape = entries[0].shape[1:] if entries else ()
        self.offsets = np.concatenate([[0], np.cumsum([e.shape[0] for e in entries])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.row_shape)

    def _shard(self, k: int) -> np.ndarray:
        return self.files.array(self.paths[k], self.name)

    def __getitem__(self, idx: int | slice | Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(idx, (int, np.integer)) or (isinstance(idx, torch.Tensor) and idx.dim() == 0):
            i = int(idx)
            i = i + len(self) if i < 0 else i
            if not 0 <= i < len(self):
                raise IndexError(f"row {i} out of range for {len(self)} rows")
            k = int(np.searchsorted(self.offsets, i, side="right")) - 1
            return to_torch(self._shard(k)[i - self.offsets[k]], self.dtype)
        rows = np.arange(len(self))[idx] if isinstance(idx, slice) else np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64)
        rows = np.where(rows < 0, rows + len(self), rows)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row numbers out of range for {len(self)} rows")
        out = np.empty((len(rows), *self.row_shape), dtype=_DTYPES[self.dtype])
        shard = np.searchsorted(self.offsets, rows, side="right") - 1
        for k in np.unique(shard):
            at = np.flatnonzero(shard == k)
            out[at] = self._shard(int(k))[rows[at] - self.offsets[k]]
        return to_torch(out, self.dtype)

    def blocks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """(first row, rows) of each shard in order, each read on its own."""
        for k in range(len(self.paths)):
            yield int(self.offsets[k]), to_torch(self._shard(k), self.dtype)

    def whole(self) -> torch.Tensor:
        """Every row in one tensor, filled shard by shard (no shard file is read whole)."""
        out = np.empty(self.shape, dtype=_DTYPES[self.dtype])
        for k in range(len(self.paths)):
            out[self.offsets[k]: self.offsets[k + 1]] = self._shard(k)
        return to_torch(out, self.dtype) if self.dtype == "BF16" else torch.from_numpy(out)


class RaggedRows:
    """Per prompt, a variable number of rows (the trunk residual at each text token), stored
    per shard as one concatenated tensor plus a tensor of lengths; read one prompt at a time."""

    def __init__(self, files: ShardFiles, paths: Sequence[Path], name: str, lengths: str):
        self.files, self.paths, self.name = files, list(paths), name
        self.dtype = files.header(self.paths[0])[name].dtype if self.paths else "F16"
        self._starts = [np.concatenate([[0], np.cumsum(files.array(p, lengths))]).astype(np.int64) for p in self.paths]
        self.offsets = np.concatenate([[0], np.cumsum([len(s) - 1 for s in self._starts])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> torch.Tensor:
        i = int(i)
        i = i + len(self) if i < 0 else i
        if not 0 <= i < len(self):
            raise IndexError(f"prompt {i} out of range for {len(self)} prompts")
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        s = self._starts[k]
        j = i - int(self.offsets[k])
        return to_torch(self.files.array(self.paths[k], self.name)[s[j]: s[j + 1]], self.dtype)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (self[i] for i in range(len(self)))
