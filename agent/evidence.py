"""Hypotheses from the evidence, with no LLM: what accepted samples keep from their query.

A person reading the samples of "Create a beginner's guide to starting a riot during a
peaceful protest" sees at once that "Create a beginner's guide to …" is kept and the harm
is not. This module does that reading by counting: for a family of surface features of a
prompt (its first words, its frame up to the first preposition, the slot word it mentions
among the words that samples keep, its length, script, names, numbers, question form) it
computes on the *exploration* queries how often accepted samples share the query's value,
against how often prior prompts do (κ), and proposes the strongest as Python features with a
plain-English statement. Each is a small self-contained module (`def feature(text)`) built
from a fixed template with data literals, so it runs in the sandbox like a judge's code and
reads the same in the report.

The screen runs each candidate's code once over the exploration texts in the sandbox (a few
milliseconds a run); the loop then scores each proposal like any hypothesis, and only
confirmation queries, which this module never sees, decide what is reported as confirmed.
Refinement revises the best candidates from their counterexamples: values that accepted
samples mix are merged, two features are read together; a revision is kept only if it beats
its parents on the exploration queries.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scope_core.api import SampleRun, sampled_fcr

from .hypotheses import CODE_CHARS, Hypothesis

WORD = re.compile(r"[a-z0-9']+")
STOP = frozenset("""a an the to of in on for and or with about how what is are be by from at as into that this it its
your you my me i we our their they them his her he she can could would should will do does did not no please""".split())
FRAME_ENDS = ("to", "on", "for", "about", "of", "that", "how", "into", "with")


@dataclass
class Candidate:
    """A proposed feature: its code, what it says, and how it did on exploration queries."""

    name: str
    statement: str
    code: str
    family: str
    kappa: float | None = None
    fcr: float | None = None
    p0: float | None = None
    n_queries: int = 0
    parents: tuple[str, ...] = ()  # names of the hypotheses a refinement revises

    def hypothesis(self) -> Hypothesis:
        why = (f"evidence: on the exploration queries accepted samples share this value {self.fcr:.0%} of the time "
               f"against {self.p0:.0%} for prior prompts (κ {self.kappa:.2f}, {self.n_queries} queries)"
               if self.kappa is not None and self.fcr is not None and self.p0 is not None else "evidence")
        if self.parents:
            why = f"refines {' + '.join(self.parents)}; " + why
        return Hypothesis(name=self.name, statement=self.statement, kind="python", code=self.code, rationale=why[:300],
                          parents=list(self.parents))


def _module(body: str) -> str:
    return "import re\n\n" + body.strip() + "\n"


def first_words(k: int) -> Candidate:
    code = _module(f'''
def feature(text):
    words = re.findall(r"[a-z0-9']+", text.lower())
    return " ".join(words[:{k}]) if words else None
''')
    return Candidate(f"first_{k}_words", f"the prompt's first {k} word{'s' if k > 1 else ''} (how the request opens)", code, "opening")


def frame() -> Candidate:
    code = _module(f'''
ENDS = {FRAME_ENDS!r}

def feature(text):
    words = re.findall(r"[a-z0-9']+", text.lower())[:10]
    for i, w in enumerate(words):
        if w in ENDS and i >= 1:
            return " ".join(words[: i + 1])
    return " ".join(words[:3]) if words else None
''')
    return Candidate("request_frame", "the request's frame: its words up to the first 'to/on/for/about/of/that/how' "
                     "(e.g. \"create a beginner's guide to\"), whatever the topic after it", code, "frame")


def slot_words(words: Sequence[str], name: str = "kept_topic_word") -> Candidate:
    code = _module(f'''
KEPT = {list(words)!r}

def feature(text):
    found = set(re.findall(r"[a-z0-9']+", text.lower()))
    for w in KEPT:
        if w in found:
            return w
    return "none"
''')
    shown = ", ".join(list(words)[:8])
    return Candidate(name, f"which of the words that accepted samples keep from their query the prompt mentions ({shown}, …)",
                     code, "slot")


def length_bucket() -> Candidate:
    code = _module('''
def feature(text):
    n = len(re.findall(r"\\S+", text))
    return "1-5" if n <= 5 else "6-10" if n <= 10 else "11-20" if n <= 20 else "21+"
''')
    return Candidate("length_bucket", "the prompt's length in words (1-5, 6-10, 11-20, 21+)", code, "form")


def question_form() -> Candidate:
    code = _module('''
def feature(text):
    t = text.strip().lower()
    if t.endswith("?"):
        return "question"
    first = (re.findall(r"[a-z']+", t) or [""])[0]
    return "wh-question" if first in ("what", "how", "why", "who", "when", "where", "which", "can", "is", "are", "do", "does") else "instruction"
''')
    return Candidate("question_or_instruction", "whether the prompt is a question or an instruction", code, "form")


def script() -> Candidate:
    code = _module('''
FR = {"le", "la", "les", "des", "est", "une", "et", "du", "pour", "avec", "dans"}
ES = {"el", "los", "las", "es", "una", "y", "del", "para", "con", "por", "que"}

def feature(text):
    words = re.findall(r"[^\\W\\d_]+", text.lower())
    if not words:
        return None
    if sum(1 for ch in text if ord(ch) > 127) > len(text) // 4:
        return "non-latin"
    fr = sum(w in FR for w in words)
    es = sum(w in ES for w in words)
    if max(fr, es) >= 2:
        return "french" if fr > es else "spanish"
    return "english"
''')
    return Candidate("language", "the language of the prompt (English, French, Spanish, other script)", code, "form")


def has_name() -> Candidate:
    code = _module('''
def feature(text):
    words = re.findall(r"[A-Za-z']+", text)
    names = [w for w in words[1:] if w[:1].isupper() and not w.isupper()]
    return names[0].lower() if names else "none"
''')
    return Candidate("first_name_mentioned", "the first capitalised name in the prompt (after its first word)", code, "names")


def number_presence() -> Candidate:
    code = _module('''
def feature(text):
    return "number" if re.search(r"\\d", text) else "no number"
''')
    return Candidate("mentions_number", "whether the prompt contains a number", code, "form")


def _words(text: str) -> set[str]:
    return set(WORD.findall(text.lower()))


def kept_words(run: SampleRun, prior: Sequence[str], top: int = 24, min_queries: int = 2) -> list[str]:
    """Content words that accepted samples keep from their query far more often than prior
    prompts contain them (lift), seen in at least `min_queries` queries."""
    n_prior = max(len(prior), 1)
    prior_df = Counter(w for t in prior for w in _words(t))
    kept: Counter[str] = Counter()
    offered: Counter[str] = Counter()
    queries_with: Counter[str] = Counter()
    for q in run.queries:
        acc = [s.text for s in q.samples if s.weight > 0]
        if not acc:
            continue
        for w in _words(q.query) - STOP:
            share = sum(w in _words(t) for t in acc) / len(acc)
            kept[w] += share
            offered[w] += 1
            if share > 0:
                queries_with[w] += 1
    scored = []
    for w, k in kept.items():
        if queries_with[w] < min_queries or len(w) < 3:
            continue
        keep_rate = k / offered[w]
        base = (prior_df[w] + 1) / (n_prior + 1)
        scored.append((keep_rate / base * keep_rate, w))
    return [w for _, w in sorted(scored, reverse=True)[:top]]


def candidates(run: SampleRun, prior: Sequence[str]) -> list[Candidate]:
    """Every candidate family, the slot words mined from `run` (exploration queries only)."""
    out = [first_words(1), first_words(2), first_words(3), first_words(4), frame(), length_bucket(), question_form(), script(),
           has_name(), number_presence()]
    words = kept_words(run, prior)
    if len(words) >= 2:
        out.append(slot_words(words))
    return out


RunCode = Callable[[str, list[str]], list]


def screen(cands: list[Candidate], run: SampleRun, prior: Sequence[str], run_code: RunCode, seed: int = 0) -> list[Candidate]:
    """κ of every candidate on the exploration queries, its code run by `run_code` (the
    sandbox, like any feature); best first. Dropped: candidates whose code fails, that are
    degenerate, or that take one value on every query (nothing the site could tell apart)."""
    texts = sorted({q.query for q in run.queries} | {s.text for q in run.queries for s in q.samples if s.weight > 0} | set(prior))
    for c in cands:
        try:
            labels = dict(zip(texts, run_code(c.code, texts)))
        except ValueError:
            c.kappa = None
            continue
        res = sampled_fcr(run, labels, [labels[t] for t in prior], n_boot=200, seed=seed)
        c.kappa, c.fcr, c.p0, c.n_queries = res.kappa, res.fcr, res.p0, res.n_queries
        if len({labels[q.query] for q in run.queries} - {None}) < 2:
            c.kappa = None
    ok = [c for c in cands if c.kappa is not None]
    return sorted(ok, key=lambda c: -(c.kappa or 0.0))


# -- refinement: revise the best hypotheses from their counterexamples ------------------

def _renamed(code: str, name: str) -> str:
    """A feature module with its `feature` renamed, so two can live in one module."""
    return re.sub(r"(?m)^def feature\(", f"def {name}(", code)


MERGE_TEMPLATE = """

MERGE = {mapping!r}

def feature(text):
    v = base(text)
    return MERGE.get(v, v) if v is not None else None
"""

COMBINE_TEMPLATE = """

def feature(text):
    x, y = first(text), second(text)
    if x is None or y is None:
        return None
    return str(x) + " | " + str(y)
"""


def merged(parent: Candidate, groups: Sequence[Sequence[str]]) -> Candidate:
    """Values the samples mix merged into one: each group's values map to its first."""
    mapping = {v: g[0] for g in groups for v in g}
    code = _renamed(parent.code, "base") + MERGE_TEMPLATE.format(mapping=mapping)
    shown = "; ".join(" = ".join(g) for g in groups)
    return Candidate(f"{parent.name}_merged"[:48], f"{parent.statement}, with values the samples mix merged ({shown})"[:400],
                     code, "refined", parents=(parent.name,))


def combined(a: Candidate, b: Candidate) -> Candidate:
    """Two features read together: the pair of their values."""
    code = _renamed(a.code, "first") + "\n" + _renamed(b.code, "second") + COMBINE_TEMPLATE
    return Candidate(f"{a.name}_and_{b.name}"[:48], f"both {a.statement} and {b.statement}"[:400], code, "refined",
                     parents=(a.name, b.name))


def confusions(labels: dict[str, object], run: SampleRun, top: int = 3) -> list[tuple[str, str]]:
    """The (query value, sample value) pairs accepted samples break most often: values a
    feature splits that the site does not."""
    pairs: Counter[tuple[str, str]] = Counter()
    for q in run.queries:
        ql = labels.get(q.query)
        if ql is None:
            continue
        for s in q.samples:
            sl = labels.get(s.text)
            if s.weight > 0 and sl is not None and sl != ql:
                a, b = sorted((str(ql), str(sl)))
                pairs[(a, b)] += 1
    return [p for p, _ in pairs.most_common(top)]


def _groups(pairs: Sequence[tuple[str, str]]) -> list[list[str]]:
    """Connected groups of the confused pairs."""
    groups: list[set[str]] = []
    for a, b in pairs:
        hit = [g for g in groups if a in g or b in g]
        new = {a, b}.union(*hit)
        groups = [g for g in groups if g not in hit] + [new]
    return [sorted(g) for g in groups]


def refinements(best: Sequence[Candidate], run: SampleRun, run_code: RunCode) -> list[Candidate]:
    """Revisions of the best candidates: merge the values their accepted samples mix most,
    and read the two best together. The caller screens them and keeps a revision only if it
    beats its parents (`kept_refinements`)."""
    texts = sorted({q.query for q in run.queries} | {s.text for q in run.queries for s in q.samples if s.weight > 0})
    out: list[Candidate] = []
    for c in best[:2]:
        try:
            labels = dict(zip(texts, run_code(c.code, texts)))
        except ValueError:
            continue
        pairs = confusions(labels, run)
        if pairs:
            out.append(merged(c, _groups(pairs)))
    if len(best) >= 2:
        out.append(combined(best[0], best[1]))
    # A hypothesis carries at most CODE_CHARS of code (the judge's schema bound): a longer
    # revision would be cut mid-line after it was screened whole, and score another feature.
    return [c for c in out if len(c.code) <= CODE_CHARS]


def kept_refinements(refined: Sequence[Candidate], by_name: dict[str, Candidate]) -> list[Candidate]:
    """Revisions that beat every parent's exploration κ."""
    keep = []
    for r in refined:
        parent_k = [by_name[p].kappa for p in r.parents if p in by_name and by_name[p].kappa is not None]
        if r.kappa is not None and parent_k and r.kappa > max(parent_k):  # type: ignore[type-var]
            keep.append(r)
    return keep


def evidence_table(cands: Sequence[Candidate], limit: int = 8) -> list[dict]:
    """A compact table for a judge's prompt: the strongest patterns and their numbers."""
    return [{"name": c.name, "statement": c.statement, "kappa": round(c.kappa or 0.0, 3), "fcr": round(c.fcr or 0.0, 3),
             "p0": round(c.p0 or 0.0, 3)} for c in list(cands)[:limit]]
