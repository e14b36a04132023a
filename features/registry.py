"""Built-in features, looked up by name for a run.

| name | task | kind | definition |
|---|---|---|---|
| harmfulness | refusal | learned | harmful / harmless (classifier fitted on the prior's labels) |
| reason | refusal | learned | harm category (features.learned; undefined when harmless) |
| method | refusal | python | leading verb phrase, normalised (features.method) |
| method_any | any | python | the same, defined on harmless prompts too |
| subject, object | ioi | python | the repeated / the single name |
| task, input | icl | python | translation direction / the query word |
| length_bucket | any | python | number of words, in buckets of 5 (a control feature) |
| first_word | any | python | first word, lower-cased (a control feature) |
"""

from __future__ import annotations

from pathlib import Path

from scope_core.api import AutoscopeError, RunData

from .base import Feature, per_text
from .learned import learned_feature
from .method import method_of

DESCRIPTIONS = {
    "harmfulness": "whether the instruction asks for something harmful (harmful/harmless)",
    "reason": "the category of harm (undefined for harmless prompts)",
    "method": "how the act is to be carried out, e.g. 'write email' (undefined for harmless prompts)",
    "method_any": "the leading verb phrase, normalised, on any prompt",
    "subject": "IOI: the name that appears twice",
    "object": "IOI: the name that appears once (the indirect object)",
    "task": "ICL: the translation direction shown in the demonstrations",
    "input": "ICL: the word after the last 'Input:'",
    "length_bucket": "number of words in buckets of five",
    "first_word": "the first word, lower-cased",
}


def _length_bucket(text: str) -> str:
    n = len(text.split())
    return f"{5 * (n // 5)}-{5 * (n // 5) + 4}"


def _first_word(text: str) -> str | None:
    w = text.strip().split()
    return w[0].lower().strip(".,!?:;") if w else None


def user_feature(spec: str) -> Feature:
    """`module:function` — a user's own feature function, one prompt -> label or None."""
    import importlib
    import sys

    module_name, _, fn_name = spec.partition(":")
    if "" not in sys.path:
        sys.path.insert(0, "")  # let users point at a module in the working directory
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise AutoscopeError(f"cannot import feature module {module_name!r}: {e.__class__.__name__}: {e}") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise AutoscopeError(f"{module_name} has no function {fn_name!r}; pass module:function")
    return Feature(name=fn_name, description=(fn.__doc__ or fn_name).strip().splitlines()[0], fn=per_text(fn))


def builtin_names() -> list[str]:
    return list(DESCRIPTIONS)


def get_feature(name: str, run_dir: Path | None = None, data: RunData | None = None) -> Feature:
    """A built-in feature by name; learned ones are fitted on (and cached in) the run."""
    if ":" in name:
        return user_feature(name)
    if name not in DESCRIPTIONS:
        raise AutoscopeError(
            f"unknown feature {name!r}; built-in features: {', '.join(DESCRIPTIONS)}; "
            "or pass module:function for your own (a function from one prompt to a label or None)"
        )
    desc = DESCRIPTIONS[name]
    if name in ("harmfulness", "reason", "method"):
        if data is None or run_dir is None:
            raise AutoscopeError(f"feature {name!r} needs a trained run (its prompts and labels)")
        cache_dir = Path(run_dir) / "features"
        harm = learned_feature("harmfulness", DESCRIPTIONS["harmfulness"], data, cache_dir)
        if name == "harmfulness":
            return harm
        if name == "reason":
            return learned_feature("reason", desc, data, cache_dir, gate=harm)
        methods = per_text(method_of)

        def gated(texts: list[str]) -> list[str | None]:
            h = harm(texts)
            return [m if hv == "harmful" else None for m, hv in zip(methods(texts), h)]

        return Feature(name="method", description=desc, fn=gated, kind="python", info={"gate": "harmfulness"})
    if name == "method_any":
        return Feature(name=name, description=desc, fn=per_text(method_of))
    if name in ("subject", "object"):
        from scope_core.api import object_of, subject_of

        return Feature(name=name, description=desc, fn=per_text(subject_of if name == "subject" else object_of))
    if name in ("task", "input"):
        from scope_core.api import input_of, task_of

        return Feature(name=name, description=desc, fn=per_text(task_of if name == "task" else input_of))
    if name == "length_bucket":
        return Feature(name=name, description=desc, fn=per_text(_length_bucket))
    return Feature(name=name, description=desc, fn=per_text(_first_word))
