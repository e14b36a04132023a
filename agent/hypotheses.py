"""Typed records of the agent loop: what the judge proposes and labels, what a hypothesis
becomes once compiled, how it scored, and how hypotheses rank. The run log stores these as
JSON lines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from scope_core.api import FCRFigures

# Every string and list the judge writes is bounded in the schema it is sent, so a
# grammar-constrained engine must close them: unbounded, a 135M judge once wrote
# `"labels": ["1.1.1.1…` for 1,496 tokens (agent.judging.judge.unbounded_paths checks each schema).
STATEMENT_CHARS = 400
RATIONALE_CHARS = 300
CODE_CHARS = 1000  # llama.cpp's grammar compiler takes string bounds up to about 1,000 (1,600 failed)
LABEL_CHARS = 48
Label = Annotated[str, Field(max_length=LABEL_CHARS)]


class Hypothesis(BaseModel):
    """One hypothesis about what a site encodes, as the judge proposes it."""

    name: str = Field(description="short snake_case name, e.g. harm_category", min_length=1, max_length=48)
    statement: str = Field(description="one sentence: what the activation encodes", max_length=STATEMENT_CHARS)
    kind: Literal["python", "llm"] = Field(description="python: computable from the text by rules; llm: needs judgement")
    code: str | None = Field(None, description="python kind: a module defining def feature(text) -> str | None", max_length=CODE_CHARS)
    question: str | None = Field(None, description="llm kind: the question asked about each input", max_length=STATEMENT_CHARS)
    labels: list[Label] | None = Field(None, description="llm kind: the allowed answers; null for a short free-form extraction", max_length=12)
    rationale: str = Field("", description="which samples suggested it", max_length=RATIONALE_CHARS)
    parents: list[Label] = Field(default_factory=list, description="hypotheses this one revises (set by autoscope; leave empty)",
                                 max_length=4)

    @field_validator("name", mode="before")
    @classmethod
    def _short_name(cls, v: object) -> object:
        """Long names are cut to a snake_case stub rather than rejected: weak judges ramble."""
        if isinstance(v, str):
            import re

            v = re.sub(r"[^a-z0-9]+", "_", v.lower()).strip("_")[:48] or "hypothesis"
        return v

    @field_validator("statement", "question", mode="before")
    @classmethod
    def _cap(cls, v: object) -> object:
        return v[:STATEMENT_CHARS] if isinstance(v, str) else v

    @field_validator("rationale", mode="before")
    @classmethod
    def _cap_rationale(cls, v: object) -> object:
        return v[:RATIONALE_CHARS] if isinstance(v, str) else v

    @field_validator("labels", mode="before")
    @classmethod
    def _cap_labels(cls, v: object) -> object:
        if isinstance(v, list):
            return [x[:LABEL_CHARS] if isinstance(x, str) else x for x in v][:12]
        return v

    @field_validator("code", mode="before")
    @classmethod
    def _cap_code(cls, v: object) -> object:
        return v[:CODE_CHARS] if isinstance(v, str) else v


class Proposal(BaseModel):
    """The judge's answer to a propose prompt."""

    hypotheses: list[Hypothesis] = Field(max_length=5)
    done: bool = Field(description="true when no hypothesis worth testing is left")


class CompiledCode(BaseModel):
    """The judge's answer to a compile prompt: python for a hypothesis."""

    code: str = Field(max_length=CODE_CHARS)

    @field_validator("code", mode="before")
    @classmethod
    def _cap_code(cls, v: object) -> object:
        return v[:CODE_CHARS] if isinstance(v, str) else v


class LabelAnswer(BaseModel):
    """The judge's label for one input under an LLM feature."""

    label: str | None = Field(description="one of the allowed labels, a short phrase, or null if undefined", max_length=64)


class BatchLabels(BaseModel):
    """The judge's labels for several inputs at once (one request, many labels)."""

    labels: list[Annotated[str, Field(max_length=64)] | None] = Field(max_length=64)


@dataclass
class LabelOutcome:
    """One input's label under an LLM feature (asked or scored by the channel labeller)."""

    label: str | None  # normalised label, None if undefined or failed
    raw: str | None  # what the judge answered
    error: str | None = None  # why there is no label, when the judge failed


class Score(FCRFigures):
    """A hypothesis's FCR at a site as the run log keeps it: the figures it shares with
    `scope_core.api.FCRResult` (`FCRFigures`; per-query rates and skip counts left out), with
    the empirical reference on the same queries and the numbers of label values. Every field
    past the figures' own has a default, so logs written before it existed still load."""

    empirical_fcr: float | None = None  # the generator-free reference on the same queries (confirmation scores)
    empirical_kappa: float | None = None
    empirical_kappa_ci_low: float | None = None
    empirical_kappa_ci_high: float | None = None
    n_values: int | None = None  # distinct labels among the prior prompts (the search null matches it)
    n_query_values: int | None = None  # distinct labels among the queries: one value cannot show what a site tells apart
    # κ with the queries' labels permuted among the queries, one per shared permutation (confirmation scores; agent.confirm)
    permuted_kappas: list[float | None] | None = None
    # what the scored samples were decoded at (a run's sites may differ: Scope.sampling_temperature); None in a log
    # written before it was recorded, whose samples were all decoded at 1
    temperature: float | None = None


class Counterexample(BaseModel):
    query: str
    query_label: str | None
    sample: str
    sample_label: str | None
    distance: float


class LabelledSample(BaseModel):
    text: str
    distance: float
    accepted: bool
    label: str | None


class ExampleQuery(BaseModel):
    query: str
    label: str | None
    samples: list[LabelledSample]


class ScoredHypothesis(BaseModel):
    """A hypothesis after compile + label + score, or with the reason it failed."""

    id: int
    round: int
    site: str
    hypothesis: Hypothesis
    status: Literal["scored", "compile_failed", "label_failed", "undefined"]
    error: str | None = None
    note: str | None = None  # e.g. the code failed and the statement was labelled by the judge instead
    score: Score | None = None
    counterexamples: list[Counterexample] = Field(default_factory=list)
    examples: list[ExampleQuery] = Field(default_factory=list)
    other_sites: dict[str, Score] = Field(default_factory=dict)
    confirmation: Score | None = None  # on the confirmation queries, which nothing in the loop saw
    screened_out: bool = False  # scored on the screen's few queries only, where it did not clear chance
    confirmation_error: str | None = None  # why confirmation scoring failed; never shown to the proposer (it may quote a confirmation text)
    source: Literal["judge", "evidence", "refined"] = "judge"


class SearchNull(BaseModel):
    """The best κ that as many content-free features (salted hashes of the text, with the
    tested hypotheses' numbers of values) reach on the confirmation queries: what searching
    alone buys. A finding must beat it."""

    max_kappa: float | None
    kappas: list[float] = Field(default_factory=list)
    n_features: int = 0
    n_hypotheses: int | None = None  # the scored hypotheses it was drawn for (None: saved before this was kept)
    # min-P over the scored hypotheses (agent.confirm.permutation_pvalues): each one's permutation p-value, by id,
    # and the search's threshold on them (None: saved before it was computed)
    permutation_p: dict[int, float] = Field(default_factory=dict)
    p_threshold: float | None = None


def permutation_p(score: Score) -> float | None:
    """The share of label permutations under which the feature's κ reaches its observed κ
    ((1 + count) / (1 + permutations), so never 0); None without permutations."""
    if score.kappa is None or not score.permuted_kappas:
        return None
    perm = [k for k in score.permuted_kappas if k is not None]
    return (1 + sum(k >= score.kappa - 1e-12 for k in perm)) / (1 + len(perm))


def is_confirmed(h: ScoredHypothesis, null: SearchNull | None) -> bool:
    """Confirmed: on confirmation queries, κ's 95% CI lies above 0 and above the search null,
    its permutation p-value at or under the search's min-P threshold (every scored hypothesis
    counted, `agent.confirm`), and the feature takes at least two values there. (A feature all queries share — "is an
    instruction" on a prior of instructions — reaches κ = 1 with a CI of [1, 1] from a few
    rare prior values; it shows nothing the site tells apart.)"""
    c = h.confirmation
    if h.status != "scored" or c is None or c.kappa_ci_low is None or (c.n_query_values or 0) < 2:
        return False
    if null is None or null.max_kappa is None:  # a run stopped before its null: nothing is confirmed yet
        return False
    p = null.permutation_p.get(h.id, permutation_p(c))  # one outside the search (a benchmark's oracle): its own p, the search's bar
    beats_search = null.p_threshold is None or (p is not None and p <= null.p_threshold)
    return c.kappa_ci_low > max(0.0, null.max_kappa) and beats_search


def rank_key(h: ScoredHypothesis, null: SearchNull | None) -> tuple:
    """Confirmed first, then by confirmation κ; exploration κ only breaks ties among
    hypotheses without a confirmation score."""
    def k(s: Score | None) -> float:
        return s.kappa if s and s.kappa is not None else -1e9

    return (not is_confirmed(h, null), h.status != "scored", -k(h.confirmation), -k(h.score),
            -(h.score.fcr if h.score and h.score.fcr is not None else -1))


def ranked(hs: list[ScoredHypothesis], null: SearchNull | None = None) -> list[ScoredHypothesis]:
    """The one ranking, for the loop and the report alike (`rank_key`)."""
    return sorted(hs, key=lambda h: rank_key(h, null))


def kappa_text(kappa: float | None, low: float | None = None, high: float | None = None, degenerate: bool = False) -> str:
    """κ with its 95% CI, as every table and report prints it: "0.713 [0.56, 0.85]"."""
    if degenerate:
        return "degenerate"
    if kappa is None:
        return "—"
    return f"{kappa:.3f}" + (f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else "")


def verdict(site: str, ranking: list[ScoredHypothesis], null: SearchNull | None) -> str:
    """The run's finding in one paragraph, from confirmation scores only."""
    def k(sc: Score) -> str:
        ci = f" [{sc.kappa_ci_low:.2f}, {sc.kappa_ci_high:.2f}]" if sc.kappa_ci_low is not None else ""
        return f"κ {sc.kappa:.2f}{ci}" if sc.kappa is not None else "κ —"

    null_line = (f"the search null — the best of {null.n_features} content-free features on the same queries — is κ {null.max_kappa:.2f}"
                 + (f"; a finding's permutation p must be ≤ {null.p_threshold:.4f}, what the best of the whole search reaches by luck in 5% of label permutations"
                    if null.p_threshold is not None else "")
                 if null and null.max_kappa is not None
                 else "no search null was computed (the run stopped before confirmation): nothing is confirmed until it is resumed")
    confirmed = [h for h in ranking if is_confirmed(h, null)]
    scored = [h for h in ranking if h.status == "scored" and h.confirmation and h.confirmation.kappa is not None]
    if confirmed:
        # the headline is chosen on the exploration queries, so its confirmation κ is not the
        # largest of several on the same queries (a selection the confirmation set must not make)
        best = max(confirmed, key=lambda h: h.score.kappa if h.score and h.score.kappa is not None else -1e9)
        confirmed = [best] + [h for h in confirmed if h is not best]
        c = best.confirmation
        assert c is not None
        text = (f"{site} encodes {best.hypothesis.statement} ({best.hypothesis.name}: {k(c)} on {c.n_queries} confirmation "
                f"queries, confirmed; {null_line}).")
        if len(confirmed) > 1:
            text += " Also confirmed: " + ", ".join(f"{h.hypothesis.name} ({k(h.confirmation)})" for h in confirmed[1:4]) + "."  # type: ignore[arg-type]
        rest = [h for h in scored if not is_confirmed(h, null)]
        if rest:
            text += f" Not confirmed ({len(rest)}): " + ", ".join(h.hypothesis.name for h in rest[:5]) + "."
        return text
    if scored:
        best = max(scored, key=lambda h: h.confirmation.kappa or -1e9)  # type: ignore[union-attr]
        return (f"No hypothesis was confirmed at {site}: the best on confirmation queries, {best.hypothesis.name}, reached "
                f"{k(best.confirmation)}; {null_line}. Nothing here is encoded beyond what searching alone finds.")  # type: ignore[arg-type]
    return f"No hypothesis was scored at {site}."
