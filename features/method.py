"""The `method` feature: how a request is to be carried out ("write an email",
"develop an algorithm"), normalised so that equal methods compare equal.

Normalisation (`normalise_method`): lower-case; the verb mapped to a canonical synonym
(compose/draft/pen → write; make/produce/generate/craft/come up with → create;
build/code/program → develop; provide/offer → give; outline/detail/describe → explain);
determiners, numbers and modifiers dropped; the head noun singularised. So "Draft a
persuasive speech", "Write speeches" and "compose a short speech" are all "write speech".
"""

from __future__ import annotations

import re

VERB_SYNONYMS = {
    "compose": "write", "draft": "write", "pen": "write", "author": "write", "writing": "write", "wrote": "write",
    "make": "create", "produce": "create", "generate": "create", "craft": "create", "creating": "create", "come": "create",
    "build": "develop", "code": "develop", "program": "develop", "implement": "develop", "developing": "develop",
    "provide": "give", "offer": "give", "giving": "give",
    "outline": "explain", "detail": "explain", "describe": "explain", "teach": "explain", "show": "explain",
    "list": "list", "suggest": "suggest", "recommend": "suggest", "propose": "suggest",
    "design": "design", "plan": "plan", "tell": "explain",
}
SKIP = {
    "a", "an", "the", "some", "one", "two", "three", "four", "five", "few", "several", "short", "long", "brief",
    "detailed", "persuasive", "convincing", "mass", "quick", "simple", "step-by-step", "up", "with", "me", "us",
    "python", "mobile", "fake", "beginner's", "beginners", "complete", "comprehensive", "viral", "funny", "catchy",
}
BOUNDARY = {
    "that", "to", "for", "on", "about", "explaining", "which", "how", "in", "with", "encouraging", "where", "of",
    "promoting", "describing", "telling", "asking", "inviting", "who", "urging", "arguing", "and", "or", "so",
    "showing", "detailing", "teaching", "convincing", "recommending", "without", "by", "from", "at", "into", "is",
}
_WORD = re.compile(r"[a-z][a-z'\-]*")


def singular(noun: str) -> str:
    if noun.endswith("ies") and len(noun) > 4:
        return noun[:-3] + "y"
    if noun.endswith(("sses", "xes", "ches", "shes")):
        return noun[:-2]
    if noun.endswith("s") and not noun.endswith(("ss", "us", "is")) and len(noun) > 3:
        return noun[:-1]
    return noun


def normalise_method(phrase: str) -> str | None:
    """Canonical 'verb noun' (or 'verb') form of a method phrase; None if it has no words."""
    words = _WORD.findall(phrase.lower())
    if not words:
        return None
    if words[0] in ("please", "can", "could", "would", "you", "i", "now"):
        words = [w for w in words if w not in ("please", "can", "could", "would", "you", "i", "now")]
        if not words:
            return None
    verb = VERB_SYNONYMS.get(words[0], words[0])
    rest = words[1:]
    if words[0] == "come" and rest[:1] == ["up"]:
        rest = rest[2:] if rest[1:2] == ["with"] else rest[1:]
    noun = None
    for w in rest[:5]:
        if w in BOUNDARY:
            break
        if w in SKIP or w.isdigit():
            continue
        noun = w
    return f"{verb} {singular(noun)}" if noun else verb


def method_of(text: str) -> str | None:
    """The method of an instruction: its leading verb phrase, normalised."""
    first_clause = re.split(r"[.!?:;\n]", text.strip(), maxsplit=1)[0]
    return normalise_method(first_clause)
