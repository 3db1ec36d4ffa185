"""Helpers shared by test modules (fixtures live in conftest.py): what a failed command printed."""

from __future__ import annotations

import re

PROGRESS_LINE = re.compile(r"^\[[\w-]+\] ")  # `[export] 4/18 views`, `[simdistill] step 3/16 ...`


def one_error_line(stderr: str) -> str:
    """The single `error:` line a failed command printed, asserting there is nothing else (no traceback, no log; the
    progress lines of an export or a training run aside)."""
    lines = [line for line in stderr.splitlines() if line.strip() and not PROGRESS_LINE.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    return lines[0]
