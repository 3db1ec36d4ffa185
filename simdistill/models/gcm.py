"""Geometry Compensation Module: one single-scale deformable self-attention layer over a BEV map.

Deformable-DETR's encoder layer on one level, written with `F.grid_sample` (no compiled op):
queries are the BEV cells, each query = feature + learned position embedding (column embedding
C/2 concatenated with row embedding C/2); values are a linear projection of the features (no
position); each of `heads` heads samples its value map at `points` locations = the cell's centre
(reference point) + predicted offsets in cells, bilinearly with zero padding and
`align_corners=False`, weighted by a softmax over the points; an output projection and a residual follow,
with no normalisation and no feed-forward block: `attn(src) + src`, as the official SimDistill GCM (which keeps
only the attention of Deformable-DETR's encoder layer). A normalisation after the residual would make every cell
mean 0 and std 1 over channels and erase where the lift put mass.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from simdistill.config import GCMConfig
from simdistill.errors import ConfigError


def deformable_attention(value: torch.Tensor, locations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Core sampling: value [B, M, Ch, H, W], locations [B, Q, M, P, 2] as normalised (x, y) in [0, 1]
    (0 and 1 are the outer edges of the map), weights [B, Q, M, P] -> [B, Q, M * Ch] (heads concatenated).
    """
    b, m, ch, h, w = value.shape
    q, p = locations.shape[1], locations.shape[3]
    grid = (2.0 * locations - 1.0).permute(0, 2, 1, 3, 4).reshape(b * m, q, p, 2)  # [B*M, Q, P, 2]
    sampled = F.grid_sample(
        value.reshape(b * m, ch, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )  # [B*M, Ch, Q, P]
    attn = weights.permute(0, 2, 1, 3).reshape(b * m, 1, q, p)  # [B*M, 1, Q, P]
    out = (sampled * attn).sum(dim=-1)  # [B*M, Ch, Q]
    return out.reshape(b, m * ch, q).transpose(1, 2)  # [B, Q, M*Ch]


def reference_points(height: int, width: int, *, device: torch.device | None = None) -> torch.Tensor:
    """Normalised (x, y) centres of the H x W cells, row-major: [H*W, 2]."""
    ys = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height
    xs = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width
    ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([ref_x.reshape(-1), ref_y.reshape(-1)], dim=-1)


class GCM(nn.Module):
    """Deformable self-attention over sim_lidar_bev: [B, C, H, W] -> [B, C, H, W] (same grid)."""

    def __init__(self, channels: int, cfg: GCMConfig, grid_hw: tuple[int, int], *, cell_size: float) -> None:
        super().__init__()
        if cfg.heads < 1 or channels % cfg.heads != 0:
            raise ConfigError(f"model.gcm.heads={cfg.heads} must divide model.channels.cam={channels}; pick a divisor")
        if channels % 2 != 0:
            raise ConfigError(f"model.channels.cam={channels} must be even for the GCM's row/column embeddings")
        if cfg.points < 1:
            raise ConfigError(f"model.gcm.points must be >= 1, got {cfg.points}")
        if cfg.reach <= 0:
            raise ConfigError(f"model.gcm.reach must be > 0 m (the official GCM reaches 12 m), got {cfg.reach}")
        self.channels, self.heads, self.points = channels, cfg.heads, cfg.points
        self.grid_hw = grid_hw
        self.reach_cells = cfg.reach / cell_size  # how far the last initial sampling point lies [cells]
        self.zero_init_output = cfg.zero_init_output
        h, w = grid_hw
        self.row_embed = nn.Parameter(torch.empty(h, channels // 2))
        self.col_embed = nn.Parameter(torch.empty(w, channels // 2))
        self.value_proj = nn.Linear(channels, channels)
        self.sampling_offsets = nn.Linear(channels, cfg.heads * cfg.points * 2)
        self.attention_weights = nn.Linear(channels, cfg.heads * cfg.points)
        self.output_proj = nn.Linear(channels, channels)
        self.register_buffer("ref_points", reference_points(h, w), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable-DETR init: zero offset weights with biases on a ring per head (point k of P at k/P of the
        reach), uniform attention; optionally a zero output projection (the GCM then starts as the identity)."""
        nn.init.uniform_(self.row_embed)
        nn.init.uniform_(self.col_embed)
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.heads, dtype=torch.float32) * (2.0 * math.pi / self.heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)  # [M, 2]
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid[:, None, :].repeat(1, self.points, 1)  # [M, P, 2]
        steps = torch.arange(1, self.points + 1, dtype=torch.float32) * (self.reach_cells / self.points)
        grid = grid * steps[None, :, None]  # [M, P, 2] in cells
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        if self.zero_init_output:
            nn.init.zeros_(self.output_proj.weight)

    def position_embedding(self) -> torch.Tensor:
        """[H*W, C]: column embedding (C/2) concatenated with row embedding (C/2), row-major cells."""
        h, w = self.grid_hw
        col = self.col_embed[None, :, :].expand(h, w, -1)  # [H, W, C/2]
        row = self.row_embed[:, None, :].expand(h, w, -1)  # [H, W, C/2]
        return torch.cat([col, row], dim=-1).reshape(h * w, self.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if (c, (h, w)) != (self.channels, self.grid_hw):
            expected = (self.channels, *self.grid_hw)
            raise ValueError(f"GCM expects [B, C, H, W] = [B, {expected}], got {tuple(x.shape)}")
        m, p = self.heads, self.points
        src = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        query = src + self.position_embedding()[None]  # [B, HW, C]
        value = self.value_proj(src).view(b, h, w, m, c // m).permute(0, 3, 4, 1, 2)  # [B, M, C/M, H, W]
        offsets = self.sampling_offsets(query).view(b, h * w, m, p, 2)  # in cells (x, y)
        weights = self.attention_weights(query).view(b, h * w, m, p).softmax(dim=-1)  # [B, HW, M, P]
        scale = torch.tensor([w, h], dtype=offsets.dtype, device=offsets.device)
        locations = self.ref_points[None, :, None, None, :] + offsets / scale  # [B, HW, M, P, 2]
        attended = self.output_proj(deformable_attention(value, locations, weights))  # [B, HW, C]
        return (src + attended).transpose(1, 2).reshape(b, c, h, w)  # [B, C, H, W]
