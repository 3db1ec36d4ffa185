"""LiDAR points seen from the cameras: where each point lands in each augmented image, and at what depth.

Two uses, one projection:
- the teacher's lift takes a sparse depth image as input (BEVFusion's `DepthLSSTransform` in its LiDAR-camera
  model): `sparse_depth_image`, the nearest point per pixel at the network's input resolution;
- a camera student's depth net can be supervised during training (BEVDepth's depth loss, as BEVFusion's
  `AwareBEVDepth`): `depth_bin_targets`, the nearest key-frame point per feature patch as a depth bin, and
  `depth_loss`, binary cross-entropy of the predicted depth distribution against its one-hot.

Frames as everywhere (`simdistill.pipeline.sample`): points are in the augmented LiDAR frame; a point goes back
through inverse(lidar_aug_matrix) to the raw LiDAR frame, through inverse(camera2lidar) to the camera, through
the intrinsics and the perspective division to raw pixels, and through img_aug_matrix to augmented pixels,
whose integer coordinates are pixel centres (the LSS frustum's convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from simdistill.pipeline.sample import Batch

MIN_DEPTH = 0.1  # [m] points closer to a camera's plane (or behind it) are not seen by it
_FAR = 1e5  # "no point" in a min-reduction


@dataclass
class PixelDepths:
    """Every (point, camera) pair that lands inside an augmented image, flattened over the batch."""

    image: torch.Tensor  # [M] long, b * N + camera: which of the B*N images
    row: torch.Tensor  # [M] long, pixel row in the augmented image
    col: torch.Tensor  # [M] long, pixel column
    depth: torch.Tensor  # [M] float, camera-frame z [m]


def project_points(batch: Batch, image_hw: tuple[int, int], *, key_frame_only: bool = False) -> PixelDepths:
    """Project each sample's points [P_i, 5] into its N augmented images of size image_hw (H, W)."""
    height, width = image_hw
    b, n = batch.cam_intrinsics.shape[:2]
    parts: list[tuple[torch.Tensor, ...]] = []
    for i, points in enumerate(batch.points):
        pts = points[points[:, 4] == 0] if key_frame_only else points  # column 4: age of the sweep [s]
        xyz = pts[:, :3].float()  # [P, 3] augmented LiDAR frame
        raw = (xyz - batch.lidar_aug_matrix[i, :3, 3]) @ torch.linalg.inv(batch.lidar_aug_matrix[i, :3, :3]).T
        lidar2camera = torch.linalg.inv(batch.camera2lidar[i].float())  # [N, 4, 4]
        cam = raw[None] @ lidar2camera[:, :3, :3].transpose(1, 2) + lidar2camera[:, None, :3, 3]  # [N, P, 3]
        z = cam[..., 2]
        pix = cam @ batch.cam_intrinsics[i, :, :3, :3].float().transpose(1, 2)  # [N, P, 3]
        uv = pix[..., :2] / z.clamp(min=MIN_DEPTH)[..., None]
        aug = batch.img_aug_matrix[i].float()  # [N, 4, 4]
        uv = uv @ aug[:, :2, :2].transpose(1, 2) + aug[:, None, :2, 3]  # augmented pixels
        col, row = torch.floor(uv[..., 0] + 0.5).long(), torch.floor(uv[..., 1] + 0.5).long()
        seen = (z > MIN_DEPTH) & (col >= 0) & (col < width) & (row >= 0) & (row < height)  # [N, P]
        cams = torch.arange(n, device=xyz.device)[:, None].expand_as(seen)
        parts.append((i * n + cams[seen], row[seen], col[seen], z[seen]))
    if not parts:
        empty = torch.zeros(0, dtype=torch.long)
        return PixelDepths(empty, empty, empty, torch.zeros(0))
    image, row, col, depth = (torch.cat(p) for p in zip(*parts))
    return PixelDepths(image, row, col, depth)


def _min_per_cell(seen: PixelDepths, n_images: int, height: int, width: int, stride: int) -> torch.Tensor:
    """Nearest depth per (image, cell) on a grid of `stride`-pixel cells: [n_images, H/stride, W/stride], _FAR where
    no point falls."""
    rows, cols = -(-height // stride), -(-width // stride)
    cell = (seen.image * rows + seen.row // stride) * cols + seen.col // stride
    out = torch.full((n_images * rows * cols,), _FAR, device=seen.depth.device)
    out.scatter_reduce_(0, cell, seen.depth.float(), reduce="amin", include_self=True)
    return out.view(n_images, rows, cols)


def sparse_depth_image(batch: Batch, image_hw: tuple[int, int]) -> torch.Tensor:
    """[B*N, 1, H, W]: the depth [m] of the nearest point in each pixel (all merged sweeps), 0 where none."""
    b, n = batch.cam_intrinsics.shape[:2]
    nearest = _min_per_cell(project_points(batch, image_hw), b * n, *image_hw, stride=1)
    return torch.where(nearest < _FAR, nearest, 0.0)[:, None]


def depth_bin_targets(batch: Batch, image_hw: tuple[int, int], *, stride: int,
                      dbound: tuple[float, float, float]) -> torch.Tensor:
    """[B*N, fH, fW] long: the depth bin of the nearest key-frame point in each stride x stride patch (the bin
    whose depth `dmin + k * step` is closest), -1 where the patch holds no point or it lies outside the bins."""
    lo, hi, step = dbound
    n_bins = int(round((hi - lo) / step))
    b, n = batch.cam_intrinsics.shape[:2]
    nearest = _min_per_cell(project_points(batch, image_hw, key_frame_only=True), b * n, *image_hw, stride=stride)
    bins = torch.round((nearest - lo) / step).long()
    return torch.where((nearest < _FAR) & (bins >= 0) & (bins < n_bins), bins, -1)


def depth_loss(depth: torch.Tensor, targets: torch.Tensor, *, weight: float) -> torch.Tensor:
    """BEVDepth's depth loss: BCE of the predicted distribution depth [B*N, D, fH, fW] (softmax over D) against the
    one-hot of targets [B*N, fH, fW] (-1 = no target), summed over bins, averaged over patches with a target."""
    if depth.shape[0] != targets.shape[0] or depth.shape[2:] != targets.shape[1:]:
        raise ValueError(f"depth_loss: depth {tuple(depth.shape)} and targets {tuple(targets.shape)} must be "
                         "[B*N, D, fH, fW] and [B*N, fH, fW]")
    valid = targets >= 0
    if not bool(valid.any()):
        return depth.sum() * 0.0
    prob = depth.permute(0, 2, 3, 1)[valid].float().clamp(1e-6, 1.0 - 1e-6)  # [M, D]
    one_hot = F.one_hot(targets[valid], num_classes=depth.shape[1]).float()
    return weight * F.binary_cross_entropy(prob, one_hot, reduction="sum") / valid.sum()
