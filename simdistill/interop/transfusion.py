"""mmdetection3d's TransFusionHead (projects/BEVFusion) as a teacher head: its dense heatmap and its query boxes.

What the head returns, read in mmdetection3d v1.4.0 (commit fe25f7a51d36e3702f961e198894580d83c4387b),
projects/BEVFusion/bevfusion/transfusion_head.py (`forward`, `forward_single`, `predict_by_feat`,
`get_targets_single`) and bevfusion/utils.py (`TransFusionBBoxCoder`):
- `bbox_head(feats, metas)` returns `multi_apply(...)`: a tuple over feature levels (one) of a list holding ONE
  dict. With `auxiliary=True` each per-query value concatenates the decoder layers along the last dimension; the
  last layer is `[..., -num_proposals:]`, which is what `predict_by_feat` decodes.
- Per query (SeparateHead with Conv1d): `center` [B, 2, P] in BEV cells, absolute (the query cell's centre,
  index + 0.5, plus the predicted offset), `height` [B, 1, P] gravity-centre z in metres, `dim` [B, 3, P]
  log(l, w, h), `rot` [B, 2, P] (sin, cos) of yaw, `vel` [B, 2, P] (vx, vy) in m/s, `heatmap` [B, n_cls, P]
  class logits. `query_heatmap_score` [B, n_cls, P] is the sigmoid dense heatmap after local-max suppression at
  the query cells. `dense_heatmap` [B, n_cls, X, Y] is `heatmap_head`'s output: LOGITS (the head takes its
  sigmoid to pick the queries, and `clip_sigmoid` of it in the loss).
- The queries' classes are not in the dict: the head keeps them in `self.query_labels` [B, P] (the top-k
  (class, cell) pairs), and `predict_by_feat` scores a query as sigmoid(heatmap) * query_heatmap_score there.
- The grid is x-major: `get_targets_single` draws the dense heatmap target at `center_int[[1, 0]]` (row = x
  cell), and the coder decodes `center[0]` to x with `pc_range[0]`. Our maps have rows = y, so they are transposed.

What the store gets (docs/own-teacher.md): `heatmap` = the dense heatmap, transposed, channels reordered from
nuScenes class order to model.head.tasks. `boxes`: a query head has no box at every cell, and MMD-P reads the
teacher's box at each GT centre cell, so each last-layer query writes its box, re-expressed relative to the
receiving cell (offset = centre - cell, in cells), into the cells within SPLAT_RADIUS of the cell holding its
predicted centre, in its class's task; where queries overlap, the higher score wins (mmdet3d's score, ties: the
lower query index). Other cells stay zero. Decoding any written cell gives that query's box exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from simdistill.config import BOX_CODE_SIZE, CLASS_NAMES, ModelConfig
from simdistill.errors import ConfigError

__all__ = ["QUERY_KEYS", "SPLAT_RADIUS", "TRANSFUSION_BOXES", "scatter_query_boxes", "transfusion_head_outputs",
           "transfusion_outputs"]

QUERY_KEYS: tuple[tuple[str, int], ...] = (("center", 2), ("height", 1), ("dim", 3), ("rot", 2), ("vel", 2))
"""The head's per-query regressions (its `common_heads`), in our box layout's order."""
SPLAT_RADIUS = 1
"""Cells (Chebyshev) around a query's centre cell that receive its box: a query's centre often lands one cell
away from the GT centre cell where MMD-P reads the box; 1 covers that without reaching the next object."""
TRANSFUSION_BOXES = (f"queries: each last-layer TransFusion query's box, in the cells within {SPLAT_RADIUS} of its "
                     "predicted centre (highest score wins), zero elsewhere")
"""What the store's `teacher.boxes` attribute says of boxes made by `transfusion_outputs`."""


def _query_dict(preds: Any) -> dict[str, torch.Tensor]:
    """preds[0][0], the one level's dict, or a ConfigError saying what the head returned instead."""
    level = preds
    for _ in range(2):
        if isinstance(level, (list, tuple)) and len(level) >= 1:
            level = level[0]
    if not isinstance(level, dict) or "dense_heatmap" not in level:
        raise ConfigError("the tapped head does not return TransFusionHead outputs (a dict with dense_heatmap); "
                          "use --tap-family bevfusion for a CenterHead, or tap the TransFusionHead (--tap head=PATH)")
    missing = [k for k, _ in QUERY_KEYS if k not in level] + [k for k in ("heatmap", "query_heatmap_score")
                                                               if k not in level]
    if missing:
        raise ConfigError(f"the teacher's TransFusionHead returns no {', '.join(missing)}; simdistill needs "
                          "common_heads center(2), height(1), dim(3), rot(2), vel(2)")
    return level


def transfusion_outputs(preds: Any, query_labels: torch.Tensor,
                        tasks: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """TransFusionHead forward output + its query_labels [B, P] -> (heatmap logits [B, n_cls, H, W] with channels
    in the flattened order of `tasks`, boxes [B, T, 10, H, W]); rows = y, columns = x (see the module docstring)."""
    level = _query_dict(preds)
    dense = level["dense_heatmap"]  # [B, n_cls, X, Y] logits, classes in nuScenes order
    if dense.dim() != 4 or dense.shape[1] != len(CLASS_NAMES):
        raise ConfigError(f"the teacher's dense_heatmap is {list(dense.shape)}; simdistill needs [B, "
                          f"{len(CLASS_NAMES)}, X, Y], the nuScenes classes in order ({', '.join(CLASS_NAMES)})")
    b, _, nx, ny = dense.shape
    if query_labels.dim() != 2 or query_labels.shape[0] != b:
        raise ConfigError(f"the head's query_labels is {list(query_labels.shape)}; expected [B={b}, num_proposals]")
    p = query_labels.shape[1]
    last = {k: level[k][..., -p:].float() for k, _ in QUERY_KEYS}  # the last decoder layer, [B, C, P] each
    labels = query_labels.long()
    pick = labels[:, None, :]  # [B, 1, P]
    score = (level["heatmap"][..., -p:].float().sigmoid().gather(1, pick)
             * level["query_heatmap_score"].float().gather(1, pick))[:, 0]  # [B, P], predict_by_feat's score
    order = [CLASS_NAMES.index(c) for task in tasks for c in task]
    class_task = torch.empty(len(CLASS_NAMES), dtype=torch.long)
    for t, task in enumerate(tasks):
        for c in task:
            class_task[CLASS_NAMES.index(c)] = t
    codes = torch.cat([last[k] for k, _ in QUERY_KEYS[1:]], dim=1)  # [B, 8, P]: z, log l/w/h, sin, cos, vx, vy
    boxes = scatter_query_boxes(last["center"], codes, class_task.to(labels.device)[labels], score,
                                n_tasks=len(tasks), grid_hw=(ny, nx))
    heatmap = dense.transpose(-1, -2)[:, order]  # [B, n_cls, Y, X]
    return heatmap, boxes.to(dense.dtype)


def scatter_query_boxes(center: torch.Tensor, codes: torch.Tensor, task: torch.Tensor, score: torch.Tensor, *,
                        n_tasks: int, grid_hw: tuple[int, int], radius: int = SPLAT_RADIUS) -> torch.Tensor:
    """Query boxes -> a dense box grid [B, T, 10, H, W] (rows = y, columns = x), zero where no query writes.

    center [B, 2, P]: (x, y) in cells of the grid (absolute, continuous); codes [B, 8, P]: the box code after the
    offset (z, log l, w, h, sin, cos, vx, vy); task [B, P] long; score [B, P]. Query q writes into task[q] at every
    cell (row, col) within `radius` of (floor(y), floor(x)) that lies on the grid, with offset (x - col, y - row);
    a cell two queries reach gets the higher score's box (ties: the lower query index).
    """
    b, _, p = center.shape
    h, w = grid_hw
    steps = torch.arange(-radius, radius + 1, device=center.device)
    d_row, d_col = (g.reshape(-1) for g in torch.meshgrid(steps, steps, indexing="ij"))  # [K] each
    x, y = center[:, 0].float(), center[:, 1].float()  # [B, P]
    rows = y.floor().long()[..., None] + d_row  # [B, P, K]
    cols = x.floor().long()[..., None] + d_col
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    batch = torch.arange(b, device=center.device)[:, None, None].expand_as(rows)
    query = torch.arange(p, device=center.device)[None, :, None].expand_as(rows)
    slot = ((batch * n_tasks + task[..., None]) * h + rows) * w + cols  # [B, P, K] flat (b, t, row, col)
    slot, query, batch = slot[inside], query[inside], batch[inside]
    rows, cols = rows[inside], cols[inside]
    size = b * n_tasks * h * w
    q_score = score.float()[batch, query]
    best = torch.full((size,), -torch.inf, device=center.device).scatter_reduce(0, slot, q_score, "amax")
    top = q_score == best[slot]
    first = torch.full((size,), p, dtype=torch.long, device=center.device)
    first = first.scatter_reduce(0, slot[top], query[top], "amin")
    win = top & (query == first[slot])  # one writer per cell
    slot, query, batch, rows, cols = slot[win], query[win], batch[win], rows[win], cols[win]
    offset = torch.stack([x[batch, query] - cols, y[batch, query] - rows], dim=1)  # [N, 2] in cells
    written = torch.cat([offset, codes.float()[batch, :, query]], dim=1)  # [N, 10]
    grid = torch.zeros(size, BOX_CODE_SIZE, device=center.device).index_put_((slot,), written)
    return grid.view(b, n_tasks, h, w, BOX_CODE_SIZE).permute(0, 1, 4, 2, 3).contiguous()  # [B, T, 10, H, W]


def transfusion_head_outputs(preds: Any, head: nn.Module, cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """`transfusion_outputs` with the query classes the head kept in `query_labels` during this forward."""
    labels = getattr(head, "query_labels", None)
    if not isinstance(labels, torch.Tensor):
        raise ConfigError(f"the tapped head ({type(head).__name__}) has no query_labels after its forward; tap "
                          "mmdet3d's TransFusionHead (--tap head=PATH), which keeps the queries' classes there")
    return transfusion_outputs(preds, labels, cfg.head.tasks)
