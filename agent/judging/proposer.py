"""The judge as a proposer of hypotheses, one round of `autoscope explore` at a time.

The prompt shows the judge a few exploration queries with their nearest samples (rotating
round by round), the hypotheses tested so far (the best and the latest in full, the rest
by name), the evidence the samples were mined for, and — after rounds that brought
nothing new — which of its ideas were repeats; the answer is a `Proposal`. The loop
(`agent.loop.Explorer`) decides when to ask, and logs and scores what comes back.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..hypotheses import Proposal, ScoredHypothesis
from ..prompts import messages
from .judge import JudgeClient

if TYPE_CHECKING:
    from scope_core.api import SampleRun, Site

SITE_DESCRIPTIONS = {"attn": "attention-block output", "head": "output of one attention head", "resid": "residual stream", "mlp": "MLP output"}
SYSTEM = "You are a careful interpretability researcher. You answer only with JSON that fits the requested schema."

# The proposal prompt shows the best and the latest hypotheses in full and only names the
# rest: every tested hypothesis in full outgrew the embedded judge's context after ~18 of them.
HISTORY_BEST, HISTORY_RECENT, HISTORY_WITH_COUNTEREXAMPLES = 6, 4, 3
IDLE_TEMPERATURE_STEP = 0.35  # proposal temperature added per idle round (capped at 1.0)


def history_for_prompt(scored: list[ScoredHypothesis]) -> tuple[list[ScoredHypothesis], list[str], set[int]]:
    """(shown in full, in test order; names of the others; ids whose counterexamples are shown)."""
    def kappa(h: ScoredHypothesis) -> float:
        return h.score.kappa if h.score and h.score.kappa is not None else float("-inf")

    best = sorted(scored, key=kappa, reverse=True)[:HISTORY_BEST]
    keep = {id(h) for h in best} | {id(h) for h in scored[-HISTORY_RECENT:]}
    shown = [h for h in scored if id(h) in keep]
    with_counter = {id(h) for h in best[:HISTORY_WITH_COUNTEREXAMPLES]}
    return shown, [h.hypothesis.name for h in scored if id(h) not in keep], with_counter


class JudgeProposer:
    """Asks `judge` for up to `per_round` new hypotheses, showing `show_queries` exploration
    queries with their `show_samples` nearest samples each."""

    def __init__(self, judge: JudgeClient, per_round: int, show_queries: int, show_samples: int):
        self.judge, self.per_round, self.show_queries, self.show_samples = judge, per_round, show_queries, show_samples

    def prompt(self, round_: int, run: SampleRun, site: Site, scored: list[ScoredHypothesis], evidence: list[dict],
               repeats: list[str] | None = None) -> list[dict]:
        """The round's messages. `run` is the exploration half of D (a proposer never sees
        confirmation queries); `scored` every hypothesis so far (those of earlier rounds are
        shown); `evidence` the evidence table's rows."""
        k = self.show_queries
        start = (round_ * k) % max(len(run.queries), 1)
        shown = (run.queries[start:] + run.queries[:start])[:k]
        shown = [q.model_copy(update={"samples": sorted(q.samples, key=lambda s: s.distance)[: self.show_samples]}) for q in shown]
        history, also_tested, with_counter = history_for_prompt([h for h in scored if h.round < round_])
        history = [h if id(h) in with_counter else h.model_copy(update={"counterexamples": []}) for h in history]
        return messages("propose", system=SYSTEM, site=site.name, site_description=SITE_DESCRIPTIONS[site.component], eps=f"{run.eps.eps:.3g}",
                        queries=shown, scored=history, also_tested=also_tested, n_hypotheses=self.per_round,
                        repeats=(repeats or [])[:6], evidence=evidence)

    def temperature(self, idle: int) -> float | None:
        """None (the judge's own) on a fresh round; warmer by `IDLE_TEMPERATURE_STEP` per idle
        round, up to 1.0: a small judge at temperature 0 answers a similar prompt with the
        same ideas, round after round."""
        return None if idle == 0 else min(1.0, max(self.judge.config.temperature, 0.0) + IDLE_TEMPERATURE_STEP * idle)

    def propose(self, round_: int, run: SampleRun, site: Site, scored: list[ScoredHypothesis], evidence: list[dict],
                idle: int = 0, repeats: list[str] | None = None, timing: dict[str, float] | None = None) -> Proposal:
        """One proposal; the time spent waiting for the judge is added to `timing["judge_s"]`
        (also when it fails). Raises what `JudgeClient.ask` raises."""
        msgs = self.prompt(round_, run, site, scored, evidence, repeats)
        temperature = self.temperature(idle)
        t = time.perf_counter()
        try:
            return self.judge.ask(msgs, Proposal, max_tokens=1500, purpose=f"propose:{round_}", temperature=temperature)
        finally:
            if timing is not None:
                timing["judge_s"] += time.perf_counter() - t
