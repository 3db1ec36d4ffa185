"""mmdet3d's CenterHead beside ours, for the mmdet3d cross-checks (tests/mmdet3d_extra): one small non-square grid,
random scenes, and our head outputs as mmdet3d's predictions. Import only after `pytest.importorskip("mmdet3d...")`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from mmdet3d.registry import MODELS
from mmdet3d.structures import LiDARInstance3DBoxes
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

from simdistill.config import CLASS_NAMES, BEVConfig, HeadConfig
from simdistill.models.head import CenterHead

# A small, NON-square grid (100 columns of 0.5 m, 80 rows of 0.4 m), so a swapped x/y or row/col fails.
BEV = BEVConfig(xbound=(-25.0, 25.0, 0.5), ybound=(-16.0, 16.0, 0.4), zbound=(-5.0, 3.0, 8.0))
GRID_H, GRID_W = BEV.grid_size  # 80, 100
BRANCH_SLICES = {"reg": slice(0, 2), "height": slice(2, 3), "dim": slice(3, 6), "rot": slice(6, 8), "vel": slice(8, 10)}
WIDE = 100.0  # post-centre limit far outside any decoded box


def mmdet3d_center_head(head: HeadConfig, bev: BEVConfig = BEV) -> Any:
    """mmdet3d's CenterHead configured like `CenterHead(…, head, bev)`: same tasks, grid, targets and decoding.

    The bbox coder keeps `head.pre_max_size` candidates per task (our top-k), circle NMS gets radius**2 and
    keeps up to `max_detections` per task, and the post-centre limit is wide, so no truncation differs.
    """
    init_default_scope("mmdet3d")
    (xmin, xmax, xstep), (ymin, ymax, ystep), (zmin, zmax, _) = bev.xbound, bev.ybound, bev.zbound
    h, w = bev.grid_size
    limit = [-WIDE, -WIDE, -WIDE, WIDE, WIDE, WIDE]
    cfg = dict(
        type="CenterHead",
        in_channels=8,
        tasks=[dict(num_class=len(t), class_names=list(t)) for t in head.tasks],
        common_heads=dict(reg=(2, 2), height=(1, 2), dim=(3, 2), rot=(2, 2), vel=(2, 2)),
        share_conv_channel=8,
        bbox_coder=dict(type="CenterPointBBoxCoder", pc_range=[xmin, ymin], post_center_range=limit,
                        max_num=head.pre_max_size, score_threshold=head.score_threshold, out_size_factor=1,
                        voxel_size=[xstep, ystep], code_size=9),
        separate_head=dict(type="SeparateHead", init_bias=-2.19, final_kernel=3),
        loss_cls=dict(type="mmdet.GaussianFocalLoss", reduction="mean"),
        loss_bbox=dict(type="mmdet.L1Loss", reduction="mean", loss_weight=head.loss_bbox_weight),
        norm_bbox=True,
        train_cfg=dict(grid_size=[w, h, 1], voxel_size=[xstep, ystep, zmax - zmin], out_size_factor=1, dense_reg=1,
                       gaussian_overlap=head.gaussian_overlap, max_objs=head.max_objs, min_radius=head.min_radius,
                       code_weights=list(head.code_weights), point_cloud_range=[xmin, ymin, zmin, xmax, ymax, zmax]),
        test_cfg=dict(post_center_limit_range=limit, min_radius=[r * r for r in head.nms_radius],
                      score_threshold=head.score_threshold, out_size_factor=1, voxel_size=[xstep, ystep],
                      nms_type="circle", pre_max_size=head.pre_max_size, post_max_size=head.max_detections,
                      nms_thr=0.2, max_per_img=head.max_detections),
    )
    return MODELS.build(cfg)


def to_mmdet3d_gt(boxes: torch.Tensor, labels: torch.Tensor, head: HeadConfig) -> InstanceData:
    """Our gravity-centre boxes [M, 9] and CLASS_NAMES labels -> mmdet3d gt_instances_3d.

    mmdet3d boxes are bottom-centre: origin=(0.5, 0.5, 0.5) says the given z is the gravity centre.
    mmdet3d labels index the flattened task order (== CLASS_NAMES for the default tasks).
    """
    order = [c for task in head.tasks for c in task]
    mm_labels = torch.tensor([order.index(CLASS_NAMES[int(c)]) for c in labels], dtype=torch.long)
    gt = InstanceData()
    gt.bboxes_3d = LiDARInstance3DBoxes(boxes.clone(), box_dim=9, origin=(0.5, 0.5, 0.5))
    gt.labels_3d = mm_labels
    return gt


def random_scene(rng: np.random.Generator, n: int, *, bev: BEVConfig = BEV) -> tuple[torch.Tensor, torch.Tensor]:
    """n boxes [n, 9] float32 (gravity centre) of random classes, sizes, yaws and velocities, centres on the grid."""
    (xmin, xmax, _), (ymin, ymax, _) = bev.xbound, bev.ybound
    boxes = np.stack([
        rng.uniform(xmin, xmax, n), rng.uniform(ymin, ymax, n), rng.uniform(-3.0, 2.0, n),
        rng.uniform(0.2, 12.0, n), rng.uniform(0.2, 4.0, n), rng.uniform(0.3, 4.0, n),
        rng.uniform(-math.pi, math.pi, n), rng.normal(0.0, 5.0, n), rng.normal(0.0, 5.0, n),
    ], axis=1)  # fmt: skip
    labels = rng.integers(0, len(CLASS_NAMES), n)
    return torch.from_numpy(boxes).float(), torch.from_numpy(labels).long()


def random_scenes(seed: int, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`count` scenes of 0-30 boxes; every 50th scene holds 150-300 boxes."""
    rng = np.random.default_rng(seed)
    return [random_scene(rng, int(rng.integers(150, 300)) if i % 50 == 7 else int(rng.integers(0, 31)))
            for i in range(count)]


def our_head(head: HeadConfig | None = None) -> CenterHead:
    return CenterHead(8, head or HeadConfig(), BEV)


def mm_preds(heatmap: torch.Tensor, boxes: torch.Tensor, head: HeadConfig) -> list[list[dict[str, torch.Tensor]]]:
    """Our head outputs (heatmap [B, n_cls, H, W], boxes [B, T, 10, H, W]) as mmdet3d's per-task pred dicts.

    Cloned: mmdet3d's loss applies sigmoid_ in place."""
    out, start = [], 0
    for t, task in enumerate(head.tasks):
        d = {"heatmap": heatmap[:, start:start + len(task)].clone()}
        d.update({name: boxes[:, t, sl].clone() for name, sl in BRANCH_SLICES.items()})
        out.append([d])
        start += len(task)
    return out


def sorted_pairs(indices: torch.Tensor, boxes: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(cell index [N], box target [N, 10]) sorted by index, then by offset x, offset y (cells may repeat)."""
    idx, box = indices.numpy(), boxes.double().numpy()
    order = np.lexsort((box[:, 1], box[:, 0], idx))
    return idx[order], box[order]
