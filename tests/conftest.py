"""Shared fixtures: a tiny synthetic nuScenes world (generated once per test session) and tiny configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

ROOT = Path(__file__).resolve().parent.parent
TINY_CONFIG = ROOT / "configs" / "tiny.yaml"  # tiny sizes, shared with the benchmarks' --smoke modes


def _tiny_world_settings() -> dict:
    from simdistill.config import config_to_dict, load_config

    return config_to_dict(load_config(TINY_CONFIG).world)


TINY_WORLD = _tiny_world_settings()  # 4 scenes (3 mini_train + 1 mini_val) x 3 key frames, 12 objects per scene


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-scene v1.0-mini synthetic dataroot (3 train scenes' worth of mini_train names + mini_val)."""
    from simdistill.config import WorldConfig
    from simdistill.pipeline.synthetic import make_demo_data

    root = tmp_path_factory.mktemp("world") / "nuscenes"
    make_demo_data(root, WorldConfig(**TINY_WORLD), progress=False)
    return root


def tiny_overrides(world: Path) -> list[str]:
    """configs/tiny.yaml pointed at a tiny world."""
    return [
        f"data.dataroot={world}",
        "data.version=v1.0-mini",
        "data.train_split=mini_train",
        "data.val_split=mini_val",
    ]


@pytest.fixture()
def tiny_config(tiny_world: Path):
    """configs/tiny.yaml pointed at the tiny world (a fresh object per test)."""
    from simdistill.config import load_config

    return load_config(TINY_CONFIG, tiny_overrides(tiny_world))


def make_tiny_config(world: Path, extra: list[str] | None = None):
    from simdistill.config import load_config

    return load_config(TINY_CONFIG, tiny_overrides(world) + list(extra or []))


@pytest.fixture(scope="session")
def tiny_teacher(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher checkpoint trained for a few steps on the tiny world (no evaluation)."""
    from simdistill.training.teacher_trainer import train_teacher

    out = tmp_path_factory.mktemp("teacher")
    return train_teacher(make_tiny_config(tiny_world), out_dir=out, progress=False).checkpoint


@pytest.fixture(scope="session")
def tiny_store(tiny_world: Path, tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny teacher exported over the tiny train split (one test-time view per sample)."""
    from simdistill.teacher_export.export import export_teacher

    out = str(tmp_path_factory.mktemp("store") / "teacher.zarr")
    export_teacher(make_tiny_config(tiny_world), checkpoint=tiny_teacher, out=out, progress=False)
    return out
