"""Render the judge's prompts from `prompts/*.j2`; Python passes typed data only."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from .sandbox import allowed_prompt_text


def prompts_dir() -> Path:
    env = os.environ.get("AUTOSCOPE_PROMPTS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "prompts"


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(prompts_dir())), undefined=jinja2.StrictUndefined,
                              trim_blocks=False, keep_trailing_newline=False, autoescape=False)


def render(name: str, **data: Any) -> str:
    """Render `prompts/<name>.j2` with `data` (missing variables are an error, not blanks)."""
    return _env().get_template(f"{name}.j2").render(sandbox_allowed=allowed_prompt_text(), **data).strip()


def messages(name: str, system: str | None = None, **data: Any) -> list[dict]:
    out = [{"role": "system", "content": system}] if system else []
    out.append({"role": "user", "content": render(name, **data)})
    return out
