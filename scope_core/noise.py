"""Kernel-matched training noise: r ~ p(r) ∝ k(d(ẑ + r, ẑ)).

For cosine distance the density is improper along the ray, so the norm is kept in a
band | ‖ẑ+r‖ − ‖ẑ‖ | < δ‖ẑ‖ and the angle θ is drawn from its exact 1-D density
k(1 − cos θ)·sin^(n−2) θ, then ẑ is rotated by θ towards a random orthogonal direction.

Beware the shell: in n dimensions sin^(n−2) θ pushes nearly all mass to a thin shell at
cosine distance ≈ ε_k·√((n−2)/2) — about 17·ε_k at n = 576. So the kernel width is set
*from the noise distance it should produce* (`kernel_eps_for_shell`), not equal to the
acceptance ε. The norm is drawn uniformly in the band: the exact radial density ∝ ρ^(n−1)
would pin every sample to the band's upper edge, a systematic bias with no use here.

Two modes:
* ``kernel``: θ from the kernel density (a shell at the chosen distance);
* ``range``:  the cosine distance drawn uniformly in [0, d_max] per example (a share
  `clean` of exact ẑ), so clean query activations are inside the training distribution.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

NoiseMode = Literal["kernel", "range", "none"]


def _theta_grid(n: int = 20001) -> np.ndarray:
    return np.linspace(0.0, math.pi, n)


def _log_density(theta: np.ndarray, eps_k: float, dim: int, kernel: str) -> np.ndarray:
    d = 1.0 - np.cos(theta)
    with np.errstate(divide="ignore"):
        log_vol = (dim - 2) * np.log(np.sin(theta))
    if kernel == "gaussian":
        log_k = -(d**2) / (2 * eps_k**2)
    elif kernel == "hard":
        log_k = np.where(d < eps_k, 0.0, -np.inf)
    else:
        raise ValueError(f"unknown kernel {kernel!r}")
    out = log_vol + log_k
    out[~np.isfinite(out)] = -np.inf
    return out


def angle_sampler(eps_k: float, dim: int, kernel: str = "gaussian"):
    """Inverse-CDF sampler of θ on a fine grid; returns f(size, rng) -> θ array."""
    theta = _theta_grid()
    logp = _log_density(theta, eps_k, dim, kernel)
    p = np.exp(logp - logp.max())
    cdf = np.cumsum(p)
    cdf /= cdf[-1]

    def sample(size: int, rng: np.random.Generator) -> np.ndarray:
        return np.interp(rng.random(size), cdf, theta)

    return sample


def shell_distance(eps_k: float, dim: int, kernel: str = "gaussian") -> float:
    """Median cosine distance of kernel-matched noise of width eps_k in `dim` dimensions."""
    theta = _theta_grid()
    logp = _log_density(theta, eps_k, dim, kernel)
    p = np.exp(logp - logp.max())
    cdf = np.cumsum(p) / p.sum()
    return float(1 - math.cos(np.interp(0.5, cdf, theta)))


def kernel_eps_for_shell(target_distance: float, dim: int, kernel: str = "gaussian") -> float:
    """The kernel width ε_k whose noise shell sits at `target_distance` (bisection on log ε_k)."""
    lo, hi = 1e-6, 1.0
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if shell_distance(mid, dim, kernel) < target_distance:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


def rotate(z: torch.Tensor, theta: torch.Tensor, norm_factor: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
    """Rotate rows of z [N, d] by angles θ [N] towards random orthogonal directions, rescale norms."""
    u = torch.nn.functional.normalize(z, dim=-1)
    r = torch.randn(z.shape, generator=g, dtype=z.dtype)
    r = r - (r * u).sum(-1, keepdim=True) * u
    v = torch.nn.functional.normalize(r, dim=-1)
    direction = torch.cos(theta)[:, None] * u + torch.sin(theta)[:, None] * v
    return direction * z.norm(dim=-1, keepdim=True) * norm_factor[:, None]


class CosineNoise:
    """Draws noisy conditions around ẑ for cosine (or, with `center`, centred cosine) distance."""

    def __init__(
        self,
        dim: int,
        mode: NoiseMode = "kernel",
        distance: float = 0.1,
        kernel: str = "gaussian",
        delta: float = 0.1,
        clean: float = 0.1,
        center: torch.Tensor | None = None,
    ):
        self.dim, self.mode, self.distance, self.kernel, self.delta, self.clean = dim, mode, distance, kernel, delta, clean
        self.center = center
        self.eps_k = kernel_eps_for_shell(distance, dim, kernel) if mode == "kernel" else None
        self._angles = angle_sampler(self.eps_k, dim, kernel) if self.eps_k is not None else None

    def sample_theta(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.mode == "none":
            return np.zeros(n)
        if self.mode == "kernel":
            assert self._angles is not None
            return self._angles(n, rng)
        d = rng.uniform(0.0, self.distance, n)
        d[rng.random(n) < self.clean] = 0.0
        return np.arccos(np.clip(1 - d, -1, 1))

    def __call__(self, z: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self.mode == "none":
            return z
        n = z.shape[0]
        theta = torch.from_numpy(self.sample_theta(n, rng)).to(z.dtype)
        factor = torch.from_numpy(rng.uniform(1 - self.delta, 1 + self.delta, n)).to(z.dtype)
        g = torch.Generator().manual_seed(int(rng.integers(2**62)))
        if self.center is None:
            return rotate(z, theta, factor, g)
        c = self.center.to(z.dtype)
        return c + rotate(z - c, theta, factor, g)

    def describe(self) -> dict:
        return {"mode": self.mode, "distance": self.distance, "kernel": self.kernel, "eps_k": self.eps_k, "delta": self.delta,
                "clean": self.clean if self.mode == "range" else None}


class EuclideanNoise:
    """Isotropic Gaussian noise for (normalised) euclidean distance: p(r) ∝ exp(-‖r‖²/2σ²)
    is exactly the kernel-matched density; its shell sits at σ√n, so σ = distance/√n
    (times ‖ẑ‖ for the normalised metric)."""

    def __init__(self, dim: int, distance: float, normalised: bool):
        self.dim, self.distance, self.normalised = dim, distance, normalised

    def __call__(self, z: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(rng.integers(2**62)))
        sigma = self.distance / math.sqrt(self.dim)
        scale = z.norm(dim=-1, keepdim=True) if self.normalised else 1.0
        return z + torch.randn(z.shape, generator=g, dtype=z.dtype) * sigma * scale

    def describe(self) -> dict:
        return {"mode": "gaussian", "distance": self.distance, "normalised": self.normalised}


def make_noise(metric: str, dim: int, mode: NoiseMode, distance: float, kernel: str = "gaussian", center: torch.Tensor | None = None):
    """The training-noise sampler matched to `metric`, with its shell at `distance`."""
    if metric == "cosine":
        return CosineNoise(dim, mode, distance, kernel)
    if metric == "centred_cosine":
        return CosineNoise(dim, mode, distance, kernel, center=center)
    if metric in ("euclidean", "norm_euclidean"):
        if mode == "none":
            return CosineNoise(dim, "none", distance)
        return EuclideanNoise(dim, distance, normalised=metric == "norm_euclidean")
    raise ValueError(f"unknown metric {metric!r}")
