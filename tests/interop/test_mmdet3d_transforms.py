"""LoadCachedTeacherTargets without mmdet3d: on an mmdet3d-style results dict it produces the images, matrices,
points and boxes of our own replay of the stored view, and attaches that view's targets."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_config
from helpers.data_store import planned_views, write_planned_store

from simdistill.config import CAMERA_NAMES
from simdistill.data import CachedTeacherDataset
from simdistill.errors import DataError
from simdistill.interop.mmdet3d_transforms import LoadCachedTeacherTargets
from simdistill.pipeline.augment import normalize_image


@pytest.fixture(scope="module")
def store(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory):
    cfg = make_tiny_config(tiny_world, ["export.views_per_sample=2"])
    url = str(tmp_path_factory.mktemp("transforms") / "s.zarr")
    write_planned_store(url, cfg)
    return url, planned_views(cfg)[0].source


def _results(source, index: int) -> dict:
    """What mmdet3d 1.x's BEVFusion loading leaves for a sample: raw float32 RGB images (cameras by name, here in
    reversed order), raw LiDAR points and boxes."""
    sample = source.load(index)
    order = list(reversed(range(len(CAMERA_NAMES))))
    return {"token": sample.token, "images": {CAMERA_NAMES[i]: {} for i in order},
            "img": [sample.images[i].astype(np.float32) for i in order],
            "points": np.concatenate(sample.sweeps), "gt_bboxes_3d": sample.gt_boxes.copy(),
            "gt_labels_3d": sample.gt_labels}, order


def test_transform_equals_our_replay_of_the_stored_view(store) -> None:
    url, source = store
    transform = LoadCachedTeacherTargets(url, arrays=["heatmap", "cam_bev"], view=1)
    ours = CachedTeacherDataset(url, arrays=["heatmap", "cam_bev"], points=True)
    for index in (0, 5):
        results, order = _results(source, index)
        out = transform(results)
        want = ours[2 * index + 1]
        assert out["teacher_view"] == 2 * index + 1
        for name in ("heatmap", "cam_bev"):
            assert torch.equal(out["teacher_targets"][name], want.targets[name])
        assert len(out["img"]) == 6 and out["img"][0].dtype == np.float32 and out["img"][0].shape == (48, 128, 3)
        for k, cam in enumerate(order):  # images within float rounding of the normalisation, matrices exact
            np.testing.assert_allclose(normalize_image(out["img"][k]), want.images[cam].numpy(), atol=1e-5)
            np.testing.assert_array_equal(out["img_aug_matrix"][k], want.img_aug_matrix[cam].numpy())
        np.testing.assert_array_equal(out["lidar_aug_matrix"], want.lidar_aug_matrix.numpy())
        np.testing.assert_allclose(out["points"], want.points.numpy(), atol=1e-5)
        np.testing.assert_allclose(out["gt_bboxes_3d"], want.gt_boxes.numpy(), atol=1e-5)
        assert len(want.gt_boxes) > 0


def test_random_views_come_from_numpys_generator(store) -> None:
    url, source = store
    transform = LoadCachedTeacherTargets(url, arrays=["heatmap"])
    np.random.seed(0)
    chosen = {transform(_results(source, 3)[0])["teacher_view"] for _ in range(12)}
    assert chosen == {6, 7}


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r.pop("token"), "needs results['token']"),
    (lambda r: r.update(img_aug_matrix=[np.eye(4)] * 6), "already augmented"),
    (lambda r: r.update(images={"CAM_LEFT": {}}), "the store's views have the six cameras"),
])
def test_bad_results_are_one_error_line(store, change, message: str) -> None:
    url, source = store
    results, _ = _results(source, 0)
    change(results)
    with pytest.raises(DataError, match=re.escape(message)):
        LoadCachedTeacherTargets(url, arrays=["heatmap"], view=0)(results)
