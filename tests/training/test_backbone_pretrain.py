"""The backbone's 2D pretraining: projected boxes, CenterNet targets, the stage end to end, and loading the result."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_tiny_config
from simdistill.config import CLASS_NAMES
from simdistill.errors import CheckpointError, ConfigError
from simdistill.models.build import build_model_to_train
from simdistill.models.detector2d import boxes_in_images, build_targets_2d
from simdistill.models.pretrained import init_backbone
from simdistill.pipeline.sample import Batch
from simdistill.training.backbone_pretrain import pretrain_backbone


def _one_camera_batch(boxes: np.ndarray, *, crop: tuple[float, float] = (0.0, 0.0), scale: float = 1.0) -> Batch:
    """A camera looking along LiDAR +x (camera x right = LiDAR -y, camera y down = LiDAR -z), f = 100 px,
    principal point (64, 24), a 128 x 48 image; `scale` and `crop` form the image augmentation."""
    cam2lidar = torch.eye(4)
    cam2lidar[:3, :3] = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    k = torch.eye(4)
    k[0, 0] = k[1, 1] = 100.0
    k[0, 2], k[1, 2] = 64.0, 24.0
    aug = torch.eye(4)
    aug[0, 0] = aug[1, 1] = scale
    aug[0, 3], aug[1, 3] = -crop[0], -crop[1]
    return Batch(tokens=["t"], images=torch.zeros(1, 1, 3, 48, 128), cam_intrinsics=k[None, None],
                 camera2lidar=cam2lidar[None, None], img_aug_matrix=aug[None, None], lidar_aug_matrix=torch.eye(4)[None],
                 gt_boxes=[torch.as_tensor(boxes, dtype=torch.float32)], gt_labels=[torch.tensor([0] * len(boxes))])


def test_a_box_ahead_projects_to_the_rectangle_its_near_face_spans() -> None:
    # A 2 m cube 10 m ahead: its near face (depth 9 m) spans +-100 * 1 / 9 px around the principal point.
    batch = _one_camera_batch(np.array([[10.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.3, 0.0, 0.0]]))
    xyxy, labels = boxes_in_images(batch)[0][0]
    half = 100.0 / 9.0
    # the yaw turns the cube, widening its silhouette, but never its height at the near face
    assert xyxy.shape == (1, 4) and labels.tolist() == [0]
    assert xyxy[0, 1] == pytest.approx(24 - 100 * 1 / (10 - math.hypot(1, 1) * math.cos(math.pi / 4 - 0.3)), rel=0.05)
    assert xyxy[0, 0] < 64 - half + 1e-6 and xyxy[0, 2] > 64 + half - 1e-6
    # the image augmentation moves the box with the pixels: scale 2 and a crop of (10, 5)
    moved = boxes_in_images(_one_camera_batch(batch.gt_boxes[0].numpy(), crop=(10.0, 5.0), scale=2.0))[0][0][0]
    expected = np.clip(xyxy * 2 - np.array([10, 5, 10, 5]), 0, [128, 48, 128, 48])
    np.testing.assert_allclose(moved, expected, atol=1e-4)


def test_boxes_behind_the_camera_or_outside_the_image_are_dropped() -> None:
    boxes = np.array([[-10.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0],  # behind
                      [10.0, 40.0, 0.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0],  # far to the left, outside the image
                      [400.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0]])  # 0.1 px: smaller than min_size
    xyxy, _ = boxes_in_images(_one_camera_batch(boxes))[0][0]
    assert len(xyxy) == 0


def test_centernet_targets_peak_at_the_box_centre_with_its_size() -> None:
    batch = _one_camera_batch(np.array([[10.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0]]))
    targets = build_targets_2d(batch, len(CLASS_NAMES), stride=8)
    x0, y0, x1, y1 = boxes_in_images(batch)[0][0][0][0]
    assert targets.heatmap.shape == (1, len(CLASS_NAMES), 6, 16)
    row, col = divmod(int(targets.index[0]), 16)
    assert targets.heatmap[0, 0, row, col] == 1.0 and targets.heatmap[0, 1:].sum() == 0
    cx, cy = (x0 + x1) / 16, (y0 + y1) / 16
    assert (col, row) == (int(cx), int(cy))
    torch.testing.assert_close(targets.box[0], torch.tensor([cx - col, cy - row, math.log((x1 - x0) / 8),
                                                             math.log((y1 - y0) / 8)], dtype=torch.float32))


def test_pretraining_writes_a_backbone_every_model_can_start_from(tiny_world: Path, tmp_path: Path) -> None:
    cfg = make_tiny_config(tiny_world, ["pretrain.epochs=2", "pretrain.batch_size=1"])
    result = pretrain_backbone(cfg, out_dir=tmp_path / "pre", progress=False)
    assert result.finished and math.isfinite(result.last_terms["loss"])
    losses = [r["loss"] for r in map(json.loads, (tmp_path / "pre" / "train_log.jsonl").read_text()
                                     .splitlines())]
    assert losses[-1] < losses[0]  # it learns
    path = tmp_path / "pre" / "backbone.pt"
    hw = (cfg.augment.final_height, cfg.augment.final_width)
    cfg.model.backbone.pretrained = str(path)
    for kind in ("teacher", "baseline", "simdistill"):
        model = build_model_to_train(kind, cfg.model, hw)
        for name, tensor in result.model.backbone.state_dict().items():
            torch.testing.assert_close(model.backbone.state_dict()[name], tensor)
    cfg.model.backbone.pretrained = ""
    fresh = build_model_to_train("teacher", cfg.model, hw)
    assert not torch.equal(fresh.backbone.output[0].weight, result.model.backbone.output[0].weight)


def test_a_missing_or_mismatched_backbone_is_one_clear_error(tiny_world: Path, tmp_path: Path) -> None:
    cfg = make_tiny_config(tiny_world)
    model = build_model_to_train("baseline", cfg.model, (cfg.augment.final_height, cfg.augment.final_width))
    with pytest.raises(ConfigError, match="pretrain-backbone"):
        init_backbone(model, str(tmp_path / "nope.pt"))
    with pytest.raises(ConfigError, match="not shipped"):
        init_backbone(model, "builtin:no_such_backbone")
    wider = make_tiny_config(tiny_world, ["model.backbone.neck_channels=24"])
    other = build_model_to_train("baseline", wider.model, (cfg.augment.final_height, cfg.augment.final_width))
    from simdistill.models.pretrained import save_backbone

    save_backbone(other.backbone, wider.model.backbone, tmp_path / "wide.pt")
    with pytest.raises(CheckpointError, match="other sizes"):
        init_backbone(model, str(tmp_path / "wide.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a backbone file"):
        init_backbone(model, str(tmp_path / "junk.pt"))
