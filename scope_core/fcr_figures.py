"""The figures every FCR is reported with, apart from how they are computed (`fcr.py`).

Its own module, free of torch and numpy, because the agent's run log keeps them (its `Score`
derives from `FCRFigures`) and the commands that only read a log (`report`) start without
importing torch.
"""

from __future__ import annotations

from pydantic import BaseModel


class FCRFigures(BaseModel):
    """The rate and its 95% CI, the chance level p0, κ and its CI, whether the feature is
    degenerate (p0 = 1), and how many queries counted. Shared by `fcr.FCRResult` and the
    agent's `Score`; κ's CI defaults to None, as logs written before it existed lack it."""

    fcr: float | None
    ci_low: float | None
    ci_high: float | None
    p0: float | None
    kappa: float | None
    degenerate: bool
    n_queries: int  # queries that counted
    kappa_ci_low: float | None = None  # 95% bootstrap CI of κ (queries and p0 pool resampled together)
    kappa_ci_high: float | None = None
