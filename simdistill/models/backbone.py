"""Image backbone (ResNet-style BasicBlocks) and an FPN neck that outputs one map at `feature_stride`.

A plain ResNet stands in for BEVFusion's Swin-T (README: deviations). The stem has stride 4
(7x7 stride-2 conv + stride-2 max-pool) as in ResNet; stage 0 keeps that stride and every later
stage halves the resolution, so stage i sits at stride 4 * 2**i. The neck fuses every stage at or
below `feature_stride` resolution (i.e. stride >= feature_stride, the "last stages", at most three)
top-down into one map at `feature_stride` with `neck_channels` channels. A stride-4 stem always
reaches stride 8 with two stages and 16 with three (a stride-2 stem would only lower the strides),
so a backbone too shallow for `feature_stride` is a ConfigError.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from simdistill.config import BackboneConfig
from simdistill.errors import ConfigError


def conv_bn_relu(in_ch: int, out_ch: int, *, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv (no bias) + BatchNorm + ReLU, 'same' padding for odd kernels."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """ResNet BasicBlock: two 3x3 convs with a (projected when needed) identity shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


STEM_STRIDE = 4


def stage_strides(n_stages: int) -> list[int]:
    """Output stride of each stage: the stem's 4, then x2 per later stage."""
    return [STEM_STRIDE * 2**i for i in range(n_stages)]


class ImageBackbone(nn.Module):
    """ResNet-style backbone + FPN neck: images [B*N, 3, H, W] -> features [B*N, neck, H/s, W/s]."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        if len(cfg.stage_channels) != len(cfg.stage_blocks) or not cfg.stage_channels:
            raise ConfigError(
                "model.backbone.stage_channels and stage_blocks must be non-empty and of equal length, got "
                f"{list(cfg.stage_channels)} and {list(cfg.stage_blocks)}"
            )
        strides = stage_strides(len(cfg.stage_channels))
        if cfg.feature_stride not in strides:
            raise ConfigError(
                f"model.backbone has {len(strides)} stages (strides {strides}) but feature_stride is "
                f"{cfg.feature_stride}; add stages to model.backbone.stage_channels/stage_blocks "
                "or lower feature_stride"
            )
        self.feature_stride = cfg.feature_stride
        self.stem = nn.Sequential(
            conv_bn_relu(3, cfg.stem_channels, kernel=7, stride=2), nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        )
        stages: list[nn.Module] = []
        in_ch = cfg.stem_channels
        for i, (ch, blocks) in enumerate(zip(cfg.stage_channels, cfg.stage_blocks)):
            stride = 1 if i == 0 else 2
            layers = [BasicBlock(in_ch, ch, stride)] + [BasicBlock(ch, ch) for _ in range(max(blocks, 1) - 1)]
            stages.append(nn.Sequential(*layers))
            in_ch = ch
        self.stages = nn.ModuleList(stages)
        # FPN over the stages at stride >= feature_stride (at most the last three, as BEVFusion's neck).
        self.fpn_levels = [i for i, s in enumerate(strides) if s >= cfg.feature_stride][:3]
        self.laterals = nn.ModuleList(
            nn.Conv2d(cfg.stage_channels[i], cfg.neck_channels, 1) for i in self.fpn_levels
        )
        self.output = conv_bn_relu(cfg.neck_channels, cfg.neck_channels)

    @property
    def out_channels(self) -> int:
        return self.output[0].out_channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(images)  # [BN, stem, H/stem, W/stem]
        feats: list[torch.Tensor] = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        # Top-down: start at the coarsest level, upsample and add into each finer lateral.
        top = self.laterals[-1](feats[self.fpn_levels[-1]])
        for lateral, level in zip(reversed(self.laterals[:-1]), reversed(self.fpn_levels[:-1])):
            lat = lateral(feats[level])
            # nearest (mmdet's FPN default): its CUDA backward is deterministic, bilinear's is not
            top = lat + F.interpolate(top, size=lat.shape[-2:], mode="nearest")
        return self.output(top)  # [BN, neck, H/feature_stride, W/feature_stride]


def image_features(backbone: ImageBackbone, images: torch.Tensor, final_hw: tuple[int, int]) -> torch.Tensor:
    """Run the backbone on every camera: images [B, N, 3, H, W] -> [B*N, C, H/s, W/s]."""
    if images.dim() != 5 or images.shape[2] != 3:
        raise ValueError(f"images must be [B, N, 3, H, W], got {tuple(images.shape)}")
    if tuple(images.shape[-2:]) != tuple(final_hw):
        raise ConfigError(
            f"images are {images.shape[-2]}x{images.shape[-1]} but the model was built for "
            f"{final_hw[0]}x{final_hw[1]}; set augment.final_height/final_width to the image size"
        )
    b, n = images.shape[:2]
    return backbone(images.reshape(b * n, *images.shape[2:]))
