"""ConvFuser (BEVFusion): concatenate BEV maps along channels -> 3x3 conv -> BN -> ReLU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ConvFuser(nn.Module):
    """list of [B, C_i, H, W] -> [B, out_channels, H, W]; one input is allowed (the baseline student)."""

    def __init__(self, in_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        self.in_channels = tuple(in_channels)
        self.conv = nn.Conv2d(sum(self.in_channels), out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        channels = tuple(x.shape[1] for x in inputs)
        if channels != self.in_channels:
            raise ValueError(f"ConvFuser expects inputs with channels {self.in_channels}, got {channels}")
        x = torch.cat(list(inputs), dim=1)  # [B, sum C_i, H, W]
        return self.relu(self.bn(self.conv(x)))  # [B, C_out, H, W]
