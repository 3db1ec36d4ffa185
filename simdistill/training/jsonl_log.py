"""The run's JSON-lines log: one record per step, the same keys for teacher and students."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class JsonlLog:
    """Append-only JSONL log; on resume, lines past the resumed step are dropped so the log stays exact."""

    def __init__(self, path: Path, *, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [
                line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
