"""ε per site.

Distances differ tenfold between sites (median pairwise cosine distance 0.08 at L6,
0.29 at L18, 0.02 at L24 on SmolLM2), so one absolute ε across sites is meaningless. The
default ε at a site is a stated quantile of the prior's pairwise distance distribution
there, read from the activation cache's statistics; an absolute ε overrides it. Every
result carries the `EpsChoice` it used.
"""

from __future__ import annotations

import math

from pydantic import BaseModel

from .errors import AutoscopeError


class EpsChoice(BaseModel):
    site: str
    metric: str
    eps: float
    quantile: float | None = None  # the pairwise quantile ε corresponds to, when derived from one
    source: str  # "quantile" or "absolute"

    def describe(self) -> str:
        q = f" (pairwise q={self.quantile:g})" if self.quantile is not None else ""
        return f"{self.site}: ε={self.eps:.4g} {self.metric}{q}"


def _interp(table: dict[str, float], q: float) -> float:
    pts = sorted((float(k), v) for k, v in table.items())
    if q <= pts[0][0]:
        return pts[0][1]
    if q >= pts[-1][0]:
        return pts[-1][1]
    for (q0, v0), (q1, v1) in zip(pts, pts[1:]):
        if q0 <= q <= q1:
            t = (math.log(q) - math.log(q0)) / (math.log(q1) - math.log(q0))
            return v0 + t * (v1 - v0)
    raise AssertionError("unreachable")


def _inverse(table: dict[str, float], eps: float) -> float:
    """The quantile at which the pairwise distance equals eps (for reporting an absolute ε)."""
    pts = sorted((float(k), v) for k, v in table.items())
    if eps <= pts[0][1]:
        return pts[0][0]
    if eps >= pts[-1][1]:
        return pts[-1][0]
    for (q0, v0), (q1, v1) in zip(pts, pts[1:]):
        if v0 <= eps <= v1 and v1 > v0:
            t = (eps - v0) / (v1 - v0)
            return math.exp(math.log(q0) + t * (math.log(q1) - math.log(q0)))
    return pts[-1][0]


def choose_eps(site_stats: dict, site: str, metric: str, quantile: float | None = None, eps: float | None = None) -> EpsChoice:
    """ε for one site: the absolute `eps` if given, else the `quantile` of pairwise distances."""
    if metric not in site_stats:
        raise AutoscopeError(f"no distance statistics for metric {metric!r} at {site}; rebuild the cache")
    table = site_stats[metric]["pairwise"]
    if eps is not None:
        if eps <= 0:
            raise AutoscopeError(f"--eps must be positive, got {eps}")
        return EpsChoice(site=site, metric=metric, eps=eps, quantile=_inverse(table, eps), source="absolute")
    if quantile is None or not 0 < quantile < 1:
        raise AutoscopeError(f"ε quantile must be in (0, 1), got {quantile}")
    value = _interp(table, quantile)
    if value <= 0:
        # many prompts share an activation (duplicates under the tokenizer): take the
        # smallest positive quantile instead of an ε that accepts nothing
        positive = sorted((float(k), v) for k, v in table.items() if v > 0)
        if not positive:
            raise AutoscopeError(f"all sampled prompts have identical activations at {site}; the prior is degenerate there")
        quantile, value = positive[0]
        return EpsChoice(site=site, metric=metric, eps=value, quantile=quantile, source="quantile (raised above duplicates)")
    return EpsChoice(site=site, metric=metric, eps=value, quantile=quantile, source="quantile")
