"""Decoding speed of the bench2 inverter: full vs restricted vocabulary, batch 64 vs 192.

    python -m bench.decode_bench
"""
import time

import torch

from scope_core.api import Scope
from scope_core.sample import generate

sc = Scope("runs/bench2")
inv = sc.inverter
site = sc.site("L18")
idx = sc.heldout_indices(limit=24)
z = sc.acts(site)[torch.tensor(idx)]
for restrict in (False, True):
    if restrict:
        ids = inv.backbone.encode([sc.data.examples[i].text for i in sc.data.train], 64)
        inv.backbone.restrict_output(sorted({t for s in ids for t in s}))
    for bs in (64, 192):
        t = time.time()
        out = generate(inv, "L18", z, 24, n=8, batch_size=bs, seed=0)
        dt = time.time() - t
        print(f"restrict={restrict} batch={bs}: {192/dt:.2f} samples/s", flush=True)
