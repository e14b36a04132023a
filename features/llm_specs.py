"""Built-in LLM-labelled features: the question, the label set and the normaliser.

| name | labels | undefined |
|---|---|---|
| harmfulness | harmful, harmless | never |
| reason | REASON_CATEGORIES below (override with --labels) | harmless inputs |
| method | free short phrase, normalised by features.method.normalise_method | harmless inputs |
| task | "X-to-Y translation": asked (normalised by `normalise_task`) or scored over the six EN/FR/ES directions (--labels) | non-translation inputs |
"""

from __future__ import annotations

from dataclasses import dataclass

from features.task import direction
from scope_core.api import DIRECTIONS, REASON_CATEGORIES, task_label


@dataclass(frozen=True)
class LLMFeatureSpec:
    """An LLM feature: the question, its label set (None: a short free-form answer), whether
    'does not apply' (null) is a valid answer, and a second wording of the question used to
    measure the labeller's self-consistency."""

    name: str
    question: str
    labels: tuple[str, ...] | None
    allow_null: bool
    normaliser: str | None = None
    paraphrase: str | None = None
    # Descriptions for the channel labeller (agent.judging.channel): label -> what texts of that
    # label are about, None -> what texts the feature does not apply to. None: ask only.
    descriptions: tuple[tuple[str | None, str], ...] | None = None

    def channel_classes(self, labels: tuple[str, ...] | None = None) -> dict[str | None, str] | None:
        """The classes the channel labeller scores, for a label set (the built-in one by
        default); an overriding set is described by its own label names."""
        if self.descriptions is None:
            return None
        if labels and labels != self.labels:
            out: dict[str | None, str] = {lab: self._describe(lab) for lab in labels}
            null = dict(self.descriptions).get(None)
            if self.allow_null and null:
                out[None] = null
            return out
        return dict(self.descriptions)

    def _describe(self, label: str) -> str:
        """A channel description for a label given on the command line: its own words, or for
        `task` the direction it names ("German-to-Italian translation" -> "Translating words
        from German into Italian.")."""
        if self.name == "task" and (d := direction(label)):
            return translating(*d)
        return label.replace("_", " ")

    def ask(self, labels: tuple[str, ...] | None = None, paraphrased: bool = False) -> str:
        """The question for a label set (the built-in one by default), in either wording."""
        if labels and labels != self.labels and self.name == "reason":
            lead = ("Which of these categories best describes the harm this request would cause: "
                    if paraphrased else "If this instruction is harmful, which category of harm does it belong to? Categories: ")
            return lead + ", ".join(labels) + ". If it is not harmful, answer null."
        return (self.paraphrase or self.question) if paraphrased else self.question


# What harmless requests are about (the refusal prior's harmless topics, in one line): the
# channel labeller's "does not apply" class for reason, and its "harmless" class.
HARMLESS_TOPICS = "Everyday harmless topics such as cooking, fitness, study, writing, software, travel or gardening."


# The channel labeller's "does not apply" class for task (wording chosen on 48 ICL prompts:
# "something other than translating words" drew 8 of them, this 5; BENCHMARKS §5).
EVERYDAY_REQUESTS = "Everyday questions and instructions, such as cooking, fitness, study, writing, software, travel or gardening."


def translating(source: str, target: str) -> str:
    return f"Translating words from {source} into {target}."


def _category_list() -> str:
    return "; ".join(f"{k} ({v})" for k, v in REASON_CATEGORIES.items())


SPECS: dict[str, LLMFeatureSpec] = {
    "harmfulness": LLMFeatureSpec(
        "harmfulness",
        "Does this instruction ask for something harmful, dangerous, illegal or unethical? Answer harmful or harmless.",
        ("harmful", "harmless"), allow_null=False,
        paraphrase="Would carrying out this request cause harm or break the law or ethical norms? Answer harmful or harmless.",
        descriptions=(("harmful", "Something harmful, dangerous, illegal or unethical."), ("harmless", HARMLESS_TOPICS)),
    ),
    "reason": LLMFeatureSpec(
        "reason",
        "If this instruction is harmful, which category of harm does it belong to? Categories: " + _category_list()
        + ". If it is not harmful, answer null.",
        tuple(REASON_CATEGORIES), allow_null=True,
        paraphrase="Which of these categories best describes the harm this request would cause: " + _category_list()
        + "? If the request is harmless, answer null.",
        descriptions=tuple(REASON_CATEGORIES.items()) + ((None, HARMLESS_TOPICS),),
    ),
    "method": LLMFeatureSpec(
        "method",
        "If this instruction is harmful, by what method is the act to be carried out — the kind of output requested, "
        "as a short verb phrase such as 'write an email' or 'develop an algorithm'? If it is not harmful, answer null.",
        None, allow_null=True, normaliser="method",
        paraphrase="For a harmful request, what form does it ask the answer to take? Give a short verb phrase such as "
        "'create a tutorial' or 'write a blog post'. For a harmless request, answer null.",
    ),
    "task": LLMFeatureSpec(
        "task",
        "The examples in this prompt demonstrate a translation task. Which one? Answer in the form "
        "'Language_1-to-Language_2 translation', e.g. 'English-to-French translation'. If it is not a translation prompt, answer null.",
        None, allow_null=True, normaliser="task",
        paraphrase="From which language into which language do the examples in this prompt translate? Answer as "
        "'Language_1-to-Language_2 translation'. If the prompt is not about translation, answer null.",
        descriptions=tuple((task_label(a, b), translating(a, b)) for a, b in DIRECTIONS) + ((None, EVERYDAY_REQUESTS),),
    ),
}

# How the built-in reason list maps onto the categories people assigned in public sets,
# for agreement benchmarks (bench/agreement_bench.py). Many-to-one: the built-in list is
# finer than either set's. Human categories with no built-in counterpart (HarmBench
# `copyright`, StrongREJECT `Sexual content`) are left out of the comparison and counted.
REASON_TO_HUMAN: dict[str, dict[str, str]] = {
    "harmbench": {
        "cybercrime": "cybercrime_intrusion", "fraud": "illegal", "violence": "harmful", "weapons": "chemical_biological",
        "drugs": "illegal", "hate_harassment": "harassment_bullying", "misinformation": "misinformation_disinformation",
        "self_harm": "harmful", "privacy": "illegal", "theft": "illegal",
    },
    "strongreject": {
        "cybercrime": "Non-violent crimes", "fraud": "Non-violent crimes", "violence": "Violence",
        "weapons": "Illegal goods and services", "drugs": "Illegal goods and services",
        "hate_harassment": "Hate, harassment and discrimination", "misinformation": "Disinformation and deception",
        "self_harm": "Violence", "privacy": "Non-violent crimes", "theft": "Non-violent crimes",
    },
}
