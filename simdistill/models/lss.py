"""Lift-Splat-Shoot view transform (BEVFusion's LSSTransform) with BEV pooling by scatter-add.

Lift: a depth net predicts D depth logits and C context channels per feature pixel (a 1x1 conv; or, lifting with
LiDAR depth as BEVFusion's LiDAR-camera model does, convs over the image features and an encoded sparse depth
image); softmax over depth and an outer product give a frustum of features [B, N, D, fH, fW, C].
Geometry: frustum points (u, v, d) sit at feature-pixel centres in AUGMENTED image coordinates
(pixel (i, j) of a stride-s map has its centre at image pixel (j + 0.5) * s - 0.5, the convention in which
integer coordinates are pixel centres, as camera intrinsics use); they are mapped back through
inverse(img_aug_matrix), unprojected with inverse intrinsics as (u*d, v*d, d), moved by camera2lidar and
finally by lidar_aug_matrix into the augmented LiDAR frame, which is the frame of every BEV map.
Splat: points inside the x/y/z bounds are summed into cells of a grid at step / lss_downsample
(z collapsed) with `index_add_`; a conv block with a stride-`lss_downsample` conv brings the map to
the stored grid [B, C, H, W].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from simdistill.config import BEVConfig
from simdistill.errors import ConfigError, DataError
from simdistill.models.backbone import conv_bn_relu
from simdistill.models.depth import sparse_depth_image
from simdistill.pipeline.sample import Batch


def depth_bins(dbound: tuple[float, float, float]) -> torch.Tensor:
    """Depth of each bin, `arange(min, max, step)` as BEVFusion: [1, 60, 0.5] -> 118 bins."""
    lo, hi, step = dbound
    n = int(round((hi - lo) / step))
    if n < 1:
        raise ConfigError(f"model.bev.dbound {list(dbound)} gives no depth bins; use (min, max, step) with max > min")
    return lo + step * torch.arange(n, dtype=torch.float32)  # [D]


def pooled_grid(bev: BEVConfig, downsample: int) -> tuple[int, int, float, float]:
    """(H', W', y step, x step) of the grid a view transform pools onto before striding back to `grid_size`."""
    h, w = bev.grid_size
    return h * downsample, w * downsample, bev.ybound[2] / downsample, bev.xbound[2] / downsample


def make_frustum(final_hw: tuple[int, int], feature_stride: int, dbound: tuple[float, float, float]) -> torch.Tensor:
    """Frustum of (u, v, d) at feature-pixel centres in augmented image pixels: [D, fH, fW, 3]."""
    height, width = final_hw
    fh, fw = math.ceil(height / feature_stride), math.ceil(width / feature_stride)
    ds = depth_bins(dbound)
    us = (torch.arange(fw, dtype=torch.float32) + 0.5) * feature_stride - 0.5  # [fW]
    vs = (torch.arange(fh, dtype=torch.float32) + 0.5) * feature_stride - 0.5  # [fH]
    d, v, u = torch.meshgrid(ds, vs, us, indexing="ij")  # each [D, fH, fW]
    return torch.stack([u, v, d], dim=-1)  # [D, fH, fW, 3]


def frustum_to_lidar(
    frustum: torch.Tensor,
    *,
    cam_intrinsics: torch.Tensor,
    camera2lidar: torch.Tensor,
    img_aug_matrix: torch.Tensor,
    lidar_aug_matrix: torch.Tensor,
) -> torch.Tensor:
    """Frustum [D, fH, fW, 3] -> points in the augmented LiDAR frame [B, N, D, fH, fW, 3].

    cam_intrinsics, camera2lidar, img_aug_matrix: [B, N, 4, 4]; lidar_aug_matrix: [B, 4, 4].
    """
    b, n = cam_intrinsics.shape[:2]
    dtype = torch.float32
    intr = cam_intrinsics.to(dtype).clone()
    intr[..., 3, :] = 0.0
    intr[..., :, 3] = 0.0
    intr[..., 3, 3] = 1.0  # a pure 3x3 intrinsics padded to 4x4, whatever the padding was
    img_aug_inv = torch.linalg.inv(img_aug_matrix.to(dtype))  # [B, N, 4, 4]
    cam_to_aug_lidar = lidar_aug_matrix.to(dtype)[:, None] @ camera2lidar.to(dtype) @ torch.linalg.inv(intr)

    pts = frustum.reshape(1, 1, -1, 3).to(dtype)  # [1, 1, P, 3]
    pts_h = torch.cat([pts, torch.ones_like(pts[..., :1])], dim=-1).expand(b, n, -1, -1)  # [B, N, P, 4]
    raw = pts_h @ img_aug_inv.transpose(-1, -2)  # [B, N, P, 4]: raw-image (u, v, d, 1)
    depth = raw[..., 2:3]
    cam = torch.cat([raw[..., :2] * depth, depth, torch.ones_like(depth)], dim=-1)  # (u*d, v*d, d, 1)
    lidar = cam @ cam_to_aug_lidar.transpose(-1, -2)  # [B, N, P, 4]
    return lidar[..., :3].reshape(b, n, *frustum.shape[:3], 3)  # [B, N, D, fH, fW, 3]


def bev_pool(feats: torch.Tensor, coords: torch.Tensor, batch_size: int, height: int, width: int) -> torch.Tensor:
    """Sum point features into BEV cells: feats [M, C], coords [M, 3] long (b, row, col) -> [B, C, H, W].

    Every coordinate must lie inside the grid (callers drop the rest). Pure `index_add_`, so it runs
    unchanged on CPU and CUDA and is differentiable w.r.t. feats.
    """
    if feats.dim() != 2 or coords.shape != (feats.shape[0], 3):
        raise ValueError(
            f"bev_pool needs feats [M, C] and coords [M, 3], got {tuple(feats.shape)} and {tuple(coords.shape)}"
        )
    cell = (coords[:, 0] * height + coords[:, 1]) * width + coords[:, 2]  # [M]
    return _pool_cells(feats, cell, batch_size, height, width)


def _pool_cells(feats: torch.Tensor, cell: torch.Tensor, batch_size: int, height: int, width: int) -> torch.Tensor:
    """index_add_ of feats [M, C] into flat cells [M] in [0, B*H*W]; id B*H*W is a discarded trash cell."""
    n_cells = batch_size * height * width
    out = feats.new_zeros(n_cells + 1, feats.shape[1])
    out.index_add_(0, cell, feats)
    return out[:n_cells].view(batch_size, height, width, -1).permute(0, 3, 1, 2).contiguous()  # [B, C, H, W]


def points_to_cells(
    points: torch.Tensor, bev: BEVConfig, downsample: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, col, keep) of points [..., 3] on the grid at step / downsample; keep = inside x/y/z bounds."""
    h, w, ystep, xstep = pooled_grid(bev, downsample)
    col = torch.floor((points[..., 0] - bev.xbound[0]) / xstep).long()
    row = torch.floor((points[..., 1] - bev.ybound[0]) / ystep).long()
    zlo, zhi, zstep = bev.zbound
    nz = max(int(round((zhi - zlo) / zstep)), 1)
    zi = torch.floor((points[..., 2] - zlo) / zstep).long()
    keep = (col >= 0) & (col < w) & (row >= 0) & (row < h) & (zi >= 0) & (zi < nz)
    return row, col, keep


@dataclass
class LiftOutput:
    """A view transform's result: the camera BEV map and the depth distribution it lifted with."""

    bev: torch.Tensor  # [B, C, H, W]
    depth: torch.Tensor  # [B*N, D, fH, fW] softmax over the D depth bins


def depth_encoder(feature_stride: int) -> nn.Sequential:
    """BEVFusion's `dtransform`: a sparse depth image [BN, 1, H, W] -> [BN, 64, H/s, W/s] (1x1, then 5x5 convs
    of stride 4 and 2, each followed by BN + ReLU; one more stride-2 conv for feature stride 16)."""
    layers: list[nn.Module] = [nn.Conv2d(1, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                               nn.Conv2d(8, 32, 5, stride=4, padding=2, bias=False), nn.BatchNorm2d(32),
                               nn.ReLU(inplace=True)]
    channels = 32
    for _ in range(int(round(math.log2(feature_stride // 4)))):
        layers += [nn.Conv2d(channels, 64, 5, stride=2, padding=2, bias=False), nn.BatchNorm2d(64),
                   nn.ReLU(inplace=True)]
        channels = 64
    return nn.Sequential(*layers)


class LSSTransform(nn.Module):
    """Image features [B*N, C_in, fH, fW] + calibration -> camera BEV [B, C_out, H, W].

    `depth_input=False` is BEVFusion's camera-only `LSSTransform` (a 1x1 depth net); `depth_input=True` is its
    LiDAR-camera `DepthLSSTransform`: a sparse depth image of the view's points goes through `depth_encoder`,
    is concatenated before the image features, and two 3x3 convs and a 1x1 conv predict depth and context.
    """

    def __init__(
        self, in_channels: int, out_channels: int, bev: BEVConfig, *, final_hw: tuple[int, int], feature_stride: int,
        depth_input: bool = False,
    ) -> None:
        super().__init__()
        if bev.lss_downsample < 1:
            raise ConfigError(f"model.bev.lss_downsample must be >= 1, got {bev.lss_downsample}")
        self.bev = bev
        self.out_channels = out_channels
        self.final_hw = tuple(final_hw)
        self.register_buffer("frustum", make_frustum(final_hw, feature_stride, bev.dbound), persistent=False)
        self.depth_channels = self.frustum.shape[0]
        self.depth_input = depth_input
        if depth_input:
            self.dtransform = depth_encoder(feature_stride)
            self.depthnet = nn.Sequential(conv_bn_relu(in_channels + 64, in_channels),
                                          conv_bn_relu(in_channels, in_channels),
                                          nn.Conv2d(in_channels, self.depth_channels + out_channels, 1))
        else:
            self.depthnet = nn.Conv2d(in_channels, self.depth_channels + out_channels, 1)
        ds = bev.lss_downsample
        self.downsample = nn.Sequential(conv_bn_relu(out_channels, out_channels),
                                        conv_bn_relu(out_channels, out_channels, stride=ds),
                                        conv_bn_relu(out_channels, out_channels))

    def lift(self, feats: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """feats [B*N, C_in, fH, fW] -> (depth-weighted context [B*N, D, fH, fW, C], depth [B*N, D, fH, fW])."""
        fh, fw = self.frustum.shape[1:3]
        if feats.shape[-2:] != (fh, fw):
            raise ValueError(
                f"image features are {tuple(feats.shape[-2:])} but the frustum expects {(fh, fw)}; "
                "the backbone stride and augment.final_height/final_width disagree"
            )
        if self.depth_input:
            if len(batch.points) != batch.images.shape[0]:
                raise DataError("this view transform lifts with LiDAR depth and needs the batch's points; build the "
                                "batch with points")
            sparse = sparse_depth_image(batch, self.final_hw).to(feats.dtype)  # [BN, 1, H, W]
            feats = torch.cat([self.dtransform(sparse), feats], dim=1)  # depth features first, as BEVFusion
        x = self.depthnet(feats)  # [BN, D + C, fH, fW]
        depth = x[:, : self.depth_channels].softmax(dim=1)  # [BN, D, fH, fW]
        context = x[:, self.depth_channels :].permute(0, 2, 3, 1)  # [BN, fH, fW, C]
        return depth.unsqueeze(-1) * context.unsqueeze(1), depth  # [BN, D, fH, fW, C], contiguous

    def geometry(self, batch: Batch) -> torch.Tensor:
        """Frustum points in the augmented LiDAR frame [B, N, D, fH, fW, 3]."""
        return frustum_to_lidar(
            self.frustum,
            cam_intrinsics=batch.cam_intrinsics,
            camera2lidar=batch.camera2lidar,
            img_aug_matrix=batch.img_aug_matrix,
            lidar_aug_matrix=batch.lidar_aug_matrix,
        )

    def splat(self, volume: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
        """volume [B, N, D, fH, fW, C] + geometry [B, N, D, fH, fW, 3] -> pooled BEV [B, C, H', W'] (H' = ds * H)."""
        b = volume.shape[0]
        h, w, _, _ = pooled_grid(self.bev, self.bev.lss_downsample)
        row, col, keep = points_to_cells(geometry.reshape(b, -1, 3), self.bev, self.bev.lss_downsample)  # [B, P]
        batch_ix = torch.arange(b, device=volume.device)[:, None]
        cell = torch.where(keep, (batch_ix * h + row) * w + col, b * h * w)  # points outside -> trash cell
        # Same sums as bev_pool on the kept points, without copying the (large) kept part of the volume.
        return _pool_cells(volume.reshape(-1, volume.shape[-1]), cell.reshape(-1), b, h, w)

    def lift_splat(self, feats: torch.Tensor, batch: Batch, *, geometry: torch.Tensor | None = None) -> LiftOutput:
        """feats [B*N, C_in, fH, fW] -> the BEV map and the depth distribution; `geometry` may be passed in when
        two view transforms share it."""
        b, n = batch.images.shape[:2]
        volume, depth = self.lift(feats, batch)  # [BN, D, fH, fW, C]
        volume = volume.reshape(b, n, *volume.shape[1:])  # [B, N, D, fH, fW, C]
        if geometry is None:
            geometry = self.geometry(batch)
        pooled = self.splat(volume, geometry)  # [B, C, H', W']
        return LiftOutput(bev=self.downsample(pooled), depth=depth)  # bev [B, C, H, W]

    def forward(self, feats: torch.Tensor, batch: Batch, *, geometry: torch.Tensor | None = None) -> torch.Tensor:
        """The BEV map alone [B, C, H, W] (what a feature tap on this module reads)."""
        return self.lift_splat(feats, batch, geometry=geometry).bev
