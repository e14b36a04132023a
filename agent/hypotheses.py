"""Typed records of the agent loop: what the judge proposes, what a hypothesis becomes
once compiled, and how it scored. The run log stores these as JSON lines."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

# Every string and list the judge writes is bounded in the schema it is sent, so a
# grammar-constrained engine must close them: unbounded, a 135M judge once wrote
# `"labels": ["1.1.1.1…` for 1,496 tokens (agent.judge.unbounded_paths checks each schema).
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


class Score(BaseModel):
    fcr: float | None
    ci_low: float | None
    ci_high: float | None
    p0: float | None
    kappa: float | None
    degenerate: bool
    n_queries: int
    empirical_fcr: float | None = None


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
