"""Creating and resuming a store: refused for another teacher, config or dataset; reopened in a worker with its own
settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers.store import N_VIEWS, P, SHA, make_attrs, store_args, tiny_cfg, write_store

from simdistill.config import Config
from simdistill.errors import StoreError
from simdistill.feature_store import (
    compact_boxes,
    create_or_resume_store,
    create_store,
    open_for_resume,
    open_for_write,
    open_store,
)
from simdistill.feature_store.schema import SCHEMA


def test_resume_refuses_other_teacher_config_or_dataset(tmp_path: Path, cfg: Config) -> None:
    url = str(tmp_path / "s.zarr")
    write_store(url, cfg, views=2)
    with pytest.raises(StoreError, match=f"teacher.checkpoint_sha256 was '{SHA}', now '{'b' * 64}'"):
        open_for_resume(url, attrs=make_attrs(cfg, sha="b" * 64))
    flipped = tiny_cfg("augment.rand_flip=false")
    with pytest.raises(StoreError, match="augment.rand_flip was True, now False"):
        open_for_resume(url, attrs=make_attrs(cfg, config=flipped))
    with pytest.raises(StoreError, match="dataset.sample_tokens"):
        open_for_resume(url, attrs=make_attrs(cfg, tokens=["x", "y", "z"]))
    # settings and provenance that do not change the contents may differ
    moved = make_attrs(cfg, config=tiny_cfg("export.workers=7", "student_train.lr=0.1"))
    moved.teacher["checkpoint"], moved.dataset["dataroot"] = "/elsewhere/teacher.pt", "/elsewhere/data"
    writer = open_for_resume(url, attrs=moved)
    assert np.flatnonzero(~writer.done_views()).tolist() == [2, 3, 4, 5]
    with pytest.raises(StoreError, match="already exists .* pass --overwrite"):
        create_store(url, **store_args(cfg), n_views=N_VIEWS, aug_dim=P, attrs=make_attrs(cfg))
    # what export-teacher calls: resume when compatible, refuse otherwise, replace with overwrite
    writer = create_or_resume_store(url, **store_args(cfg), n_views=N_VIEWS, aug_dim=P, attrs=moved)
    assert np.flatnonzero(~writer.done_views()).tolist() == [2, 3, 4, 5]
    with pytest.raises(StoreError, match="augment.rand_flip was True, now False.*--overwrite"):
        create_or_resume_store(url, **store_args(flipped), n_views=N_VIEWS, aug_dim=P, attrs=make_attrs(flipped))
    writer = create_or_resume_store(
        url, **store_args(flipped), n_views=N_VIEWS, aug_dim=P, attrs=make_attrs(flipped), overwrite=True
    )
    assert not writer.done_views().any()
    fresh = create_or_resume_store(str(tmp_path / "new.zarr"), **store_args(cfg), n_views=N_VIEWS, aug_dim=P,
                                   attrs=moved)
    assert np.flatnonzero(~fresh.done_views()).tolist() == list(range(N_VIEWS))


def test_open_for_write_uses_the_stores_own_config_and_reports_bytes(tmp_path: Path) -> None:
    cfg = tiny_cfg("store_format.compact_boxes=false")
    url = str(tmp_path / "s.zarr")
    tvs = write_store(url, cfg, views=0)
    writer = open_for_write(url)  # what an export task in a worker process does: no config at hand
    assert writer.store_format.compact_boxes is False and writer.n_views == N_VIEWS
    nbytes = writer.write_view(3, tvs[3])
    view3_files = [
        f for f in Path(url).rglob("*") if f.is_file() and f.relative_to(url).parts[1:3] == ("c", "3")
    ]
    assert {f.relative_to(url).parts[0] for f in view3_files} == set(SCHEMA)
    assert nbytes == sum(f.stat().st_size for f in view3_files if f.relative_to(url).parts[0] != "done") > 0
    got = open_store(url).read_view(3, ["boxes"])["boxes"]
    np.testing.assert_array_equal(got, tvs[3].boxes.astype(np.float16).astype(np.float32))
    with pytest.raises(StoreError, match="no feature store at"):
        open_for_write(str(tmp_path / "missing.zarr"))
