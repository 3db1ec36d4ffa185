"""CenterPoint helpers shared by the head's targets and decoding: task layout, Gaussians, circle NMS.

`gaussian_radius`, `gaussian_2d` and `draw_heatmap_gaussian` reproduce mmdet3d's CenterPoint
functions exactly (including the `(b + sq) / 2` roots of the original code), so targets can be
cross-checked against mmdet3d. `circle_nms` takes a radius in metres on centre distance; mmdet3d's
`circle_nms(dets, thresh)` compares the SQUARED distance with `thresh`, i.e. it equals ours with
`radius = sqrt(thresh)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from simdistill.config import CLASS_NAMES


def channel_ranges(task_sizes: Sequence[int]) -> list[tuple[int, int]]:
    """[start, stop) of each task's channels in a heatmap that concatenates the tasks in order."""
    starts = np.cumsum([0, *task_sizes]).tolist()
    return [(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]


@dataclass(frozen=True)
class TaskLayout:
    """How heatmap channels, (task, class-in-task) pairs and global class indices map onto each other.

    Heatmap channels follow the flattened task order; for the default tasks that order is CLASS_NAMES.
    """

    tasks: tuple[tuple[str, ...], ...]

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def num_classes(self) -> int:
        return sum(len(t) for t in self.tasks)

    def task_channels(self, task: int) -> tuple[int, int]:
        """[start, stop) of `task`'s channels in the concatenated heatmap."""
        return channel_ranges([len(t) for t in self.tasks])[task]

    def to_global(self, task: int, class_in_task: int) -> int:
        """(task, class-in-task) -> index into CLASS_NAMES."""
        return CLASS_NAMES.index(self.tasks[task][class_in_task])

    def locate(self, global_class: int) -> tuple[int, int]:
        """Index into CLASS_NAMES -> (task, class-in-task)."""
        name = CLASS_NAMES[global_class]
        for t, task in enumerate(self.tasks):
            if name in task:
                return t, task.index(name)
        raise ValueError(f"class {name!r} is in no head task; tasks: {self.tasks}")

    def channel_to_global(self) -> list[int]:
        """Global class index of every heatmap channel (flattened task order)."""
        return [CLASS_NAMES.index(c) for task in self.tasks for c in task]


def gaussian_radius(det_size: tuple[float, float] | Sequence[torch.Tensor], min_overlap: float = 0.5):
    """CenterNet/CenterPoint radius for a box of (height, width) cells at IoU `min_overlap` (mmdet3d's formula)."""
    height, width = det_size

    a1 = 1
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    sq1 = (b1**2 - 4 * a1 * c1) ** 0.5
    r1 = (b1 + sq1) / 2

    a2 = 4
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    sq2 = (b2**2 - 4 * a2 * c2) ** 0.5
    r2 = (b2 + sq2) / 2

    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    sq3 = (b3**2 - 4 * a3 * c3) ** 0.5
    r3 = (b3 + sq3) / 2
    return min(r1, r2, r3)


def gaussian_2d(shape: tuple[int, int], sigma: float = 1.0) -> np.ndarray:
    """Unnormalised 2D Gaussian of `shape` (peak 1 at the centre; values below eps * max set to 0)."""
    m, n = [(ss - 1.0) / 2.0 for ss in shape]
    y, x = np.ogrid[-m : m + 1, -n : n + 1]
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    h[h < np.finfo(h.dtype).eps * h.max()] = 0
    return h


def draw_heatmap_gaussian(heatmap: torch.Tensor, center: Sequence[int], radius: int, k: float = 1.0) -> torch.Tensor:
    """Max-merge a Gaussian of `radius` (sigma = diameter / 6) at integer `center` (x=col, y=row) into heatmap [H, W].

    Modifies `heatmap` in place and returns it; parts outside the map are clipped.
    """
    diameter = 2 * radius + 1
    gaussian = gaussian_2d((diameter, diameter), sigma=diameter / 6)
    x, y = int(center[0]), int(center[1])
    height, width = heatmap.shape[0:2]
    left, right = min(x, radius), min(width - x, radius + 1)
    top, bottom = min(y, radius), min(height - y, radius + 1)
    masked_heatmap = heatmap[y - top : y + bottom, x - left : x + right]
    masked_gaussian = torch.from_numpy(gaussian[radius - top : radius + bottom, radius - left : radius + right]).to(
        heatmap.device, heatmap.dtype
    )
    if min(masked_gaussian.shape) > 0 and min(masked_heatmap.shape) > 0:
        torch.max(masked_heatmap, masked_gaussian * k, out=masked_heatmap)
    return heatmap


def circle_nms(
    centers: torch.Tensor, scores: torch.Tensor, radius: float, *, max_keep: int | None = None
) -> torch.Tensor:
    """Greedy NMS on BEV centre distance: centers [N, 2] (m), scores [N] -> kept indices [K] by score descending.

    A box is suppressed when its centre lies within `radius` metres (distance <= radius) of a kept,
    higher-scoring box. Ties keep input order (stable sort).
    """
    if centers.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=centers.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    pts = centers[order].double()
    close = (((pts[:, None] - pts[None]) ** 2).sum(-1) <= radius * radius).cpu()  # [N, N]
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep: list[int] = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        if max_keep is not None and len(keep) >= max_keep:
            break
        suppressed |= close[i]
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]
