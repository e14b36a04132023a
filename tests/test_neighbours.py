"""ε-ball neighbour lists (neighbour conditioning): the right members, uniform draws."""

import numpy as np
import pytest
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


# -- scale (issue 22): the same balls as all pairs at today's sizes; bounded subsets beyond ------------

from scope_core.ball_sample import SIZE_ESTIMATED, SIZE_EXACT, SIZE_FOUND, sampled_balls  # noqa: E402
from scope_core.distances import METRICS  # noqa: E402
from scope_core.neighbours import neighbour_balls  # noqa: E402


def _activations(n: int, seed: int = 0, d: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Clustered rows around a large shared direction, as a site's activations are."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(6, d, generator=g) * 2
    z = 8.0 + centres[torch.randint(0, 6, (n,), generator=g)] + torch.randn(n, d, generator=g) * torch.rand(n, 1, generator=g)
    return z, z.mean(0)


def _truth(z: torch.Tensor, eps: float, metric: str, mean: torch.Tensor, tol: float = 0.0) -> list[set[int]]:
    """The balls at ε·(1 + tol), in float64 (itself always in): between the balls at ε(1 − 1e-4)
    and ε(1 + 1e-4) lie the pairs whose float32 distance rounds either way, by block shape."""
    a = z.double() - (mean.double() if metric == "centred_cosine" else 0.0)
    if metric in ("cosine", "centred_cosine"):
        a = torch.nn.functional.normalize(a, dim=-1)
        d = 1 - a @ a.T
    else:
        d = torch.cdist(a, a, compute_mode="donot_use_mm_for_euclid_dist")
        d = d / a.norm(dim=-1)[:, None] if metric == "norm_euclidean" else d  # by the centre's norm, as verification
    d.fill_diagonal_(0.0)
    return [set(torch.nonzero(d[i] <= eps * (1 + tol)).squeeze(1).tolist()) for i in range(len(z))]


def _eps(z: torch.Tensor, metric: str, mean: torch.Tensor, q: float = 0.05) -> float:
    d = pairwise_distance(z, z, metric, mean)  # type: ignore[arg-type]
    iu = torch.triu_indices(len(z), len(z), 1)
    return float(d[iu[0], iu[1]].quantile(q))


@pytest.mark.parametrize("metric", METRICS)
def test_balls_at_todays_sizes_are_the_all_pairs_balls_for_every_metric(metric):
    z, mean = _activations(300)
    eps = _eps(z, metric, mean)
    d = pairwise_distance(z, z, metric, mean)
    d.fill_diagonal_(0.0)
    rows, cols = (d <= eps).nonzero(as_tuple=True)
    start = np.concatenate([[0], torch.bincount(rows, minlength=len(z)).cumsum(0).numpy()])
    balls = neighbour_balls(z, eps, metric, mean, seed=3)  # type: ignore[arg-type]
    assert balls.whole and balls.ball_size is None
    assert np.array_equal(balls.start, start) and np.array_equal(balls.members, cols.numpy().astype(np.int32))
    chunked = ball_lists(z, eps, metric, mean, chunk=7)  # type: ignore[arg-type]
    assert np.array_equal(chunked.start, balls.start) and np.array_equal(chunked.members, balls.members)


@pytest.mark.parametrize("metric", METRICS)
def test_bounded_balls_store_only_true_members_and_record_sizes(metric):
    z, mean = _activations(700, seed=1)
    eps = _eps(z, metric, mean)
    inner, outer = _truth(z, eps, metric, mean, -1e-4), _truth(z, eps, metric, mean, 1e-4)
    k = 8
    start, members, size, kind = sampled_balls(z, eps, metric, mean, max_members=k, seed=0, first_tile=64,  # type: ignore[arg-type]
                                               largest_tile=128, exact_prefix=256, nprobe=4)
    found = true_small = 0
    for i in range(len(z)):
        got = members[start[i]: start[i + 1]].tolist()
        assert len(got) == len(set(got)) <= k and set(got) <= outer[i], i
        if kind[i] == SIZE_EXACT:
            assert len(inner[i]) <= size[i] <= len(outer[i]) and (len(got) == k or inner[i] <= set(got))
        elif kind[i] == SIZE_ESTIMATED:
            assert len(got) == k
        else:
            assert kind[i] == SIZE_FOUND and len(got) == min(k, size[i]) and size[i] <= len(outer[i])
            assert i in got or size[i] > k
            found, true_small = found + size[i], true_small + len(inner[i])
    est = np.flatnonzero(kind == SIZE_ESTIMATED)
    rel = np.abs(size[est] - np.array([len(inner[i]) for i in est])) / size[est]
    assert len(est) and np.median(rel) < 0.35  # count × N / prefix
    assert (kind == SIZE_FOUND).any() and found / true_small > 0.9  # the inverted file's recall on small balls


def test_bounded_subsets_are_uniform_over_the_ball_and_seeded():
    g = torch.Generator().manual_seed(0)
    near = torch.randn(200, 8, generator=g) * 0.05 + torch.tensor([5.0] + [0.0] * 7)
    far = torch.randn(200, 8, generator=g) * 0.05 + torch.tensor([0.0, 5.0] + [0.0] * 6)
    z = torch.cat([near, far])
    dist = pairwise_distance(z[:1], z[:200], "euclidean")[0]
    counts = np.zeros(400)
    for seed in range(60):
        start, members, size, kind = sampled_balls(z, 1.0, "euclidean", max_members=20, seed=seed, first_tile=32)
        counts[members[start[0]: start[1]]] += 1
        assert size[0] == 200 or kind[0] == SIZE_ESTIMATED
    assert counts[200:].sum() == 0 and counts.sum() == 60 * 20
    by_distance = counts[:200][np.argsort(dist.numpy())]
    assert abs(by_distance[:100].sum() - by_distance[100:].sum()) < 0.15 * 600  # near members are not favoured
    a, b = sampled_balls(z, 1.0, "euclidean", max_members=20, seed=7), sampled_balls(z, 1.0, "euclidean", max_members=20, seed=7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_past_the_whole_list_size_balls_keep_a_bounded_subset_and_draw_from_it():
    z, mean = _activations(500, seed=2)
    eps = _eps(z, "cosine", mean)
    outer = _truth(z, eps, "cosine", mean, 1e-4)
    balls = neighbour_balls(z, eps, "cosine", mean, seed=0, whole_up_to=100, max_members=16)
    assert not balls.whole and balls.stored().max() <= 16 and len(balls) == 500
    exact = np.flatnonzero(balls.size_kind == SIZE_EXACT)
    assert all(balls.sizes()[i] <= len(outer[i]) for i in exact) and (balls.sizes() >= balls.stored()).all()
    rows = np.arange(500).repeat(20)
    draws = balls.draw(rows, np.random.default_rng(0))
    assert all(int(m) in outer[int(r)] for r, m in zip(rows, draws))
