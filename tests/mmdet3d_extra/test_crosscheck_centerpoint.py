"""simdistill's CenterPoint targets and GT loss against mmdet3d 1.4's, on randomly generated boxes.

Run with the mmdet3d venv: `.venv-mm/bin/python -m pytest tests/mmdet3d/test_crosscheck_centerpoint.py`.
Decoding, circle NMS and box frames are in test_crosscheck_decode_boxes.py (which imports the helpers
below). Agreements asserted here, all on fixed seeds:
- gaussian_radius: equal to 1e-12 relative (float64; summation order differs) and the same int radius,
  also against mmdet3d's float32 evaluation; draw_heatmap_gaussian: identical maps, max-merge included.
- CenterHead targets: identical heatmaps; the same SET of (cell index, 10-value box target) pairs per
  task (to float32 rounding: mmdet3d computes in float32, we in float64); the same object counts.
- GT loss: with batch size 1, per task heatmap and bbox terms equal mmdet3d's `loss_by_feat`.
Deliberate differences, each asserted as documented behaviour:
- Slot order. mmdet3d fills a task's slots class by class (all cars, then ...) and gives a slot to every
  box even when it is skipped (mask 0); we fill slots in input order, kept boxes only. Losses sum over
  slots, so they do not depend on the order. Only at the max_objs cap (500 per task) does this change
  WHICH boxes are targets: mmdet3d's cap also counts off-grid boxes, ours counts kept boxes.
- A centre in (-1, 0) cells (just below the grid's min edge): mmdet3d truncates toward zero (int32 cast)
  and puts it in cell 0; we floor and drop it. Objects outside the BEV range are not targets; mmdet3d
  pipelines drop them with ObjectRangeFilter before the head ever sees them.
- Batch normalisation. mmdet3d divides a batch's summed loss by the batch's peak / object count; we
  normalise per view and average over views (docs/design.md, "Losses"), so a view's loss does not depend on its
  batch companions (DDP and batch-size changes keep per-view weights). mmdet3d also divides the bbox term
  by (num + 1e-4) and the focal term by (num_pos + float32 eps); we divide by max(1, num).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

# Skipped where the mmdet3d extra is not installed (mmdet3d.structures also needs mmcv's compiled ops).
pytest.importorskip("mmdet3d.structures")

from helpers.mmdet3d_heads import (
    BEV,
    GRID_H,
    GRID_W,
    mm_preds,
    mmdet3d_center_head,
    our_head,
    random_scene,
    random_scenes,
    sorted_pairs,
    to_mmdet3d_gt,
)
from mmdet3d.models.utils import draw_heatmap_gaussian as mm_draw_heatmap_gaussian
from mmdet3d.models.utils import gaussian_radius as mm_gaussian_radius

from simdistill.config import CLASS_NAMES, HeadConfig
from simdistill.models.center_utils import draw_heatmap_gaussian, gaussian_radius
from simdistill.models.head import CenterHead, HeadTargets
from simdistill.student_train.losses import gt_loss

# ------------------------------------------------------------------------------------------------- Gaussians


def test_gaussian_radius_equals_mmdet3d_on_random_sizes() -> None:
    rng = np.random.default_rng(0)
    n, same_int32 = 600, 0
    for _ in range(n):
        length, width = rng.uniform(0.05, 80.0, 2)
        overlap = float(rng.uniform(0.01, 0.95))
        ours = gaussian_radius((float(length), float(width)), overlap)
        # get_targets_single calls it with (width, length); the formula is symmetric up to rounding order.
        theirs = float(mm_gaussian_radius((torch.tensor(width, dtype=torch.float64),
                                           torch.tensor(length, dtype=torch.float64)), min_overlap=overlap))
        assert ours == pytest.approx(theirs, rel=1e-12, abs=0.0)
        assert int(ours) == int(theirs)
        # what the target code actually uses: mmdet3d computes in float32, the head keeps int(radius)
        theirs32 = mm_gaussian_radius((torch.tensor(width, dtype=torch.float32),
                                       torch.tensor(length, dtype=torch.float32)), min_overlap=overlap)
        same_int32 += int(ours) == int(theirs32)
    assert same_int32 == n


def test_draw_heatmap_gaussian_equals_mmdet3d_with_max_merge() -> None:
    rng = np.random.default_rng(1)
    h, w = 23, 31
    for case in range(300):
        ours, theirs = torch.zeros(h, w), torch.zeros(h, w)
        for _ in range(int(rng.integers(1, 7))):  # several Gaussians: max-merged
            radius = int(rng.integers(0, 9))
            # centres inside, on the edges, and up to radius + 2 cells outside (the Gaussian is clipped)
            x = int(rng.choice([0, w - 1, rng.integers(-radius - 2, w + radius + 2), rng.integers(0, w)]))
            y = int(rng.choice([0, h - 1, rng.integers(-radius - 2, h + radius + 2), rng.integers(0, h)]))
            k = float(rng.choice([1.0, rng.uniform(0.05, 1.0)]))
            draw_heatmap_gaussian(ours, (x, y), radius, k=k)
            mm_draw_heatmap_gaussian(theirs, torch.tensor([x, y], dtype=torch.int32), radius, k=k)
        assert torch.equal(ours, theirs), f"case {case}"
    assert ours.max() > 0  # the cases drew something


# ------------------------------------------------------------------------------------------------- targets


def assert_same_targets(ours: HeadTargets, mm: tuple, head: HeadConfig, where: str) -> int:
    """Our targets of one sample vs mmdet3d's get_targets_single; returns the number of objects compared."""
    mm_heatmaps, mm_boxes, mm_inds, mm_masks = mm
    compared, start = 0, 0
    for t, task in enumerate(head.tasks):
        stop = start + len(task)
        assert torch.equal(ours.heatmap[0, start:stop], mm_heatmaps[t]), f"{where} task {t}: heatmaps differ"
        keep, mm_keep = ours.mask[0, t], mm_masks[t].bool()
        assert int(keep.sum()) == int(mm_keep.sum()), f"{where} task {t}: object counts differ"
        our_idx, our_box = sorted_pairs(ours.indices[0, t][keep], ours.box_targets[0, t][keep])
        mm_idx, mm_box = sorted_pairs(mm_inds[t][mm_keep], mm_boxes[t][mm_keep])
        assert np.array_equal(our_idx, mm_idx), f"{where} task {t}: centre cells differ"
        # float32 (mmdet3d) vs float64 (ours, then stored as float32) arithmetic
        np.testing.assert_allclose(our_box, mm_box, rtol=1e-5, atol=2e-5, err_msg=f"{where} task {t}")
        compared += int(keep.sum())
        start = stop
    return compared


def test_targets_equal_mmdet3d_on_random_scenes() -> None:
    head_cfg = HeadConfig()
    ours, theirs = our_head(), mmdet3d_center_head(head_cfg)
    scenes = random_scenes(seed=2, count=220)
    compared = 0
    for s, (boxes, labels) in enumerate(scenes):
        targets = ours.build_targets([boxes], [labels])
        mm = theirs.get_targets_single(to_mmdet3d_gt(boxes, labels, head_cfg))
        compared += assert_same_targets(targets, mm, head_cfg, f"scene {s}")
    assert compared == sum(len(b) for b, _ in scenes)  # every box is on the grid, so every box was compared
    assert max(len(b) for b, _ in scenes) >= 150


def test_slot_order_differs_by_design() -> None:
    """mmdet3d: slots grouped by class within a task, one per box even if skipped; ours: kept boxes, input order."""
    head_cfg = HeadConfig()
    boxes = torch.tensor([
        [5.0, 3.0, -1.0, 6.0, 2.5, 3.0, 0.3, 0.0, 0.0],  # construction_vehicle (task 1, class 1)
        [40.0, 0.0, -1.0, 6.0, 2.5, 3.0, 0.0, 0.0, 0.0],  # truck outside the grid (task 1, class 0): skipped
        [-7.0, -2.0, -1.0, 6.0, 2.5, 3.0, 1.0, 0.0, 0.0],  # truck (task 1, class 0)
    ])  # fmt: skip
    labels = torch.tensor([CLASS_NAMES.index("construction_vehicle"), 1, 1])
    ours = our_head().build_targets([boxes], [labels])
    _, _, mm_inds, mm_masks = mmdet3d_center_head(head_cfg).get_targets_single(to_mmdet3d_gt(boxes, labels, head_cfg))

    def cell(b: torch.Tensor) -> int:
        return math.floor((float(b[1]) + 16.0) / 0.4) * GRID_W + math.floor((float(b[0]) + 25.0) / 0.5)

    assert ours.mask[0, 1, :3].tolist() == [True, True, False]
    assert ours.indices[0, 1, :2].tolist() == [cell(boxes[0]), cell(boxes[2])]  # input order
    assert mm_masks[1][:4].tolist() == [0, 1, 1, 0]  # slot 0: the skipped truck; 1: truck; 2: construction_vehicle
    assert mm_inds[1][1:3].tolist() == [cell(boxes[2]), cell(boxes[0])]


def test_max_objs_cap_counts_kept_boxes_only() -> None:
    """At the max_objs cap, mmdet3d counts skipped (off-grid) boxes against it; we count kept boxes only."""
    head_cfg = HeadConfig(max_objs=3)
    boxes = torch.tensor([[40.0 if i == 0 else -20.0 + 8.0 * i, 1.0, -1.0, 4.5, 2.0, 1.6, 0.0, 0.0, 0.0]
                          for i in range(5)])  # five cars, the first off the grid
    labels = torch.zeros(5, dtype=torch.long)
    ours = our_head(head_cfg).build_targets([boxes], [labels])
    _, _, _, mm_masks = mmdet3d_center_head(head_cfg).get_targets_single(to_mmdet3d_gt(boxes, labels, head_cfg))
    assert int(ours.mask[0, 0].sum()) == 3 and ours.heatmap[0, 0].eq(1).sum() == 3
    assert mm_masks[0].tolist() == [0, 1, 1]  # 3 slots for the first 3 boxes, one of them off the grid


def test_centre_just_below_the_grid_edge() -> None:
    """A centre at -0.4 cells: mmdet3d's int32 cast truncates to cell 0 and keeps it; we floor to -1 and drop it."""
    head_cfg = HeadConfig()
    base = [0.1, 0.1, -1.0, 4.5, 2.0, 1.6, 0.2, 1.0, 0.0]  # cell (50.2, 40.25)
    below_x, below_y, above_x = list(base), list(base), list(base)
    below_x[0] = -25.0 - 0.4 * 0.5  # x cell coordinate -0.4
    below_y[1] = -16.0 - 0.4 * 0.4  # y cell coordinate -0.4
    above_x[0] = 25.0 + 0.4 * 0.5  # x cell coordinate 100.4: both drop it
    mm_head = mmdet3d_center_head(head_cfg)
    for box, mm_cell, mm_offset in [(below_x, 40 * GRID_W + 0, (-0.4, 0.25)), (below_y, 0 * GRID_W + 50, (0.2, -0.4))]:
        boxes, labels = torch.tensor([box]), torch.tensor([0])
        ours = our_head().build_targets([boxes], [labels])
        assert not ours.mask.any() and ours.heatmap.sum() == 0  # outside the BEV range: no target
        heatmaps, anno, inds, masks = mm_head.get_targets_single(to_mmdet3d_gt(boxes, labels, head_cfg))
        assert masks[0][0] == 1 and inds[0][0] == mm_cell and heatmaps[0].eq(1).sum() == 1
        torch.testing.assert_close(anno[0][0, :2], torch.tensor(mm_offset), atol=1e-5, rtol=0)  # negative offset
    boxes, labels = torch.tensor([above_x]), torch.tensor([0])
    assert not our_head().build_targets([boxes], [labels]).mask.any()
    assert not mm_head.get_targets_single(to_mmdet3d_gt(boxes, labels, head_cfg))[3][0].any()


# ------------------------------------------------------------------------------------------------- losses


def per_task_ours(heatmap: torch.Tensor, boxes: torch.Tensor, targets: HeadTargets,
                  head: HeadConfig) -> list[dict[str, torch.Tensor]]:
    """Our gt_loss restricted to one task at a time (same formula, T = 1)."""
    out, start = [], 0
    for t, task in enumerate(head.tasks):
        sl, ts = slice(start, start + len(task)), slice(t, t + 1)
        out.append(gt_loss(heatmap[:, sl], boxes[:, ts], targets.heatmap[:, sl], targets.indices[:, ts],
                           targets.box_targets[:, ts], targets.mask[:, ts], code_weights=head.code_weights,
                           bbox_weight=head.loss_bbox_weight, task_sizes=[len(task)]))
        start += len(task)
    return out


def random_outputs(gen: torch.Generator, b: int, head: HeadConfig) -> tuple[torch.Tensor, torch.Tensor]:
    heatmap = torch.randn(b, sum(len(t) for t in head.tasks), GRID_H, GRID_W, generator=gen) * 3.0  # [B, n_cls, H, W]
    boxes = torch.randn(b, len(head.tasks), 10, GRID_H, GRID_W, generator=gen)  # [B, T, 10, H, W]
    return heatmap, boxes


def test_gt_loss_equals_mmdet3d_for_one_view() -> None:
    head_cfg = HeadConfig()
    ours, theirs = our_head(), mmdet3d_center_head(head_cfg)
    gen = torch.Generator().manual_seed(3)
    scenes = random_scenes(seed=4, count=30)
    for s, (boxes, labels) in enumerate(scenes):
        heatmap, pred = random_outputs(gen, 1, head_cfg)
        targets = ours.build_targets([boxes], [labels])
        mm = theirs.loss_by_feat(mm_preds(heatmap, pred, head_cfg), [to_mmdet3d_gt(boxes, labels, head_cfg)])
        mine = per_task_ours(heatmap, pred, targets, head_cfg)
        for t in range(len(head_cfg.tasks)):
            num = float(targets.mask[0, t].sum())
            # mmdet3d: bbox / (num + 1e-4 + eps32), heatmap / (max(num_pos, 1) + eps32); ours: / max(1, .)
            eps = torch.finfo(torch.float32).eps
            mm_bbox = mm[f"task{t}.loss_bbox"] * (num + 1e-4 + eps) / max(num, 1.0)
            start, stop = ours.layout.task_channels(t)
            num_pos = float(targets.heatmap[0, start:stop].eq(1).sum())
            mm_heat = mm[f"task{t}.loss_heatmap"] * (max(num_pos, 1.0) + eps) / max(num_pos, 1.0)
            torch.testing.assert_close(mine[t]["heatmap"], mm_heat, rtol=1e-5, atol=1e-7, msg=f"scene {s} task {t}")
            torch.testing.assert_close(mine[t]["bbox"], mm_bbox, rtol=1e-5, atol=1e-7, msg=f"scene {s} task {t}")
            # uncorrected: the (num + 1e-4) divisor alone makes ours larger by 1e-4 / num relative (num >= 1)
            assert float(mine[t]["bbox"]) == pytest.approx(float(mm[f"task{t}.loss_bbox"]), rel=1.1e-4, abs=1e-7)
        total = gt_loss(heatmap, pred, targets.heatmap, targets.indices, targets.box_targets, targets.mask,
                        code_weights=head_cfg.code_weights, bbox_weight=head_cfg.loss_bbox_weight)["total"]
        assert float(total) == pytest.approx(sum(float(v) for v in mm.values()), rel=1e-4)


def test_gt_loss_is_the_mean_of_per_view_mmdet3d_losses() -> None:
    """Batch of 2: ours = mean over views of mmdet3d's one-view loss, NOT mmdet3d's batch-normalised loss."""
    head_cfg = HeadConfig()
    ours, theirs = our_head(), mmdet3d_center_head(head_cfg)
    gen = torch.Generator().manual_seed(5)
    rng = np.random.default_rng(6)
    differs = 0
    for case in range(6):
        scenes = [random_scene(rng, 2 + case), random_scene(rng, 25 + 5 * case)]  # very different object counts
        heatmap, pred = random_outputs(gen, 2, head_cfg)
        targets = ours.build_targets([s[0] for s in scenes], [s[1] for s in scenes])
        mine = gt_loss(heatmap, pred, targets.heatmap, targets.indices, targets.box_targets, targets.mask,
                       code_weights=head_cfg.code_weights, bbox_weight=head_cfg.loss_bbox_weight)
        gts = [to_mmdet3d_gt(b, c, head_cfg) for b, c in scenes]
        per_view = [theirs.loss_by_feat(mm_preds(heatmap[i:i + 1], pred[i:i + 1], head_cfg), [gts[i]]) for i in range(2)]
        batch = theirs.loss_by_feat(mm_preds(heatmap, pred, head_cfg), gts)
        for term in ("heatmap", "bbox"):
            mean_view = sum(sum(float(v) for k, v in pv.items() if k.endswith(f"loss_{term}")) for pv in per_view) / 2
            batched = sum(float(v) for k, v in batch.items() if k.endswith(f"loss_{term}"))
            assert float(mine[term]) == pytest.approx(mean_view, rel=2e-4), f"case {case} {term}"
            differs += abs(batched - mean_view) > 1e-3 * abs(mean_view)
    assert differs >= 6  # the normalisations really differ on these batches
