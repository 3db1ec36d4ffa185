"""BEV decoder: SECOND backbone (strided conv stages) + SECONDFPN neck (upsample every stage, concat)."""

from __future__ import annotations

import torch
from torch import nn

from simdistill.config import DecoderConfig
from simdistill.errors import ConfigError
from simdistill.models.backbone import conv_bn_relu


class BEVDecoder(nn.Module):
    """[B, C_in, H, W] -> [B, sum(upsample_channels), H, W].

    Stage i: a 3x3 conv with stride `layer_strides[i]` then `layer_nums[i]` 3x3 convs (all conv-BN-ReLU).
    The neck brings each stage back to stride 1 (a transposed conv of kernel = stride, or a 1x1 conv at
    stride 1), then concatenates; odd sizes are cropped back to H x W.
    """

    def __init__(self, in_channels: int, cfg: DecoderConfig) -> None:
        super().__init__()
        n = len(cfg.layer_nums)
        if not (n and len(cfg.layer_strides) == n and len(cfg.out_channels) == n and len(cfg.upsample_channels) == n):
            raise ConfigError(
                "model.decoder.layer_nums, layer_strides, out_channels and upsample_channels must be non-empty "
                f"lists of equal length, got {len(cfg.layer_nums)}, {len(cfg.layer_strides)}, "
                f"{len(cfg.out_channels)}, {len(cfg.upsample_channels)}"
            )
        self.blocks = nn.ModuleList()
        self.deblocks = nn.ModuleList()
        in_ch, total_stride = in_channels, 1
        stages = zip(cfg.layer_nums, cfg.layer_strides, cfg.out_channels, cfg.upsample_channels)
        for layers, stride, out_ch, up_ch in stages:
            if stride < 1:
                raise ConfigError(f"model.decoder.layer_strides must be >= 1, got {list(cfg.layer_strides)}")
            self.blocks.append(
                nn.Sequential(
                    conv_bn_relu(in_ch, out_ch, stride=stride), *[conv_bn_relu(out_ch, out_ch) for _ in range(layers)]
                )
            )
            total_stride *= stride
            up: nn.Module
            if total_stride == 1:
                up = nn.Conv2d(out_ch, up_ch, 1, bias=False)
            else:
                up = nn.ConvTranspose2d(out_ch, up_ch, total_stride, stride=total_stride, bias=False)
            self.deblocks.append(nn.Sequential(up, nn.BatchNorm2d(up_ch), nn.ReLU(inplace=True)))
            in_ch = out_ch
        self.out_channels = sum(cfg.upsample_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ups = []
        for block, deblock in zip(self.blocks, self.deblocks):
            x = block(x)  # [B, out_i, H / s_i, W / s_i]
            ups.append(deblock(x)[..., :h, :w])  # [B, up_i, H, W]
        return torch.cat(ups, dim=1)  # [B, sum(up), H, W]
