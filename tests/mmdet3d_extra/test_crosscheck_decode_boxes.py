"""simdistill's CenterHead decoding, circle NMS and box geometry against mmdet3d 1.4's, on random data.

Run with the mmdet3d venv: `.venv-mm/bin/python -m pytest tests/mmdet3d/test_crosscheck_decode_boxes.py`.
Agreements asserted here, all on fixed seeds:
- decode + circle NMS: `CenterHead.decode` returns the same set of (label, score, box) as mmdet3d's
  `predict_by_feat` (nms_type='circle'), once mmdet3d's bottom-centre z is moved to the gravity centre.
- circle_nms: the same kept indices, in the same order, with our radius r == mmdet3d's thresh r**2.
- boxes: our (x, y, z gravity centre, l, w, h, yaw ccw from LiDAR x) is mmdet3d's LiDARInstance3DBoxes
  with origin (0.5, 0.5, 0.5): same corners (as sets; the corner ORDER differs), gravity centre, BEV box;
  transform_boxes equals LiDARInstance3DBoxes.rotate / scale / translate / flip, and our
  lidar_aug_matrix equals BEVFusion's rotate -> translate -> scale -> flip sequence; our nuScenes
  conversion (boxes_to_lidar) gives mmdet3d's converter convention (yaw_pitch_roll[0] in the LiDAR frame,
  wlh -> lwh).
Deliberate differences:
- Equal scores in circle NMS: ours keeps the earlier input (stable sort); mmdet3d's reversed numpy argsort
  keeps the later one. Ours is deterministic by input order; continuous scores never tie in practice.
- Truncation: mmdet3d caps each task at post_max_size after NMS and concatenates tasks unsorted; we cap the
  merged list at max_detections after sorting by score. With caps larger than the counts they agree.
- Corner order: ours is bottom face then top face, counter-clockwise from front-left; mmdet3d's is
  (x0y0z0, x0y0z1, x0y1z1, x0y1z0, x1y0z0, ...). The permutation between them is fixed (asserted).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

# Skipped where the mmdet3d extra is not installed (mmdet3d.structures also needs mmcv's compiled ops).
pytest.importorskip("mmdet3d.structures")

from helpers.mmdet3d_heads import (
    GRID_H,
    GRID_W,
    mm_preds,
    mmdet3d_center_head,
    our_head,
)
from mmdet3d.models.layers import circle_nms as mm_circle_nms
from mmdet3d.structures import LiDARInstance3DBoxes
from nuscenes.utils.data_classes import Box
from pyquaternion import Quaternion

from simdistill.config import CLASS_NAMES, HeadConfig
from simdistill.models.center_utils import circle_nms
from simdistill.pipeline.augment import AugParams, lidar_aug_matrix
from simdistill.pipeline.geometry import (
    box_corners,
    pose_matrix,
    rot_z,
    transform_boxes,
    wrap_angle,
)
from simdistill.pipeline.nuscenes_files import boxes_to_lidar

# ------------------------------------------------------------------------------------------------- decoding


def random_logits(gen: torch.Generator, n_cls: int, *, dense: bool) -> torch.Tensor:
    """[1, n_cls, H, W] logits with all values distinct (no score ties).

    dense: most cells above the 0.1 score threshold (the top-k cap binds); sparse: a few hundred peaks
    among low scores (the score threshold binds).
    """
    n = n_cls * GRID_H * GRID_W
    ranks = torch.randperm(n, generator=gen).double() / n  # distinct values in [0, 1)
    if dense:
        logits = -6.0 + 9.0 * ranks
    else:
        logits = -12.0 + 8.0 * ranks  # sigmoid <= 0.018 everywhere...
        peaks = torch.randperm(n, generator=gen)[:300]
        logits[peaks] = -3.0 + 7.0 * ranks[peaks]  # ...except at 300 peaks, some of them above the threshold
    return logits.float().view(1, n_cls, GRID_H, GRID_W)


def decode_both(head_cfg: HeadConfig, heatmap: torch.Tensor, boxes: torch.Tensor):
    """(ours [N, 11], theirs [N, 11]) rows = (label, score, x, y, z_gravity, l, w, h, yaw, vx, vy), by score."""
    det = our_head(head_cfg).decode(heatmap, boxes)[0]
    ours = torch.cat([det.labels[:, None].double(), det.scores[:, None].double(), det.boxes.double()], 1)
    mm = mmdet3d_center_head(head_cfg).predict_by_feat(
        mm_preds(heatmap, boxes, head_cfg), [dict(box_type_3d=LiDARInstance3DBoxes)])[0]
    order_names = [c for task in head_cfg.tasks for c in task]
    mm_labels = torch.tensor([CLASS_NAMES.index(order_names[int(c)]) for c in mm.labels_3d], dtype=torch.float64)
    mm_boxes = mm.bboxes_3d.tensor.double().clone()
    mm_boxes[:, 2] = mm.bboxes_3d.gravity_center[:, 2].double()  # mmdet3d returns the bottom centre
    theirs = torch.cat([mm_labels[:, None], mm.scores_3d[:, None].double(), mm_boxes], 1)
    return ours, theirs[torch.sort(theirs[:, 1], descending=True).indices]


@pytest.mark.parametrize("dense", [False, True])
def test_decode_with_circle_nms_equals_mmdet3d(dense: bool) -> None:
    # pre_max_size 200 keeps mmdet3d's pure-Python circle NMS fast; caps above any count (no truncation)
    head_cfg = HeadConfig(pre_max_size=200, max_detections=2000)
    gen = torch.Generator().manual_seed(7 + dense)
    n_cls, n_tasks = len(CLASS_NAMES), len(head_cfg.tasks)
    layout = our_head(head_cfg).layout
    kept, candidates, capped = 0, 0, 0
    for case in range(4):
        heatmap = random_logits(gen, n_cls, dense=dense)
        boxes = torch.randn(1, n_tasks, 10, GRID_H, GRID_W, generator=gen)  # [1, T, 10, H, W]
        boxes[:, :, 0:2] = torch.rand(1, n_tasks, 2, GRID_H, GRID_W, generator=gen)  # offsets in [0, 1) cells
        ours, theirs = decode_both(head_cfg, heatmap, boxes)
        assert ours.shape == theirs.shape, f"case {case}: {len(ours)} vs {len(theirs)} detections"
        assert torch.equal(ours[:, :2], theirs[:, :2]), f"case {case}: labels/scores differ"
        torch.testing.assert_close(ours[:, 2:8], theirs[:, 2:8], atol=2e-5, rtol=1e-6)
        yaw_diff = torch.remainder(ours[:, 8] - theirs[:, 8] + math.pi, 2 * math.pi) - math.pi
        assert yaw_diff.abs().max() < 1e-5
        torch.testing.assert_close(ours[:, 9:], theirs[:, 9:])
        for t in range(n_tasks):  # boxes entering NMS: top-k, then the score threshold
            start, stop = layout.task_channels(t)
            above = int((torch.sigmoid(heatmap[0, start:stop]) > head_cfg.score_threshold).sum())
            candidates += min(above, head_cfg.pre_max_size)
            capped += above > head_cfg.pre_max_size
        kept += len(ours)
    assert kept > 100 and candidates - kept > 100  # NMS really suppressed
    assert capped == (4 * n_tasks if dense else 0)  # dense: the top-k cap binds in every task; sparse: never


def test_circle_nms_equals_mmdet3d_on_random_point_sets() -> None:
    rng = np.random.default_rng(8)
    total_kept, total_points = 0, 0
    for case in range(400):
        n = int(rng.integers(0, 60))
        scores = rng.permutation(n).astype(np.float32) / max(n, 1) + rng.uniform(0.0, 0.5 / max(n, 1))  # distinct
        if case % 4 == 3:  # integer lattice and integer radius: many distances exactly AT the radius (suppressed)
            centers = rng.integers(-4, 5, (n, 2)).astype(np.float32)
            radius = float(rng.integers(1, 4))
        else:
            centers = rng.uniform(-10.0, 10.0, (n, 2)).astype(np.float32)
            radius = float(rng.uniform(0.1, 5.0))
        ours = circle_nms(torch.from_numpy(centers), torch.from_numpy(scores), radius).tolist()
        dets = np.concatenate([centers, scores[:, None]], axis=1)
        theirs = [int(i) for i in mm_circle_nms(dets, radius**2, post_max_size=1000)]
        assert ours == theirs, f"case {case}"
        total_kept, total_points = total_kept + len(ours), total_points + n
    assert 0.2 * total_points < total_kept < 0.9 * total_points  # the radii suppress some, not all


def test_circle_nms_ties_keep_input_order() -> None:
    """Deliberate: with equal scores we keep the earlier box, mmdet3d the later one."""
    centers = np.array([[0.0, 0.0], [0.5, 0.0]], dtype=np.float32)
    scores = np.array([0.7, 0.7], dtype=np.float32)
    assert circle_nms(torch.from_numpy(centers), torch.from_numpy(scores), 1.0).tolist() == [0]
    assert [int(i) for i in mm_circle_nms(np.concatenate([centers, scores[:, None]], 1), 1.0)] == [1]


# ------------------------------------------------------------------------------------------------- box frames

F32_ATOL = 2e-5  # mmdet3d boxes are float32; coordinates here stay within +-60 m (float32 spacing 4e-6 m)


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    """[n, 9] float64 gravity-centre boxes."""
    return np.stack([
        rng.uniform(-50, 50, n), rng.uniform(-50, 50, n), rng.uniform(-3, 3, n),
        rng.uniform(0.2, 12, n), rng.uniform(0.2, 4, n), rng.uniform(0.3, 4, n),
        rng.uniform(-math.pi, math.pi, n), rng.normal(0, 5, n), rng.normal(0, 5, n),
    ], axis=1)  # fmt: skip


def mm_boxes(boxes: np.ndarray) -> LiDARInstance3DBoxes:
    return LiDARInstance3DBoxes(torch.from_numpy(boxes.copy()), box_dim=9, origin=(0.5, 0.5, 0.5))


def corner_permutation(ours: np.ndarray, theirs: np.ndarray, *, atol: float = F32_ATOL) -> list[int]:
    """perm with ours[:, perm] == theirs for EVERY box (asserted): the corner sets are equal, in a fixed order."""
    d = np.linalg.norm(ours[:, :, None] - theirs[:, None], axis=-1)  # [M, 8 ours, 8 theirs]
    perm = d[0].argmin(axis=0).tolist()
    assert sorted(perm) == list(range(8))
    np.testing.assert_allclose(ours[:, perm], theirs, atol=atol, rtol=0)
    return perm


def assert_same_boxes(ours: np.ndarray, theirs: LiDARInstance3DBoxes) -> None:
    """Our [M, 9] gravity-centre boxes vs mmdet3d boxes: centre, size, yaw (mod 2 pi), velocity, corners."""
    t = theirs.tensor.double().numpy()
    np.testing.assert_allclose(ours[:, :3], theirs.gravity_center.double().numpy(), atol=F32_ATOL, rtol=0)
    np.testing.assert_allclose(ours[:, 3:6], t[:, 3:6], atol=0, rtol=1e-6)
    np.testing.assert_allclose(wrap_angle(ours[:, 6] - t[:, 6]), 0.0, atol=1e-6)
    np.testing.assert_allclose(ours[:, 7:9], t[:, 7:9], atol=F32_ATOL, rtol=0)
    corner_permutation(box_corners(ours), theirs.corners.numpy())


def test_box_convention_equals_lidar_instance_boxes() -> None:
    boxes = random_boxes(np.random.default_rng(9), 300)
    mm = mm_boxes(boxes)
    np.testing.assert_allclose(mm.gravity_center.numpy(), boxes[:, :3], atol=F32_ATOL, rtol=0)
    np.testing.assert_allclose(mm.bottom_center.numpy()[:, 2], boxes[:, 2] - boxes[:, 5] / 2, atol=F32_ATOL, rtol=0)
    np.testing.assert_allclose(mm.bev.numpy(), boxes[:, [0, 1, 3, 4, 6]], atol=F32_ATOL, rtol=0)
    perm = corner_permutation(box_corners(boxes), mm.corners.numpy())
    assert perm == [2, 6, 5, 1, 3, 7, 4, 0]  # ours[:, perm] == mmdet3d's corner order
    # yaw = 0: l along +x; yaw = pi/2: l along +y (counter-clockwise from LiDAR x) in both conventions
    quarter = np.array([[0, 0, 0, 4.0, 2.0, 1.0, math.pi / 2, 0, 0]])
    assert np.ptp(box_corners(quarter)[0, :, 1]) == pytest.approx(4.0)
    assert np.ptp(mm_boxes(quarter).corners.numpy()[0, :, 1]) == pytest.approx(4.0)


def test_transform_boxes_equals_mmdet3d_rotate_scale_translate_flip() -> None:
    rng = np.random.default_rng(10)
    for case in range(40):
        boxes = random_boxes(rng, 50)
        angle, scale = float(rng.uniform(-math.pi, math.pi)), float(rng.uniform(0.8, 1.2))
        shift = rng.normal(0.0, 2.0, 3)
        translate = np.eye(4)
        translate[:3, 3] = shift
        rotate = np.eye(4)
        rotate[:3, :3] = rot_z(angle)
        ops = [  # (our 4x4 matrix, the same operation on mmdet3d boxes as (method, argument))
            (rotate, "rotate", angle),
            (np.diag([scale, scale, scale, 1.0]), "scale", scale),
            (translate, "translate", torch.from_numpy(shift)),
            (np.diag([1.0, -1.0, 1.0, 1.0]), "flip", "horizontal"),  # negate y
            (np.diag([-1.0, 1.0, 1.0, 1.0]), "flip", "vertical"),  # negate x
        ]
        for matrix, method, arg in ops:
            theirs = mm_boxes(boxes)
            getattr(theirs, method)(arg)
            assert_same_boxes(transform_boxes(boxes, matrix), theirs)


def test_lidar_aug_matrix_equals_bevfusion_sequence_on_mmdet3d_boxes() -> None:
    """Our BEV augmentation p' = F (s (R p + t)) == BEVFusion's rotate, translate, scale, flip on mmdet3d boxes."""
    rng = np.random.default_rng(11)
    for case in range(40):
        params = AugParams(cams=(), bev_rot=float(rng.uniform(-0.4, 0.4)), bev_scale=float(rng.uniform(0.9, 1.1)),
                           bev_tx=float(rng.normal(0, 1)), bev_ty=float(rng.normal(0, 1)), bev_tz=float(rng.normal(0, 1)),
                           bev_flip_x=bool(case % 2), bev_flip_y=bool(case // 2 % 2))
        boxes = random_boxes(rng, 30)
        theirs = mm_boxes(boxes)
        theirs.rotate(params.bev_rot)
        theirs.translate(torch.tensor([params.bev_tx, params.bev_ty, params.bev_tz], dtype=torch.float64))
        theirs.scale(params.bev_scale)
        if params.bev_flip_y:
            theirs.flip("horizontal")
        if params.bev_flip_x:
            theirs.flip("vertical")
        assert_same_boxes(transform_boxes(boxes, lidar_aug_matrix(params)), theirs)


def test_nuscenes_conversion_follows_mmdet3d_converter() -> None:
    """boxes_to_lidar == mmdet3d's converter: devkit Box moved into the LiDAR frame, yaw_pitch_roll[0], wlh -> lwh."""
    rng = np.random.default_rng(12)
    n = 200
    translation = np.c_[rng.uniform(-50, 50, (n, 2)), rng.uniform(-2, 2, n)] + [410.0, 1180.0, 0.0]  # near the ego
    size_wlh = np.c_[rng.uniform(0.2, 4, n), rng.uniform(0.2, 12, n), rng.uniform(0.3, 4, n)]
    yaws = rng.uniform(-math.pi, math.pi, n)
    rotation = np.stack([list(Quaternion(axis=[0, 0, 1], angle=a)) for a in yaws])  # (w, x, y, z)
    velocity = np.c_[rng.normal(0, 5, (n, 2)), np.zeros(n)]
    # a LiDAR pose in the world: ego pose times lidar2ego, both rotations about z (as nuScenes, up to ~0.5 deg)
    lidar2global = pose_matrix([410.0, 1180.0, 1.8], list(Quaternion(axis=[0, 0, 1], angle=2.1))) @ pose_matrix(
        [0.94, 0.0, 1.84], list(Quaternion(axis=[0, 0, 1], angle=-1.5708)))
    global2lidar = np.linalg.inv(lidar2global)
    ours = boxes_to_lidar(translation, size_wlh, rotation, velocity, global2lidar)  # [n, 9]
    mm_rows, devkit_corners = [], []
    for i in range(n):
        box = Box(translation[i], size_wlh[i], Quaternion(rotation[i]))
        box.rotate(Quaternion(matrix=global2lidar[:3, :3]))  # global -> LiDAR as nusc.get_sample_data, in one step
        box.translate(global2lidar[:3, 3])
        # mmdet3d 1.4 tools/dataset_converters/nuscenes_converter.py: locs, dims[:, [1, 0, 2]], yaw_pitch_roll[0]
        mm_rows.append([*box.center, *box.wlh[[1, 0, 2]], box.orientation.yaw_pitch_roll[0]])
        devkit_corners.append(box.corners().T)  # [8, 3]
    mm = np.asarray(mm_rows)
    np.testing.assert_allclose(ours[:, :6], mm[:, :6], atol=1e-9)
    np.testing.assert_allclose(wrap_angle(ours[:, 6] - mm[:, 6]), 0.0, atol=1e-9)
    corner_permutation(box_corners(ours), np.asarray(devkit_corners), atol=1e-9)  # the devkit's own box geometry
    corner_permutation(box_corners(ours), mm_boxes(np.c_[mm, ours[:, 7:9]]).corners.numpy())
