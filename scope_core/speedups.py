"""The speed-ups, each in its own module, and the one switch that turns the sampler's off.

| speed-up | module | what it saves | its equality test |
|---|---|---|---|
| prepacked linears (oneDNN) | `fast_linear.py` | matrix products on packed weights | tests/test_fast_linear.py |
| continuous batching, ragged KV cache | `continuous.py`, `kv_cache.RaggedCache` | a finished row's slot goes to the next row | tests/test_kv_cache.py |
| priming from the first control block | `continuous.prime` on `priming.BlockEntry` | blocks below it run once, not per row | tests/test_kv_cache.py |
| preallocated KV cache (fixed batches) | `kv_cache.preallocated` | no concatenation per step | tests/test_kv_cache.py |
| fused verification | `fused_verify.py` | the site read from the decoder's own cache | tests/test_fused_verify.py |

Each gives the plain computation's results (greedy samples token for token, distances to float
rounding); each also falls back to the plain way by itself where it would not be exact.
Training has one of its own, outside the switch: the **trunk shortcut** (`priming.TrunkShortcut`,
NOTES §1) starts the loss at the first control block from the residuals the activation cache
kept, so blocks below it are not recomputed each step; `train.trunk_residuals` checks once that
it gives the full forward's loss and trains the plain way where it does not
(tests/test_generator.py: loss and gradients).

`AUTOSCOPE_SPEEDUPS=0` turns the sampler's speed-ups (the table) all off, read at each call:
the sampler then runs the method as the paper describes it (`decoding.py`): fixed batches on
transformers' own cache, plain linears everywhere (caching, decoding, verification, the
embedded judge), every sample re-run through the target. Seeded sampled (not greedy) runs then
draw their random numbers in another order: other samples, the same distribution.
(`AUTOSCOPE_PREPACK=0` turns off the prepacked linears alone.)
"""

from __future__ import annotations

import os


def speedups_on() -> bool:
    """The switch: on unless `AUTOSCOPE_SPEEDUPS` is 0."""
    return os.environ.get("AUTOSCOPE_SPEEDUPS", "1") != "0"
