"""The explore run directory is the log: append-only JSON lines written as things
happen, so a killed run resumes and `report` renders from the directory alone."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any


class RunLog:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def append(self, name: str, record: dict[str, Any]) -> None:
        line = json.dumps({"t": time.time(), **record}, default=str)
        with self._lock, (self.root / f"{name}.jsonl").open("a") as f:
            f.write(line + "\n")
            f.flush()

    def read(self, name: str) -> list[dict]:
        p = self.root / f"{name}.jsonl"
        if not p.exists():
            return []
        out = []
        for line in p.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill: ignore it
        return out

    def write_json(self, name: str, obj: Any) -> None:
        p = self.root / name
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(obj, indent=1, default=str))
        tmp.replace(p)

    def read_json(self, name: str) -> Any:
        p = self.root / name
        return json.loads(p.read_text()) if p.exists() else None
