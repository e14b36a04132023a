"""The activation cache read through memory maps (issue 22): the same tensors as reading the
chunk files whole, from caches written the way every run so far wrote them, without ever
loading a chunk file whole."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from scope_core import cache as cache_module
from scope_core.cache import ActivationCache
from scope_core.shards import ShardedRows, ShardFiles
from scope_core.sites import parse_site


def _old_cache(root, n=23, chunk=5, d=6, trunk=True, seed=0):
    """A cache laid out as `ActivationCache.build` writes it: manifest, one safetensors file per
    chunk of prompts holding each site and (optionally) the trunk states with their lengths."""
    g = torch.Generator().manual_seed(seed)
    root.mkdir(parents=True)
    n_chunks = (n + chunk - 1) // chunk
    for i in range(n_chunks):
        rows = min(chunk, n - i * chunk)
        t = {"L1": torch.randn(rows, d, generator=g), "M2": torch.randn(rows, d, generator=g)}
        if trunk:
            lens = torch.randint(0, 4, (rows,), generator=g, dtype=torch.int32)
            lens[0] = 0 if i == 1 else lens[0]  # a prompt without trunk states
            if i == 2:
                lens[:] = 0  # a chunk whose trunk tensor is empty
            t["trunk"] = torch.randn(int(lens.sum()), d, generator=g).to(torch.float16)
            t["trunk_len"] = lens
        save_file(t, str(root / f"chunk_{i:05d}.safetensors"))
    (root / "manifest.json").write_text(json.dumps({"n": n, "texts": "x", "sites": ["L1", "M2"], "chunk_size": chunk, "n_chunks": n_chunks,
                                                   "target": "t", "system_prompt": None, "d_model": d, "trunk_layer": 3 if trunk else None}))
    return ActivationCache(root), n_chunks


def _read_whole(cache, n_chunks, name):
    return torch.cat([load_file(str(cache.chunk_path(i)))[name] for i in range(n_chunks)])


@pytest.mark.parametrize("trunk", [True, False])
def test_memory_mapped_reads_equal_reading_the_chunks_whole(tmp_path, trunk):
    cache, n_chunks = _old_cache(tmp_path / "acts", trunk=trunk)
    for name in ("L1", "M2"):
        whole = _read_whole(cache, n_chunks, name)
        site = cache.site(parse_site(name))
        assert torch.equal(cache.load(parse_site(name)), whole) and site.shape == whole.shape
        assert torch.equal(site[7], whole[7]) and torch.equal(site[-1], whole[-1]) and torch.equal(site[np.int64(4)], whole[4])
        for idx in ([22, 0, 5, 5, 11], np.array([3, 19]), torch.tensor([4, 5, 6]), slice(2, 20, 3), []):
            assert torch.equal(site[idx], whole[idx]), idx
        assert torch.equal(torch.cat([b for _, b in site.blocks()]), whole)
        with pytest.raises(IndexError):
            site[23]
    trunk_rows = cache.load_trunk()
    if not trunk:
        assert trunk_rows is None
        return
    old = []
    for i in range(n_chunks):
        t = load_file(str(cache.chunk_path(i)))
        old.extend(torch.split(t["trunk"], t["trunk_len"].tolist()))
    assert len(trunk_rows) == len(old) == 23
    assert all(torch.equal(a, b) and a.dtype == b.dtype == torch.float16 for a, b in zip(trunk_rows, old))
    assert len(trunk_rows[5]) == 0 and len(trunk_rows[10]) == 0  # no trunk for that prompt; an empty chunk


def test_reading_never_loads_a_chunk_file_whole(tmp_path, monkeypatch):
    cache, _ = _old_cache(tmp_path / "acts")

    def refuse(*args, **kwargs):
        raise AssertionError("a chunk file was read whole")

    monkeypatch.setattr(cache_module, "load_file", refuse)
    site = parse_site("L1")
    assert cache.load(site).shape == (23, 6) and cache.site(site)[[1, 2]].shape == (2, 6) and len(cache.load_trunk()[3]) >= 0


def test_few_open_maps_and_rewritten_chunks_are_read_afresh(tmp_path):
    cache, n_chunks = _old_cache(tmp_path / "acts")
    files = ShardFiles(max_open=2)
    rows = ShardedRows(files, [cache.chunk_path(i) for i in range(n_chunks)], "L1")
    assert torch.equal(rows[list(range(23))], _read_whole(cache, n_chunks, "L1")) and len(files._maps) <= 2
    t = load_file(str(cache.chunk_path(1)))
    t["L1"] = t["L1"] + 1
    tmp = cache.chunk_path(1).with_suffix(".tmp")
    save_file(t, str(tmp))
    tmp.replace(cache.chunk_path(1))  # as a resumed build rewrites a chunk
    assert torch.equal(rows[6], t["L1"][1])


def test_bfloat16_rows_read_as_bfloat16(tmp_path):
    x = torch.randn(4, 3).to(torch.bfloat16)
    save_file({"a": x}, str(tmp_path / "c.safetensors"))
    rows = ShardedRows(ShardFiles(), [tmp_path / "c.safetensors"], "a")
    assert rows.whole().dtype == torch.bfloat16 and torch.equal(rows.whole(), x) and torch.equal(rows[[3, 1]], x[[3, 1]])
