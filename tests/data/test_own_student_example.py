"""examples/own_student.py: a student written with plain torch learns from a store `export-teacher` wrote, through
`simdistill.data` only, with DataLoader workers."""

from __future__ import annotations

import ast
import importlib.util
import math
from pathlib import Path

from conftest import ROOT

EXAMPLE = ROOT / "examples" / "own_student.py"


def _example():
    spec = importlib.util.spec_from_file_location("own_student", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_imports_only_simdistill_data_and_stays_short() -> None:
    tree = ast.parse(EXAMPLE.read_text())
    used = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module} | \
        {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    assert {m for m in used if m.startswith("simdistill")} == {"simdistill.data"}
    assert len(EXAMPLE.read_text().splitlines()) <= 150


def test_own_student_learns_from_the_store(tiny_store: str, tiny_world: Path) -> None:
    example = _example()
    args = example.parse_args(["--store", tiny_store, "--dataroot", str(tiny_world), "--steps", "8",
                               "--channels", "8", "--lr", "5e-3", "--workers", "2"])
    history = example.train(args)
    assert len(history) == 8
    assert all(math.isfinite(v) for step in history for v in step.values())
    assert all(step["feat"] > 0 and step["heat"] > 0 for step in history)  # the distillation terms act
    first, last = (sum(s["loss"] for s in part) / 3 for part in (history[:3], history[-3:]))
    assert last < 0.95 * first, (first, last)
