"""Reading JSON-lines files that people write (`--data` priors, audit sets): one place that
skips blank lines and names the line that is not JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from .errors import AutoscopeError


def json_lines(path: Path, hint: str = "", error: type[AutoscopeError] = AutoscopeError) -> Iterator[tuple[int, object]]:
    """(line number, parsed object) for each non-blank line; a line that is not JSON raises
    `error` naming the file and line, followed by `hint` (what the line should hold)."""
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield i, json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{path} line {i}: not valid JSON ({e.msg})" + (f"; {hint}" if hint else "")) from None
