import numpy as np
import pytest
import torch

from scope_core.distances import distance
from scope_core.noise import (
    CosineNoise,
    EuclideanNoise,
    kernel_eps_for_shell,
    shell_distance,
)


def test_shell_sits_about_17_eps_away_in_576_dims():
    # the calibration fact: ε_k = 0.05 -> 0.63, ε_k = 0.003 -> 0.050
    assert shell_distance(0.05, 576) == pytest.approx(0.63, abs=0.01)
    assert shell_distance(0.003, 576) == pytest.approx(0.050, abs=0.001)


@pytest.mark.parametrize("target", [0.02, 0.1, 0.3])
def test_kernel_width_is_found_from_the_wanted_shell(target):
    ek = kernel_eps_for_shell(target, 576)
    assert shell_distance(ek, 576) == pytest.approx(target, rel=1e-3)
    assert ek < target / 10  # far narrower than the distance it produces


def test_kernel_noise_matches_intended_distance_distribution():
    rng = np.random.default_rng(0)
    z = torch.randn(4000, 576) + 2.0
    noise = CosineNoise(576, "kernel", distance=0.1)
    zz = noise(z, rng)
    d = distance(zz, z, "cosine").numpy()
    # the 1-D density k(1-cos θ) sin^(n-2) θ has its median at the requested shell
    assert np.median(d) == pytest.approx(0.1, rel=0.02)
    # empirical quantiles agree with the exact angle distribution's quantiles
    theta = noise.sample_theta(200000, np.random.default_rng(1))
    ref = 1 - np.cos(theta)
    for q in (0.05, 0.25, 0.75, 0.95):
        assert np.quantile(d, q) == pytest.approx(np.quantile(ref, q), rel=0.02)
    ratio = (zz.norm(dim=1) / z.norm(dim=1)).numpy()
    assert ratio.min() >= 0.9 - 1e-5 and ratio.max() <= 1.1 + 1e-5


def test_range_mode_is_uniform_with_clean_share():
    rng = np.random.default_rng(0)
    z = torch.randn(5000, 64)
    zz = CosineNoise(64, "range", distance=0.2, clean=0.1)(z, rng)
    d = distance(zz, z, "cosine").numpy()
    assert (d < 1e-5).mean() == pytest.approx(0.1 + 0.9 * 0.0, abs=0.02)
    pos = d[d > 1e-5]
    assert pos.max() <= 0.2 + 1e-4
    assert np.median(pos) == pytest.approx(0.1, abs=0.01)


def test_centred_noise_rotates_around_the_mean():
    rng = np.random.default_rng(0)
    mean = torch.full((128,), 5.0)
    z = mean + torch.randn(2000, 128)
    zz = CosineNoise(128, "kernel", distance=0.05, center=mean)(z, rng)
    d = distance(zz, z, "centred_cosine", mean).numpy()
    assert np.median(d) == pytest.approx(0.05, rel=0.03)


def test_euclidean_noise_shell():
    rng = np.random.default_rng(0)
    z = torch.randn(3000, 256) * 3
    zz = EuclideanNoise(256, distance=2.0, normalised=False)(z, rng)
    assert float((zz - z).norm(dim=1).median()) == pytest.approx(2.0, rel=0.03)
