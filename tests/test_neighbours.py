"""ε-ball neighbour lists (neighbour conditioning): the right members, uniform draws."""

import numpy as np
import torch

from scope_core.distances import pairwise_distance
from scope_core.neighbours import ball_lists


def test_ball_members_are_exactly_the_rows_within_eps_itself_included():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 8, generator=g) + 3.0  # a shared direction, as activations have
    eps = float(pairwise_distance(z, z, "cosine").quantile(0.1))
    balls = ball_lists(z, eps, "cosine", chunk=7)  # chunks that do not divide N
    brute = pairwise_distance(z, z, "cosine") <= eps
    for i in range(50):
        got = set(balls.members[balls.start[i]: balls.start[i + 1]].tolist())
        want = set(torch.nonzero(brute[i]).squeeze(1).tolist()) | {i}
        assert got == want and i in got
    assert len(balls) == 50 and balls.sizes().sum() == len(balls.members)


def test_centred_metric_uses_the_mean_and_draws_are_uniform_over_the_ball():
    z = torch.tensor([[10.0, 0.0], [10.0, 0.1], [10.0, -0.1], [10.0, 5.0]])
    mean = torch.tensor([10.0, 0.0])
    raw = ball_lists(z, 0.01, "cosine")
    centred = ball_lists(z, 0.01, "centred_cosine", mean)
    assert raw.sizes()[0] == 3  # raw cosine: the first three point the same way
    assert centred.sizes()[1] == 2  # centred: row 1 (0, 0.1) and row 3 (0, 5) point the same way; row 0 sits on the mean
    rng = np.random.default_rng(0)
    draws = raw.draw(np.zeros(3000, dtype=np.int64), rng)
    counts = np.bincount(draws, minlength=4)
    assert counts[3] == 0 and all(abs(c / 3000 - 1 / 3) < 0.04 for c in counts[:3])
