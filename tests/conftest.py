"""Shared fixtures: a tiny synthetic nuScenes world (generated once per test session) and tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from simdistill.config import resolve_config

torch.set_num_threads(2)

ROOT = Path(__file__).resolve().parent.parent
TINY_CONFIG = resolve_config("tiny")  # tiny sizes, shared with the benchmarks' --smoke modes


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
    """The tiny config pointed at a tiny world."""
    return [
        f"data.dataroot={world}",
        "data.version=v1.0-mini",
        "data.train_split=mini_train",
        "data.val_split=mini_val",
    ]


@pytest.fixture()
def tiny_config(tiny_world: Path):
    """The tiny config pointed at the tiny world (a fresh object per test)."""
    from simdistill.config import load_config

    return load_config(TINY_CONFIG, tiny_overrides(tiny_world))


@pytest.fixture()
def cfg():
    """The store tests' tiny config: a 12 x 16 BEV grid with 4 / 6 / 5 channels (helpers.store.tiny_cfg)."""
    from helpers.store import tiny_cfg

    return tiny_cfg()


def make_tiny_config(world: Path, extra: list[str] | None = None):
    from simdistill.config import load_config

    return load_config(TINY_CONFIG, tiny_overrides(world) + list(extra or []))


@pytest.fixture(scope="session")
def tiny_teacher(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher checkpoint trained for a few steps on the tiny world (no evaluation)."""
    from simdistill.teacher.trainer import train_teacher

    out = tmp_path_factory.mktemp("teacher")
    return train_teacher(make_tiny_config(tiny_world), out_dir=out, progress=False).checkpoint


@pytest.fixture(scope="session")
def tiny_store(tiny_world: Path, tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny teacher exported over the tiny train split (one test-time view per sample)."""
    from simdistill.teacher_export.export import export_teacher

    out = str(tmp_path_factory.mktemp("store") / "teacher.zarr")
    export_teacher(make_tiny_config(tiny_world), checkpoint=tiny_teacher, out=out, progress=False)
    return out


# ---------------------------------------------------------------------------------------------------
# Object storage and Dask's own cluster commands on 127.0.0.1 (tests/servers.py)

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")  # botocore must never look for a cloud's metadata server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """moto's S3 server on 127.0.0.1, started once per session and stopped at its end."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    from servers import start_s3_server, stop

    server = start_s3_server(tmp_path_factory.mktemp("moto"))
    yield server
    stop(server.proc)


@pytest.fixture()
def s3_bucket(s3_server, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    """A fresh bucket on the test S3 server, as `s3://NAME`; credentials and endpoint in the environment."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    import s3fs

    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:50].strip("-")
    s3fs.S3FileSystem.clear_instance_cache()  # cached clients keep the endpoint they were made with
    yield "s3://" + s3_server.make_bucket(name)
    s3fs.S3FileSystem.clear_instance_cache()


RESUME_EXTRA = ["export.views_per_sample=2", "export.views_per_task=2"]
"""The export the kill-and-resume tests on S3 and on a Dask cluster interrupt (18 views, 9 tasks)."""


@pytest.fixture(scope="session")
def resume_reference(tiny_world: Path, tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An uninterrupted local export with RESUME_EXTRA: what every interrupted-and-resumed store must equal."""
    from simdistill.teacher_export.export import export_teacher

    out = str(tmp_path_factory.mktemp("reference") / "reference.zarr")
    export_teacher(make_tiny_config(tiny_world, RESUME_EXTRA), checkpoint=tiny_teacher, out=out, progress=False)
    return out


def assert_same_views(got_url: str, want_url: str) -> None:
    """Every array of every view of two stores is bit-identical (and both are complete)."""
    from simdistill.feature_store import open_store

    got, want = open_store(got_url), open_store(want_url)
    assert got.done_views().all() and want.done_views().all()
    assert got.n_views == want.n_views
    names = [n for n in want.available if n != "done"]
    views = list(range(want.n_views))
    a, b = got.read_views(views, names), want.read_views(views, names)
    for name in names:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def cli_args(world: Path, extra: list[str] | None = None) -> list[str]:
    """`--config tiny --set ...` pointed at `world`, plus `extra` overrides."""
    args = ["--config", str(TINY_CONFIG)]
    for o in tiny_overrides(world) + list(extra or []):
        args += ["--set", o]
    return args


def done_count(url: str) -> int:
    """Views marked done in the store at `url` (0 while it does not exist yet)."""
    from simdistill.errors import StoreError
    from simdistill.feature_store import open_store

    try:
        return int(open_store(url).done_views().sum())
    except StoreError:
        return 0
