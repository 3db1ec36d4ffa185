"""CenterHead: targets, Gaussians, circle NMS, task layout, and decode round-tripping the GT boxes."""

from __future__ import annotations

import math

import pytest
import torch

from simdistill.config import CLASS_NAMES, DEFAULT_TASKS, Config, load_config
from simdistill.errors import DataError
from simdistill.models.center_utils import (
    TaskLayout,
    circle_nms,
    draw_heatmap_gaussian,
    gaussian_radius,
)
from simdistill.models.head import CenterHead, HeadTargets, fg_mask


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config("bench")  # bench: 64x64 cells of 1.2 m over [-38.4, 38.4], the six CenterPoint tasks


def make_head(cfg: Config) -> CenterHead:
    return CenterHead(16, cfg.model.head, cfg.model.bev)


def perfect_prediction(targets: HeadTargets, n_tasks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmap logits +8 at Gaussian peaks, -8 elsewhere; box maps holding the targets at the GT cells."""
    heatmap = torch.where(targets.heatmap == 1, 8.0, -8.0)
    b, _, h, w = targets.heatmap.shape
    boxes = torch.zeros(b, n_tasks, 10, h * w)
    for i, t, k in targets.mask.nonzero().tolist():
        boxes[i, t, :, targets.indices[i, t, k]] = targets.box_targets[i, t, k]
    return heatmap, boxes.view(b, n_tasks, 10, h, w)


GT = torch.tensor([  # x, y, z, l, w, h, yaw, vx, vy
    [10.3, -5.2, -0.9, 4.6, 1.9, 1.7, 0.4, 3.0, -1.0],  # car
    [-20.7, 14.1, -0.4, 6.5, 2.5, 2.8, -2.9, 0.5, 0.2],  # truck
    [25.0, 25.3, -0.3, 6.0, 2.8, 3.0, 1.3, 0.0, 0.0],  # construction_vehicle (same task as truck, far away)
    [-3.3, -30.8, -1.3, 0.5, 2.5, 1.0, 3.1, 0.0, 0.0],  # barrier
    [0.6, 7.9, -0.9, 0.7, 0.7, 1.8, -1.2, 1.1, 0.4],  # pedestrian
    [60.0, 0.0, -1.0, 4.0, 2.0, 1.5, 0.0, 0.0, 0.0],  # car outside the grid: skipped
])
LABELS = torch.tensor([0, 1, 2, 5, 8, 0])


def test_decode_round_trips_gt_boxes(cfg: Config) -> None:
    head = make_head(cfg)
    second = GT[[3, 0]].clone()
    second[:, 0] += 1.0  # a second view, boxes moved
    targets = head.build_targets([GT, second], [LABELS, LABELS[[3, 0]]])
    assert targets.mask.sum().item() == 5 + 2
    heatmap, boxes = perfect_prediction(targets, len(DEFAULT_TASKS))
    dets = head.decode(heatmap, boxes)
    for det, gt, labels in zip(dets, [GT[:5], second], [LABELS[:5], LABELS[[3, 0]]]):
        assert len(det.scores) == len(gt)
        for box, label in zip(gt, labels):
            j = int((det.boxes[:, :2] - box[:2]).norm(dim=1).argmin())
            got = det.boxes[j]
            assert int(det.labels[j]) == int(label)
            torch.testing.assert_close(got[:2], box[:2], atol=1e-4, rtol=0)  # centre within 1e-4 m
            torch.testing.assert_close(got[2:6], box[2:6], atol=1e-5, rtol=1e-5)  # z, l, w, h
            assert abs(math.remainder(float(got[6] - box[6]), 2 * math.pi)) < 1e-5
            torch.testing.assert_close(got[7:9], box[7:9], atol=1e-5, rtol=0)


def test_build_targets_values(cfg: Config) -> None:
    head = make_head(cfg)
    box = torch.tensor([[10.3, -5.2, -0.9, 4.6, 1.9, 1.7, 0.4, 3.0, -1.0]])
    t = head.build_targets([box], [torch.tensor([0])])
    cx, cy = (10.3 + 38.4) / 1.2, (-5.2 + 38.4) / 1.2  # 40.583, 27.667 cells
    col, row = math.floor(cx), math.floor(cy)
    assert t.indices[0, 0, 0].item() == row * 64 + col and t.mask[0, 0].tolist()[:2] == [True, False]
    expected = torch.tensor([cx - col, cy - row, -0.9, math.log(4.6), math.log(1.9), math.log(1.7),
                             math.sin(0.4), math.cos(0.4), 3.0, -1.0])
    torch.testing.assert_close(t.box_targets[0, 0, 0], expected)
    assert t.heatmap[0, 0, row, col] == 1 and t.heatmap[0, 1:].abs().sum() == 0
    # l, w in cells (3.83, 1.58) give gaussian_radius ~1.03 -> int 1 -> min_radius 2: the Gaussian spans 5 cells.
    radius = max(cfg.model.head.min_radius, int(gaussian_radius((4.6 / 1.2, 1.9 / 1.2), 0.1)))
    assert radius == 2
    assert t.heatmap[0, 0, row, col + radius] > 0 and t.heatmap[0, 0, row, col + radius + 1] == 0
    torch.testing.assert_close(t.heatmap[0, 0, row, col + 1], torch.tensor(math.exp(-1 / (2 * (5 / 6) ** 2))))


def test_build_targets_rejects_bad_boxes(cfg: Config) -> None:
    head = make_head(cfg)
    bad = GT[:1].clone()
    bad[0, 4] = 0.0
    with pytest.raises(DataError, match="non-positive size"):
        head.build_targets([bad], [LABELS[:1]])


def test_max_objs_caps_each_task(cfg: Config) -> None:
    cfg2 = load_config("bench", ["model.head.max_objs=2"])
    head = make_head(cfg2)
    boxes = GT[[0, 0, 0]].clone()
    boxes[:, 0] = torch.tensor([-10.0, 0.0, 10.0])
    t = head.build_targets([boxes], [torch.zeros(3, dtype=torch.long)])
    assert t.indices.shape == (1, 6, 2) and t.mask[0, 0].tolist() == [True, True]
    assert t.heatmap[0, 0].eq(1).sum() == 2  # the third car got no slot and no peak


def test_gaussian_radius_hand_value() -> None:
    # 10 x 10 cells at overlap 0.1: r3 = (-4 + sqrt(16 + 4 * 0.4 * 90)) / 2 = (-4 + sqrt(160)) / 2
    assert gaussian_radius((10.0, 10.0), 0.1) == pytest.approx((-4 + math.sqrt(160)) / 2)
    assert float(gaussian_radius((torch.tensor(10.0), torch.tensor(10.0)), 0.1)) == pytest.approx(4.3245553)


def test_draw_heatmap_gaussian_max_merges_and_clips() -> None:
    hm = torch.zeros(6, 8)
    draw_heatmap_gaussian(hm, (0, 0), 2)  # corner: clipped
    assert hm[0, 0] == 1 and hm[0, 2] > 0 and hm[0, 3] == 0
    before = hm.clone()
    draw_heatmap_gaussian(hm, (1, 0), 2)
    torch.testing.assert_close(hm, torch.maximum(before, draw_heatmap_gaussian(torch.zeros(6, 8), (1, 0), 2)))
    sigma = 5 / 6
    torch.testing.assert_close(hm[1, 1], torch.tensor(math.exp(-1 / (2 * sigma**2))))


def test_circle_nms_hand_example() -> None:
    centers = torch.tensor([[0.0, 0.0], [0.5, 0.0], [3.0, 0.0], [3.2, 0.0], [10.0, 0.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95, 0.2])
    assert circle_nms(centers, scores, 1.0).tolist() == [3, 0, 4]
    assert circle_nms(centers, scores, 0.1).tolist() == [3, 0, 1, 2, 4]
    assert circle_nms(centers, scores, 1.0, max_keep=2).tolist() == [3, 0]
    # distance exactly at the radius is suppressed (mmdet3d's `dist <= thresh`, on squared distances)
    assert circle_nms(centers, scores, 0.5).tolist() == [3, 0, 4]
    assert circle_nms(torch.zeros(0, 2), torch.zeros(0), 1.0).numel() == 0


def test_decode_threshold_nms_and_limit(cfg: Config) -> None:
    head = make_head(cfg)
    heatmap = torch.full((1, 10, 64, 64), -8.0)
    boxes = torch.zeros(1, 6, 10, 64, 64)
    boxes[:, :, 7] = 1.0  # cos yaw
    heatmap[0, 0, 30, 30] = 3.0  # car
    heatmap[0, 0, 30, 31] = 2.0  # car 1.2 m away: suppressed by the car radius (2 m)
    heatmap[0, 0, 30, 32] = 1.5  # car 2.4 m away: outside the radius, kept
    heatmap[0, 8, 30, 31] = 1.0  # pedestrian at the suppressed car's cell: another task, kept
    heatmap[0, 3, 10, 10] = -3.0  # bus below the 0.1 score threshold
    det = head.decode(heatmap, boxes)[0]
    assert det.labels.tolist() == [0, 0, 8]
    torch.testing.assert_close(det.scores, torch.sigmoid(torch.tensor([3.0, 1.5, 1.0])))
    cfg1 = load_config("bench", ["model.head.max_detections=1"])
    assert CenterHead(16, cfg1.model.head, cfg1.model.bev).decode(heatmap, boxes)[0].labels.tolist() == [0]


def test_fg_mask_sums_all_classes(cfg: Config) -> None:
    head = make_head(cfg)
    boxes = torch.tensor([[0.0, 0.0, -1.0, 4.0, 2.0, 1.5, 0.0, 0.0, 0.0]] * 2)
    t = head.build_targets([boxes], [torch.tensor([0, 8])])  # car and pedestrian on the same cell
    mask = fg_mask(t)
    assert mask.shape == (1, 64, 64)
    torch.testing.assert_close(mask, t.heatmap.sum(1))
    torch.testing.assert_close(head.fg_mask(t), mask)
    assert mask.max() == 2.0


def test_task_layout_mapping() -> None:
    layout = TaskLayout(DEFAULT_TASKS)
    assert layout.channel_to_global() == list(range(10))  # default order == CLASS_NAMES
    for c in range(len(CLASS_NAMES)):
        assert layout.to_global(*layout.locate(c)) == c
    assert layout.locate(CLASS_NAMES.index("trailer")) == (2, 1) and layout.task_channels(2) == (3, 5)
    custom = TaskLayout(tuple(reversed(DEFAULT_TASKS)))
    assert custom.channel_to_global()[:2] == [8, 9] and custom.locate(0) == (5, 0)


def test_custom_task_order_targets_and_labels() -> None:
    tasks = ("[[pedestrian, traffic_cone], [motorcycle, bicycle], [barrier], [bus, trailer], "
             "[truck, construction_vehicle], [car]]")
    cfg = load_config("bench", [f"model.head.tasks={tasks}", "model.head.nms_radius=[1,1,1,1,1,1]"])
    head = make_head(cfg)
    t = head.build_targets([GT[:1]], [LABELS[:1]])  # a car: last task, last heatmap channel
    assert t.mask[0, 5, 0] and t.heatmap[0, 9].eq(1).sum() == 1
    heatmap, boxes = perfect_prediction(t, 6)
    assert head.decode(heatmap, boxes)[0].labels.tolist() == [0]
