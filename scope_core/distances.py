"""Distances between activations and the kernels that turn them into weights.

Metrics (all computed in the target's raw activation space):

* ``cosine``            1 - cos(z, ẑ)                      (the paper's)
* ``centred_cosine``    1 - cos(z - μ, ẑ - μ), μ the site's prior mean: raw cosine mostly
                        measures the small remainder around a large shared direction
* ``euclidean``         ‖z - ẑ‖
* ``norm_euclidean``    ‖z - ẑ‖ / ‖ẑ‖
"""

from __future__ import annotations

from typing import Literal

import torch

Metric = Literal["cosine", "centred_cosine", "euclidean", "norm_euclidean"]
Kernel = Literal["gaussian", "hard"]
METRICS: tuple[str, ...] = ("cosine", "centred_cosine", "euclidean", "norm_euclidean")


def distance(z: torch.Tensor, zq: torch.Tensor, metric: Metric, mean: torch.Tensor | None = None) -> torch.Tensor:
    """Row-wise distance between z [N, d] and zq [N, d] or [d] (broadcast)."""
    z = z.float()
    zq = zq.float().expand_as(z)
    if metric == "cosine":
        return 1 - torch.nn.functional.cosine_similarity(z, zq, dim=-1)
    if metric == "centred_cosine":
        if mean is None:
            raise ValueError("centred_cosine needs the site's prior mean")
        m = mean.float()
        return 1 - torch.nn.functional.cosine_similarity(z - m, zq - m, dim=-1)
    if metric == "euclidean":
        return (z - zq).norm(dim=-1)
    if metric == "norm_euclidean":
        return (z - zq).norm(dim=-1) / zq.norm(dim=-1).clamp_min(1e-12)
    raise ValueError(f"unknown metric {metric!r}; use one of {METRICS}")


def prepare(z: torch.Tensor, metric: Metric, mean: torch.Tensor | None = None) -> torch.Tensor:
    """The vectors a metric compares: unit vectors (after subtracting μ for centred_cosine) for
    the cosines, the raw activations (float) otherwise. Preparing a set once lets a search
    compare it block by block without normalising it again (`prepared_distance`); on unit
    vectors 1 − cos is ‖u − v‖²/2, so they are also where euclidean indexes work."""
    z = z.float()
    if metric in ("cosine", "centred_cosine"):
        if metric == "centred_cosine":
            if mean is None:
                raise ValueError("centred_cosine needs the site's prior mean")
            z = z - mean.float()
        return torch.nn.functional.normalize(z, dim=-1)
    if metric in ("euclidean", "norm_euclidean"):
        return z
    raise ValueError(f"unknown metric {metric!r}; use one of {METRICS}")


def prepared_distance(a: torch.Tensor, b: torch.Tensor, metric: Metric) -> torch.Tensor:
    """All distances [N, M] between rows of `prepare`d a and b. The rows of `a` are the
    centres (queries ẑ, ball centres): norm_euclidean divides by their norm, as
    `distance(z, zq)` divides by ‖ẑ‖, so a ball searched here is the ball verification accepts."""
    if metric in ("cosine", "centred_cosine"):
        return 1 - a @ b.T
    # ‖a‖² + ‖b‖² − 2a·b in float64: in float32 the cancellation between close activations
    # (norm ~30, distance ~1) costs about four digits, enough for the same pair to fall
    # inside ε in one block of rows and outside it in another (seen on one host's BLAS)
    a64, b64 = a.double(), b.double()
    d2 = (a64 * a64).sum(-1)[:, None] + (b64 * b64).sum(-1)[None, :] - 2 * (a64 @ b64.T)
    d = d2.clamp_min_(0.0).sqrt_()
    d = d if metric == "euclidean" else d / a64.norm(dim=-1).clamp_min(1e-12)[:, None]
    return d.float()


def pairwise_distance(a: torch.Tensor, b: torch.Tensor, metric: Metric, mean: torch.Tensor | None = None) -> torch.Tensor:
    """All distances between rows of a [N, d] and rows of b [M, d] -> [N, M]."""
    return prepared_distance(prepare(a, metric, mean), prepare(b, metric, mean), metric)


def kernel_weight(d: torch.Tensor, eps: float, kernel: Kernel) -> torch.Tensor:
    """k(d): gaussian exp(-d²/2ε²) or hard 1{d < ε}."""
    if kernel == "gaussian":
        return torch.exp(-(d.float() ** 2) / (2 * eps**2))
    if kernel == "hard":
        return (d < eps).float()
    raise ValueError(f"unknown kernel {kernel!r}; use gaussian or hard")
