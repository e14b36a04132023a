"""What a feature is: a named map from prompts to discrete labels (None = undefined).

Features are batched (`__call__(texts) -> labels`) because learned and LLM-labelled
features are much cheaper per batch. A feature that raises is reported by name with
the input that broke it (`FeatureError`), so a bad hypothesis never ends a run silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from scope_core.api import AutoscopeError

Label = str | None


class FeatureError(AutoscopeError):
    """A feature function failed on an input."""


@dataclass
class Feature:
    name: str
    description: str
    fn: Callable[[list[str]], list[Label]]
    kind: Literal["python", "llm", "learned"] = "python"
    info: dict = field(default_factory=dict)  # e.g. held-out accuracy of a learned feature

    def __call__(self, texts: Sequence[str]) -> list[Label]:
        texts = list(texts)
        try:
            out = self.fn(texts)
        except FeatureError:
            raise
        except Exception as e:
            raise FeatureError(
                f"feature {self.name!r} raised {e.__class__.__name__}: {e} — fix the feature or choose another"
            ) from None
        if len(out) != len(texts):
            raise FeatureError(f"feature {self.name!r} returned {len(out)} labels for {len(texts)} inputs")
        return [None if v is None else str(v) for v in out]


def per_text(fn: Callable[[str], object]) -> Callable[[list[str]], list[Label]]:
    """Lift a one-text function to a batch function, naming the input that breaks it."""

    def batch(texts: list[str]) -> list[Label]:
        out: list[Label] = []
        for t in texts:
            try:
                v = fn(t)
            except Exception as e:
                raise FeatureError(f"{fn.__name__} raised {e.__class__.__name__}: {e} on input {t[:80]!r}") from None
            out.append(None if v is None else str(v))
        return out

    batch.__name__ = getattr(fn, "__name__", "feature")
    return batch
