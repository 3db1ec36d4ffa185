"""Rebuilding a store's data source from its attributes: another machine's dataroot, and the dataroots refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers.data_store import PlannedStore, write_planned_store

from simdistill.data import CachedTeacherDataset, recorded_view_builder
from simdistill.errors import DataError
from simdistill.feature_store import open_store


def test_another_machines_dataroot_replays_the_same_views(planned: PlannedStore, tmp_path: Path) -> None:
    elsewhere = tmp_path / "mnt" / "nuscenes"
    shutil.copytree(planned.cfg.data.dataroot, elsewhere)
    builder = recorded_view_builder(open_store(planned.url).attrs, planned.url, dataroot=elsewhere)
    assert builder.source.dataroot == elsewhere.resolve()
    here = CachedTeacherDataset(planned.url, arrays=["heatmap"])
    there = CachedTeacherDataset(planned.url, arrays=["heatmap"], dataroot=elsewhere)
    for v in (2, 13):
        assert torch.equal(here[v].images, there[v].images) and torch.equal(here[v].gt_boxes, there[v].gt_boxes)


def _lacks_one_image(planned: PlannedStore, tmp_path: Path) -> Path:
    root = tmp_path / "partial"
    shutil.copytree(planned.cfg.data.dataroot, root)
    next((root / "samples" / "CAM_BACK").iterdir()).unlink()
    return root


@pytest.mark.parametrize(("dataroot", "message"), [
    (lambda p, t: t / "nowhere", "does not exist"),
    (lambda p, t: t, "version folder 'v1.0-mini' not found"),
    (_lacks_one_image, "1 input file(s) of store"),
])
def test_a_dataroot_without_the_data_is_one_error_line(planned: PlannedStore, tmp_path: Path, dataroot,
                                                       message: str) -> None:
    with pytest.raises(DataError) as info:
        CachedTeacherDataset(planned.url, arrays=["heatmap"], dataroot=dataroot(planned, tmp_path))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_dataroot_with_other_samples_is_refused(planned: PlannedStore, tmp_path: Path) -> None:
    url = str(tmp_path / "other.zarr")
    tokens = list(reversed(CachedTeacherDataset(planned.url, arrays=[], inputs=False).sample_tokens))
    write_planned_store(url, planned.cfg, tokens=tokens, done=0)
    with pytest.raises(DataError, match=r"holds other samples than store .* \(9 samples of split 'mini_train' "
                                        r"there, 9 in the store, 1 in the same place\)"):
        recorded_view_builder(open_store(url).attrs, url)
