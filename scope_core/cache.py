"""The activation cache: site activations of every prior prompt, written in chunks.

Why chunks: caching 20k prompts takes minutes on a CPU; each chunk is written atomically
(temp file, then rename), so an interrupted run resumes at the first missing chunk and a
kill never leaves a half-written file behind. Per site the cache also stores the
statistics the rest of autoscope needs: the prior mean and per-dimension scale (to
normalise the generator's input), and quantiles of pairwise and nearest-neighbour
distances (to set ε per site).

Reading never loads a chunk file whole: a site's rows and a prompt's trunk states are read
through memory maps of the chunks (`shards.py`), so one site of a 200k-prompt cache costs its
own 0.46 GB and training indexes rows without holding any site in memory. The format on disk
is unchanged (the safetensors files `save_file` writes), so older caches read as they are.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .distances import pairwise_distance
from .errors import AutoscopeError
from . import distributed as dd
from .extract import extract, extract_with_trunk, shard_batches
from .shards import RaggedRows, ShardedRows, ShardFiles
from .sites import Site, parse_site
from .targets import Target

STAT_QUANTILES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9)
STAT_METRICS = ("cosine", "centred_cosine", "euclidean", "norm_euclidean")


def texts_fingerprint(texts: Sequence[str]) -> str:
    h = hashlib.sha1()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _atomic_json(path: Path, obj: object) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


class ActivationCache:
    """Read/write access to `<run>/acts/`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._files = ShardFiles()

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def manifest(self) -> dict:
        if not self.manifest_path.exists():
            raise AutoscopeError(f"no activation cache at {self.root}: run `autoscope train` first")
        return json.loads(self.manifest_path.read_text())

    @property
    def sites(self) -> list[Site]:
        return [parse_site(s) for s in self.manifest()["sites"]]

    def chunk_path(self, i: int) -> Path:
        return self.root / f"chunk_{i:05d}.safetensors"

    def is_complete(self) -> bool:
        try:
            m = self.manifest()
        except AutoscopeError:
            return False
        return all(self.chunk_path(i).exists() for i in range(m["n_chunks"])) and (self.root / "stats.json").exists()

    # -- building -------------------------------------------------------------
    def build(
        self,
        target: Target,
        texts: Sequence[str],
        sites: Sequence[Site],
        chunk_size: int = 1024,
        batch_size: int = 32,
        progress: bool = True,
        trunk_layer: int | None = None,
    ) -> dict:
        """Cache activations of `texts` at `sites`; resume if a matching cache is partial.

        With `trunk_layer` k, also keep the residual stream entering block k at every text
        token (fp16), so that a generator whose frozen backbone *is* the target skips
        blocks 0..k-1 in training. Returns timing info for the work done in this call."""
        self.root.mkdir(parents=True, exist_ok=True)
        fp = texts_fingerprint(texts)
        n_chunks = (len(texts) + chunk_size - 1) // chunk_size
        want = {
            "n": len(texts),
            "texts": fp,
            "sites": [s.name for s in sites],
            "chunk_size": chunk_size,
            "n_chunks": n_chunks,
            "target": target.name,
            "system_prompt": target.config.system_prompt,
            "d_model": target.d_model,
            "trunk_layer": trunk_layer,
        }
        dd.barrier()  # every rank reads the manifest rank 0 may be about to write
        if self.manifest_path.exists():
            have = json.loads(self.manifest_path.read_text())
            # a cache with trunk states serves a caller that does not need them, and a
            # cache without them serves one that does (it then trains the slow way)
            same = {k: v for k, v in have.items() if k != "trunk_layer"} == {k: v for k, v in want.items() if k != "trunk_layer"}
            trunk_layer = have.get("trunk_layer")
            if not same:
                raise AutoscopeError(
                    f"the activation cache in {self.root} was built for other prompts, sites or target; "
                    "use a new --run name or delete that folder"
                )
        elif dd.is_main():
            _atomic_json(self.manifest_path, want)
        todo = dd.broadcast_from_main([i for i in range(n_chunks) if not self.chunk_path(i).exists()])
        tokens, t0 = 0, time.perf_counter()
        bar = None
        if progress and todo and dd.is_main():
            from tqdm.auto import tqdm

            bar = tqdm(total=sum(min(chunk_size, len(texts) - i * chunk_size) for i in todo), desc="caching activations", unit="prompt")
        own_tokens = 0  # this process's share, for tokens/s per process
        for i in todo:
            chunk = list(texts[i * chunk_size : (i + 1) * chunk_size])
            tensors: dict[str, torch.Tensor] = {}
            got = self._chunk_acts(target, chunk, sites, trunk_layer, batch_size)
            own_tokens += got[2]
            if not dd.is_main():
                continue
            acts, trunk = got[0], got[1]
            if trunk is not None:
                # keep a row only where the text's own tokens open its chat suffix
                text_ids = target.tokenizer(chunk, add_special_tokens=False).input_ids
                ok = [suf[: len(t)] == t for suf, t in zip(target.suffix_ids(chunk), text_ids)]
                trunk = [tr if good else tr[:0] for tr, good in zip(trunk, ok)]
                tensors["trunk"] = torch.cat(trunk).contiguous()
                tensors["trunk_len"] = torch.tensor([len(tr) for tr in trunk], dtype=torch.int32)
            tokens += sum(len(s) for s in target.suffix_ids(chunk))
            tmp = self.chunk_path(i).with_suffix(".tmp")
            tensors.update({s.name: a.contiguous() for s, a in acts.items()})
            save_file(tensors, str(tmp))
            os.replace(tmp, self.chunk_path(i))
            if bar:
                bar.update(len(chunk))
        if bar:
            bar.close()
        seconds = time.perf_counter() - t0
        if dd.is_main() and not (self.root / "stats.json").exists():
            self.compute_stats()
        dd.barrier()  # the chunks and statistics are on disk for every rank
        tokens = int(dd.broadcast_from_main(tokens))
        return {"tokens": tokens, "seconds": seconds, "chunks_computed": len(todo), "processes": dd.world(),
                "tokens_per_s_per_process": own_tokens / seconds if seconds > 0 else 0.0}

    @staticmethod
    def _chunk_acts(target: Target, chunk: list[str], sites: Sequence[Site], trunk_layer: int | None,
                    batch_size: int) -> tuple[dict[Site, torch.Tensor], list[torch.Tensor] | None, int]:
        """A chunk's activations per site and trunk residuals (None without a trunk layer), and the
        tokens this process ran. With several processes each runs every world-th length batch
        (`shard_batches`) and rank 0 gathers them into the one-process result (other ranks get
        empty results), the very batches one process would run: the files are bit-identical."""
        shard = (dd.rank(), dd.world())
        if trunk_layer is None:
            acts, trunk = extract(target, chunk, sites, batch_size=batch_size, shard=shard), None
        else:
            acts, trunk = extract_with_trunk(target, chunk, sites, trunk_layer, batch_size=batch_size, shard=shard)
        suffixes = target.suffix_ids(chunk)
        rows = [i for b in shard_batches([len(s) for s in suffixes], batch_size, shard) for i in b]
        ran = sum(len(suffixes[i]) for i in rows)
        if dd.world() == 1:
            return acts, trunk, ran
        parts = dd.gather_to_main((rows, {s.name: acts[s][rows] for s in sites}, [trunk[i] for i in rows] if trunk is not None else None))
        if parts is None:
            return {}, None, ran
        full = {s: torch.empty(len(chunk), target.d_model) for s in sites}
        full_trunk: list[torch.Tensor] = [torch.empty(0)] * len(chunk)
        for part_rows, part_acts, part_trunk in parts:
            for s in sites:
                full[s][part_rows] = part_acts[s.name]
            for j, r in enumerate(part_rows):
                if part_trunk is not None:
                    full_trunk[r] = part_trunk[j]
        return full, full_trunk if trunk is not None else None, ran

    # -- reading --------------------------------------------------------------
    def _chunks(self) -> list[Path]:
        m = self.manifest()
        paths = [self.chunk_path(i) for i in range(m["n_chunks"])]
        if not all(p.exists() for p in paths):
            raise AutoscopeError(f"activation cache {self.root} is incomplete: rerun `autoscope train` to finish it")
        return paths

    def site(self, site: Site) -> ShardedRows:
        """The cached activations at `site`, [N, d] in prompt order, read lazily from the
        memory-mapped chunks: index it for rows, `.whole()` for all of them."""
        m = self.manifest()
        if site.name not in m["sites"]:
            raise AutoscopeError(
                f"site {site.name} is not in this run's cache (cached: {', '.join(m['sites'])}); "
                "retrain with it in --sites"
            )
        return ShardedRows(self._files, self._chunks(), site.name)

    def load(self, site: Site) -> torch.Tensor:
        """All cached activations at `site`, [N, d], in prompt order (only that site's bytes are read)."""
        return self.site(site).whole()

    def load_trunk(self) -> RaggedRows | None:
        """Per prompt, the residual entering block `trunk_layer` at each text token (or None),
        read from the memory-mapped chunks one prompt at a time when indexed."""
        if self.manifest().get("trunk_layer") is None:
            return None
        return RaggedRows(self._files, self._chunks(), "trunk", "trunk_len")

    # -- statistics -----------------------------------------------------------
    def compute_stats(self, sample: int = 2000, seed: int = 0) -> dict:
        """Mean, per-dim scale and distance quantiles per site, saved beside the chunks."""
        m = self.manifest()
        g = torch.Generator().manual_seed(seed)
        tensors: dict[str, torch.Tensor] = {}
        stats: dict[str, dict] = {}
        for name in m["sites"]:
            z = self.load(parse_site(name))
            mean = z.mean(0)
            scale = z.std(0).clamp_min(1e-6)
            tensors[f"{name}.mean"] = mean
            tensors[f"{name}.scale"] = scale
            idx = torch.randperm(len(z), generator=g)[: min(sample, len(z))]
            zs = z[idx]
            site_stats: dict[str, dict] = {"norm_mean": float(z.norm(dim=-1).mean())}
            for metric in STAT_METRICS:
                d = pairwise_distance(zs, zs, metric, mean)  # type: ignore[arg-type]
                iu = torch.triu_indices(len(zs), len(zs), offset=1)
                pair = d[iu[0], iu[1]].numpy()
                d.fill_diagonal_(float("inf"))
                nn = d.min(dim=1).values.numpy()
                site_stats[metric] = {
                    "pairwise": {str(q): float(np.quantile(pair, q)) for q in STAT_QUANTILES},
                    "nearest_neighbour": {str(q): float(np.quantile(nn, q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)},
                    "n_sample": len(zs),
                }
            stats[name] = site_stats
        save_file(tensors, str(self.root / "stats.safetensors"))
        _atomic_json(self.root / "stats.json", stats)
        return stats

    def stats(self) -> dict:
        p = self.root / "stats.json"
        if not p.exists():
            return self.compute_stats()
        return json.loads(p.read_text())

    def mean_scale(self, site: Site) -> tuple[torch.Tensor, torch.Tensor]:
        t = load_file(str(self.root / "stats.safetensors"))
        return t[f"{site.name}.mean"], t[f"{site.name}.scale"]
