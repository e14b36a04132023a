"""ε-ball neighbour lists of the training prompts at a site, for neighbour conditioning.

Why: the preimage distribution the FCR asks about is P(x | ẑ) ∝ P(x)·k(d(z(x), ẑ)). Training
on z(x) + noise teaches that only if the noise keeps the conditions where the queries are.
In 576 dimensions it does not: kernel-matched noise lands on a shell almost orthogonal to
the activation manifold, the network learns to project it back onto z(x), and at a clean
query it samples ẑ's own neighbourhood much more tightly than the ε-ball (BENCHMARKS §1,
NOTES §20, §24). Conditioning a training prompt x on the clean activation of a prompt x'
drawn so that x is uniform over x''s ε-ball is the hard kernel's posterior itself, on the
manifold: pick x' from the prior, then x from the prior's prompts within ε of x'.

Two representations, chosen by `neighbour_balls` from the number of prompts:
* up to WHOLE_LISTS_MAX_N (20,000) prompts, every ball whole, from all pairs (`ball_lists`):
  exact, and what every run so far trained with (a ball holds ~5% of the prior: 10k prompts
  make 5·10⁶ entries, 20 MB a site);
* above, at most MAX_MEMBERS (64) members a ball, a uniformly drawn subset, with the ball's
  size recorded beside it (`ball_sample.sampled_balls`): memory N × 64 × 4 bytes (51 MB a site
  at 200k, against 8 GB for whole lists), time roughly linear in N. The trade-off: a draw is
  uniform over the stored subset, so over the run a ball offers 64 distinct partners, not all
  of them — a 700-step run makes about 15,000 draws (0.7 × 32 a step), under one a ball at
  200k, so the subset is almost never exhausted and a draw from it is a draw from the ball;
  ball sizes past the scanned prefix are estimated; small balls (under ~64·N/16,384 members)
  come from an inverted file whose recall BENCHMARKS §13 measures.
"""

from __future__ import annotations

import numpy as np
import torch

from .ball_sample import SIZE_EXACT, sampled_balls
from .distances import Metric, prepare, prepared_distance

WHOLE_LISTS_MAX_N = 20_000  # up to this many prompts, whole balls from all pairs (exact; every run so far)
MAX_MEMBERS = 64  # above it, members kept a ball


class BallLists:
    """For each of N rows, rows within ε of it (itself included), in CSR form: the stored
    neighbours of row i are `members[start[i]:start[i + 1]]`. Whole balls unless `ball_size`
    is given: then each row keeps a uniformly drawn subset, `ball_size` holds the ball's size
    and `size_kind` how it is known (ball_sample.SIZE_EXACT / _ESTIMATED / _FOUND)."""

    def __init__(self, start: np.ndarray, members: np.ndarray, ball_size: np.ndarray | None = None, size_kind: np.ndarray | None = None):
        self.start, self.members = start, members
        self.ball_size, self.size_kind = ball_size, size_kind

    def __len__(self) -> int:
        return len(self.start) - 1

    def sizes(self) -> np.ndarray:
        """Each row's ball size (recorded, where only a subset is stored)."""
        return self.stored() if self.ball_size is None else self.ball_size

    def stored(self) -> np.ndarray:
        """Members stored per row."""
        return np.diff(self.start)

    @property
    def whole(self) -> bool:
        """Whether every row stores its whole ball."""
        return self.ball_size is None or bool((self.stored() == self.ball_size).all() and (self.size_kind == SIZE_EXACT).all())

    def draw(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One uniformly drawn stored member for each of `rows`."""
        lo, hi = self.start[rows], self.start[rows + 1]
        return self.members[lo + (rng.random(len(rows)) * (hi - lo)).astype(np.int64)]


def ball_lists(z: torch.Tensor, eps: float, metric: Metric, mean: torch.Tensor | None = None, chunk: int = 1024) -> BallLists:
    """ε-ball members of every row of z [N, d] among the rows of z, computed in row chunks
    (N² distances never sit in memory at once)."""
    sizes: list[torch.Tensor] = []
    members: list[torch.Tensor] = []
    x = prepare(z, metric, mean)  # once, not once a chunk (it is row-wise, so chunks of it are the chunks' own)
    for a in range(0, len(z), chunk):
        d = prepared_distance(x[a: a + chunk], x, metric)
        d[torch.arange(d.shape[0]), torch.arange(a, a + d.shape[0])] = 0.0  # itself, whatever rounding says
        rows, cols = (d <= eps).nonzero(as_tuple=True)  # row-major: each row's members together
        sizes.append(torch.bincount(rows, minlength=d.shape[0]))
        members.append(cols.to(torch.int32))  # ~400 members a row, 30 sites: keep it small
    start = np.concatenate([[0], torch.cat(sizes).cumsum(0).numpy()]).astype(np.int64)
    return BallLists(start, torch.cat(members).numpy())


def neighbour_balls(z: torch.Tensor, eps: float, metric: Metric, mean: torch.Tensor | None = None, seed: int = 0,
                    whole_up_to: int | None = None, max_members: int | None = None) -> BallLists:
    """The ε-balls of every row of z among the rows of z: whole (`ball_lists`) up to
    `whole_up_to` rows (WHOLE_LISTS_MAX_N), else at most `max_members` (MAX_MEMBERS) a ball
    with sizes recorded (seeded)."""
    if len(z) <= (WHOLE_LISTS_MAX_N if whole_up_to is None else whole_up_to):
        return ball_lists(z, eps, metric, mean)
    k = MAX_MEMBERS if max_members is None else max_members
    start, members, size, kind = sampled_balls(z, eps, metric, mean, max_members=k, seed=seed)
    return BallLists(start, members, size, kind)
