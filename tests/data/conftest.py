"""The data tests' stores: export's plan over the tiny world with two augmented views per sample, random maps."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_tiny_config
from helpers.data_store import PlannedStore, write_planned_store

VIEWS_PER_SAMPLE = 2


@pytest.fixture(scope="session")
def planned(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> PlannedStore:
    """9 train samples × 2 augmented views, every view done (read-only: copy it to change it)."""
    cfg = make_tiny_config(tiny_world, [f"export.views_per_sample={VIEWS_PER_SAMPLE}"])
    url = str(tmp_path_factory.mktemp("planned") / "planned.zarr")
    return PlannedStore(url, cfg, write_planned_store(url, cfg))
