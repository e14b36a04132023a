"""The `task` feature: which translation an in-context prompt demonstrates, as
"Language_1-to-Language_2 translation", normalised so that equal tasks compare equal.

Normalisation (`normalise_task`): the source and target languages are read from the answer —
"from X into Y", "X to Y", "X-to-Y", "X → Y", or else the first two languages it names, in
order (languages from `LANGUAGES`; an unlisted one is read only in the "X-to-Y" form) — and
written back as "X-to-Y translation" with the languages capitalised. So
"spanish to english", "Spanish-to-English translation" and "Translation from Spanish into
English." are all "Spanish-to-English translation". An answer that names no direction is not
a label: in particular the answer format's own placeholder ("Language_1-to-Language_2
translation"), which a small judge tends to copy (BENCHMARKS §5), is reported as such
(`task_problem`) rather than counted as a task.
"""

from __future__ import annotations

import re

from scope_core.api import task_label

LANGUAGES = (
    "English", "French", "Spanish", "German", "Italian", "Portuguese", "Dutch", "Swedish", "Norwegian", "Danish",
    "Finnish", "Polish", "Czech", "Slovak", "Hungarian", "Romanian", "Bulgarian", "Greek", "Russian", "Ukrainian",
    "Serbian", "Croatian", "Turkish", "Arabic", "Hebrew", "Persian", "Hindi", "Urdu", "Bengali", "Tamil", "Chinese",
    "Mandarin", "Cantonese", "Japanese", "Korean", "Vietnamese", "Thai", "Indonesian", "Malay", "Swahili", "Latin",
    "Catalan", "Basque", "Irish", "Welsh", "Icelandic", "Estonian", "Latvian", "Lithuanian", "Tagalog",
)
_BY_LOWER = {lang.lower(): lang for lang in LANGUAGES}
_PLACEHOLDER = re.compile(r"language[\s_-]*[12xy]\b|\blang[\s_-]*[12]\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z]+|→|->|=>")
_TO = {"to", "into", "→", "->", "=>"}
_GENERIC = {"language", "languages", "languagea", "languageb", "lang", "source", "target", "input", "output", "some", "any", "one", "another"}
_PAIR = re.compile(r"\b([A-Za-z]{3,})-to-([A-Za-z]{3,})\b")  # "X-to-Y" names a direction even for an unlisted language


def task_problem(answer: str) -> str | None:
    """Why `answer` is not a task label (None if `normalise_task` reads one from it)."""
    if normalise_task(answer) is not None:
        return None
    if _PLACEHOLDER.search(answer) or (m := _PAIR.search(answer)) and {m.group(1).lower(), m.group(2).lower()} & _GENERIC:
        return f"the judge repeated the answer format's placeholder ({answer!r}) instead of naming the languages"
    return f"answer {answer!r} names no translation direction (a source and a target language)"


def normalise_task(answer: str) -> str | None:
    """'spanish to english' -> 'Spanish-to-English translation'; None when the answer names
    no direction (fewer than two different languages, or a placeholder of the answer format)."""
    d = direction(answer)
    return task_label(*d) if d else None


def direction(answer: str) -> tuple[str, str] | None:
    """(source, target) languages the answer names, capitalised; None if it names no direction."""
    words = _WORD.findall(answer.replace("-to-", " to "))
    found = [(i, _BY_LOWER[w.lower()]) for i, w in enumerate(words) if w.lower() in _BY_LOWER]
    source = next((lang for i, lang in found if i > 0 and words[i - 1].lower() == "from"), None)
    target = next((lang for i, lang in found if i > 0 and words[i - 1].lower() in _TO), None)
    rest = [lang for lang in dict.fromkeys(lang for _, lang in found) if lang not in (source, target)]
    source = source or (rest.pop(0) if rest else None)
    target = target or (rest.pop(0) if rest else None)
    if source and target and source != target:
        return source, target
    m = _PAIR.search(answer)
    if m and not {m.group(1).lower(), m.group(2).lower()} & _GENERIC and not _PLACEHOLDER.search(m.group(0)):
        a, b = m.group(1).capitalize(), m.group(2).capitalize()
        if a != b:
            return a, b
    return None
