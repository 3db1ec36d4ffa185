"""LoadCachedTeacherTargets inside mmdet3d 1.4: built from a config dict by the TRANSFORMS registry, it moves
mmdet3d's own box and point objects as our replay moves ours (tests/interop/test_mmdet3d_transforms.py checks the
images and matrices without mmdet3d)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

# Skipped where the mmdet3d extra is not installed (mmdet3d.structures also needs mmcv's compiled ops).
pytest.importorskip("mmdet3d.structures")

from conftest import make_tiny_config
from helpers.data_store import planned_views, write_planned_store
from mmdet3d.registry import TRANSFORMS
from mmdet3d.structures import LiDARInstance3DBoxes, LiDARPoints

from simdistill.interop.mmdet3d_transforms import LoadCachedTeacherTargets


def test_registry_builds_it_and_it_moves_mmdet3d_boxes_and_points(tiny_world: Path, tmp_path: Path) -> None:
    cfg = make_tiny_config(tiny_world, ["export.views_per_sample=2"])
    url = str(tmp_path / "s.zarr")
    plan = write_planned_store(url, cfg)
    transform = TRANSFORMS.build(dict(type="LoadCachedTeacherTargets", store=url, arrays=["heatmap"], view=1))
    assert isinstance(transform, LoadCachedTeacherTargets)

    builder, _ = planned_views(cfg)
    index = max(range(len(builder.source)), key=lambda i: len(builder.source.load(i).gt_boxes))
    sample = builder.source.load(index)
    results = {"token": sample.token,
               "gt_bboxes_3d": LiDARInstance3DBoxes(sample.gt_boxes.copy(), box_dim=9, origin=(0.5, 0.5, 0.5)),
               "points": LiDARPoints(np.concatenate(sample.sweeps), points_dim=5)}
    out = transform(results)
    want = builder.build(index, plan.params[2 * index + 1])  # our replay of the same stored view
    boxes = out["gt_bboxes_3d"]
    assert isinstance(boxes, LiDARInstance3DBoxes) and isinstance(out["points"], LiDARPoints)
    assert len(want.gt_boxes) > 0 and out["teacher_view"] == 2 * index + 1
    np.testing.assert_allclose(boxes.gravity_center.numpy(), want.gt_boxes[:, :3], atol=1e-4)
    np.testing.assert_allclose(boxes.dims.numpy(), want.gt_boxes[:, 3:6], atol=1e-4)
    np.testing.assert_allclose(boxes.tensor[:, 7:9].numpy(), want.gt_boxes[:, 7:9], atol=1e-4)
    yaw_error = np.angle(np.exp(1j * (boxes.yaw.numpy() - want.gt_boxes[:, 6])))  # equal modulo 2π
    np.testing.assert_allclose(yaw_error, 0.0, atol=1e-4)
    np.testing.assert_allclose(out["points"].tensor.numpy(), want.points, atol=1e-4)
