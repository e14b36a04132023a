"""An exponential moving average of the trained weights (Polyak averaging), evaluated and saved
in place of the last step's weights.

Why: generators of the same recipe trained with other seeds disagree on what they write off the
prior's grammar by more than the FCR target allows (issue 20, item 5; BENCHMARKS §21). Part of a
run's end point is the noise of its last few hundred minibatches; an average over those steps keeps
what they agree on. The average starts from the initial weights with a short horizon that grows to
`decay` (1 − 1/(10 + t) capped), so the first steps do not pull it back towards the initialisation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class WeightAverage:
    """The running average of `params` (the tensors the optimiser trains), kept beside them."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"an average's decay must be in [0, 1), not {decay}")
        self.params = list(params)
        self.decay = float(decay)
        self.updates = 0
        self.shadow = [p.detach().clone() for p in self.params]

    def rate(self) -> float:
        """This update's decay: min(decay, (1 + t) / (10 + t)) after t earlier updates."""
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Fold the parameters' current values into the average (call after each optimiser step)."""
        d = self.rate()
        torch._foreach_mul_(self.shadow, d)
        torch._foreach_add_(self.shadow, [p.detach() for p in self.params], alpha=1.0 - d)
        self.updates += 1

    @contextmanager
    @torch.no_grad()
    def applied(self) -> Iterator[None]:
        """The parameters hold the average inside the block and their own values again after it."""
        own = [p.detach().clone() for p in self.params]
        for p, s in zip(self.params, self.shadow):
            p.copy_(s)
        try:
            yield
        finally:
            for p, o in zip(self.params, own):
                p.copy_(o)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": [s.clone() for s in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["shadow"]) != len(self.shadow) or any(a.shape != b.shape for a, b in zip(state["shadow"], self.shadow)):
            raise ValueError("the saved weight average does not match this generator's trained parameters")
        self.decay, self.updates = float(state["decay"]), int(state["updates"])
        for s, v in zip(self.shadow, state["shadow"]):
            s.copy_(v)
