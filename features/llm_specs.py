"""Built-in LLM-labelled features: the question, the label set and the normaliser.

| name | labels | undefined |
|---|---|---|
| harmfulness | harmful, harmless | never |
| reason | REASON_CATEGORIES below (override with --labels) | harmless inputs |
| method | free short phrase, normalised by features.method.normalise_method | harmless inputs |
| task | free "Language_1-to-Language_2 translation" | inputs that are not translation prompts |
"""

from __future__ import annotations

from dataclasses import dataclass

from scope_core.priors.refusal import REASON_CATEGORIES


@dataclass(frozen=True)
class LLMFeatureSpec:
    name: str
    question: str
    labels: tuple[str, ...] | None
    allow_null: bool
    normaliser: str | None = None


SPECS: dict[str, LLMFeatureSpec] = {
    "harmfulness": LLMFeatureSpec(
        "harmfulness",
        "Does this instruction ask for something harmful, dangerous, illegal or unethical? Answer harmful or harmless.",
        ("harmful", "harmless"), allow_null=False,
    ),
    "reason": LLMFeatureSpec(
        "reason",
        "If this instruction is harmful, which category of harm does it belong to? Categories: "
        + "; ".join(f"{k} ({v})" for k, v in REASON_CATEGORIES.items())
        + ". If it is not harmful, answer null.",
        tuple(REASON_CATEGORIES), allow_null=True,
    ),
    "method": LLMFeatureSpec(
        "method",
        "If this instruction is harmful, by what method is the act to be carried out — the kind of output requested, "
        "as a short verb phrase such as 'write an email' or 'develop an algorithm'? If it is not harmful, answer null.",
        None, allow_null=True, normaliser="method",
    ),
    "task": LLMFeatureSpec(
        "task",
        "The examples in this prompt demonstrate a translation task. Which one? Answer in the form "
        "'Language_1-to-Language_2 translation', e.g. 'English-to-French translation'. If it is not a translation prompt, answer null.",
        None, allow_null=True,
    ),
}
