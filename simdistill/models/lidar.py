"""LiDAR branch: PointPillars-style pillar encoder in plain torch -> LiDAR BEV [B, C_lidar, H, W].

Stands in for BEVFusion's sparse 3D convolution (README: deviations). Pillars live on the grid at
step / pillar_downsample; each point gets 10 features (x, y, z, intensity, time_lag, offsets to its
pillar's point mean (3), offsets to the pillar's x/y centre (2)); a shared Linear-BN-ReLU PointNet and a
per-pillar max (`scatter_reduce(..., "amax")`) give the pillar feature, scattered into a dense
pseudo-image; a 2D conv encoder strides back to the stored grid.
"""

from __future__ import annotations

import torch
from torch import nn

from simdistill.config import BEVConfig
from simdistill.errors import ConfigError
from simdistill.models.backbone import conv_bn_relu
from simdistill.models.lss import points_to_cells, pooled_grid

POINT_FEATURES = 10  # x, y, z, intensity, time_lag, 3 offsets to the pillar mean, 2 offsets to the pillar centre


def cap_per_group(group: torch.Tensor, cap: int) -> torch.Tensor:
    """Mask keeping the first `cap` entries (in input order) of each group id in `group` [P] -> [P] bool.

    Deterministic: a stable sort by id, then each entry's rank within its group.
    """
    if group.numel() == 0:
        return torch.zeros(0, dtype=torch.bool, device=group.device)
    order = torch.sort(group, stable=True).indices  # [P]
    sorted_group = group[order]
    _, counts = torch.unique_consecutive(sorted_group, return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)  # first position of each entry's group
    rank_sorted = torch.arange(group.numel(), device=group.device) - starts
    rank = torch.empty_like(rank_sorted)
    rank[order] = rank_sorted
    return rank < cap


class PillarEncoder(nn.Module):
    """List of B point clouds [P_i, 5] (augmented LiDAR frame) -> LiDAR BEV [B, C_lidar, H, W]."""

    def __init__(self, bev: BEVConfig, *, pillar_channels: int, out_channels: int, max_points_per_pillar: int) -> None:
        super().__init__()
        if bev.pillar_downsample < 1:
            raise ConfigError(f"model.bev.pillar_downsample must be >= 1, got {bev.pillar_downsample}")
        if max_points_per_pillar < 1:
            raise ConfigError(f"model.max_points_per_pillar must be >= 1, got {max_points_per_pillar}")
        self.bev = bev
        self.pillar_channels = pillar_channels
        self.max_points_per_pillar = max_points_per_pillar
        self.pointnet = nn.Sequential(
            nn.Linear(POINT_FEATURES, pillar_channels, bias=False),
            nn.BatchNorm1d(pillar_channels),
            nn.ReLU(inplace=True),
        )
        ds = bev.pillar_downsample
        self.encoder = nn.Sequential(
            conv_bn_relu(pillar_channels, pillar_channels),
            conv_bn_relu(pillar_channels, out_channels, stride=ds),
            conv_bn_relu(out_channels, out_channels),
        )

    def point_features(self, points: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Decorated per-point features [P, 10] and flat pillar ids [P] (b * H'W' + row * W' + col)."""
        h, w, ystep, xstep = pooled_grid(self.bev, self.bev.pillar_downsample)
        feats, ids = [], []
        for b, pts in enumerate(points):
            if pts.dim() != 2 or pts.shape[1] < 5:
                raise ValueError(f"points[{b}] must be [P, 5] (x, y, z, intensity, time_lag), got {tuple(pts.shape)}")
            pts = pts[:, :5].float()
            row, col, keep = points_to_cells(pts[:, :3], self.bev, self.bev.pillar_downsample)
            pts, row, col = pts[keep], row[keep], col[keep]
            pid = b * h * w + row * w + col
            capped = cap_per_group(pid, self.max_points_per_pillar)
            pts, row, col, pid = pts[capped], row[capped], col[capped], pid[capped]
            centre_x = self.bev.xbound[0] + (col.float() + 0.5) * xstep
            centre_y = self.bev.ybound[0] + (row.float() + 0.5) * ystep
            feats.append(torch.cat([pts, torch.stack([pts[:, 0] - centre_x, pts[:, 1] - centre_y], 1)], 1))
            ids.append(pid)
        device = self.pointnet[0].weight.device
        base = torch.cat(feats) if feats else torch.zeros(0, 7, device=device)  # [P, 7]
        pid = torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long, device=device)  # [P]
        # Offsets to the pillar's point mean (scatter mean over the kept points).
        n_cells = len(points) * h * w
        sums = base.new_zeros(n_cells, 3).index_add_(0, pid, base[:, :3])
        counts = torch.bincount(pid, minlength=n_cells).clamp(min=1).to(base.dtype)
        mean = sums[pid] / counts[pid, None]  # [P, 3]
        out = torch.cat([base[:, :5], base[:, :3] - mean, base[:, 5:7]], dim=1)  # [P, 10]
        return out, pid

    def pseudo_image(self, points: list[torch.Tensor]) -> torch.Tensor:
        """Per-pillar max of the PointNet features, dense: [B, C_pillar, H', W'] (empty pillars 0)."""
        batch_size = len(points)
        h, w, _, _ = pooled_grid(self.bev, self.bev.pillar_downsample)
        feats, pid = self.point_features(points)  # [P, 10], [P]
        dense = feats.new_zeros(batch_size * h * w, self.pillar_channels)  # [B*H'*W', C_p]
        # BatchNorm cannot normalise a single training sample; such a cloud contributes nothing.
        if feats.shape[0] > 1 or (feats.shape[0] == 1 and not self.training):
            point_feats = self.pointnet(feats)  # [P, C_p], >= 0 after ReLU
            index = pid[:, None].expand(-1, self.pillar_channels)
            dense = dense.scatter_reduce(0, index, point_feats, reduce="amax", include_self=False)
        return dense.view(batch_size, h, w, self.pillar_channels).permute(0, 3, 1, 2).contiguous()

    def forward(self, points: list[torch.Tensor]) -> torch.Tensor:
        return self.encoder(self.pseudo_image(points))  # [B, C_lidar, H, W]
