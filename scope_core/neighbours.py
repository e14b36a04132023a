"""ε-ball neighbour lists of the training prompts at a site, for neighbour conditioning.

Why: the preimage distribution the FCR asks about is P(x | ẑ) ∝ P(x)·k(d(z(x), ẑ)). Training
on z(x) + noise teaches that only if the noise keeps the conditions where the queries are.
In 576 dimensions it does not: kernel-matched noise lands on a shell almost orthogonal to
the activation manifold, the network learns to project it back onto z(x), and at a clean
query it samples ẑ's own neighbourhood much more tightly than the ε-ball (BENCHMARKS §1,
NOTES §20, §24). Conditioning a training prompt x on the clean activation of a prompt x'
drawn so that x is uniform over x''s ε-ball is the hard kernel's posterior itself, on the
manifold: pick x' from the prior, then x from the prior's prompts within ε of x'.
"""

from __future__ import annotations

import numpy as np
import torch

from .distances import Metric, pairwise_distance


class BallLists:
    """For each of N rows, the rows within ε of it (itself included), in CSR form: the
    neighbours of row i are `members[start[i]:start[i + 1]]`."""

    def __init__(self, start: np.ndarray, members: np.ndarray):
        self.start, self.members = start, members

    def __len__(self) -> int:
        return len(self.start) - 1

    def sizes(self) -> np.ndarray:
        return np.diff(self.start)

    def draw(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One uniformly drawn ball member for each of `rows`."""
        lo, hi = self.start[rows], self.start[rows + 1]
        return self.members[lo + (rng.random(len(rows)) * (hi - lo)).astype(np.int64)]


def ball_lists(z: torch.Tensor, eps: float, metric: Metric, mean: torch.Tensor | None = None, chunk: int = 1024) -> BallLists:
    """ε-ball members of every row of z [N, d] among the rows of z, computed in row chunks
    (N² distances never sit in memory at once)."""
    sizes: list[torch.Tensor] = []
    members: list[torch.Tensor] = []
    for a in range(0, len(z), chunk):
        d = pairwise_distance(z[a: a + chunk], z, metric, mean)
        d[torch.arange(d.shape[0]), torch.arange(a, a + d.shape[0])] = 0.0  # itself, whatever rounding says
        rows, cols = (d <= eps).nonzero(as_tuple=True)  # row-major: each row's members together
        sizes.append(torch.bincount(rows, minlength=d.shape[0]))
        members.append(cols.to(torch.int32))  # ~400 members a row, 30 sites: keep it small
    start = np.concatenate([[0], torch.cat(sizes).cumsum(0).numpy()]).astype(np.int64)
    return BallLists(start, torch.cat(members).numpy())
