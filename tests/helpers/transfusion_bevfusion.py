"""A CPU stand-in of mmdetection3d's BEVFusion with a TransFusionHead, in plain PyTorch (no mmdet3d needed).

It keeps what the `bevfusion-transfusion` tap family relies on, as mmdetection3d v1.4.0 (commit
fe25f7a51d36e3702f961e198894580d83c4387b) writes it in projects/BEVFusion/bevfusion/bevfusion.py and
transfusion_head.py: the module names (img_backbone, img_neck, view_transform, pts_voxel_layer, pts_middle_encoder,
fusion_layer, pts_backbone, pts_neck, bbox_head; inside the head shared_conv, heatmap_head, class_encoding, decoder,
prediction_heads), `extract_feat(batch_inputs_dict, batch_input_metas)` with its metas keys, x-major BEV maps
[B, C, X, Y], and `bbox_head(feats, metas)` returning `([dict],)` with the real head's keys, its query selection
(top-k of the sigmoid dense heatmap after a local max, nuScenes' pedestrian and traffic cone exempt) and its
`query_labels`. The layers inside are small stand-ins (a projective camera lift instead of LSS, a dense pillar
scatter instead of the sparse encoder, a plain attention decoder layer).

The file is self-contained (torch and simdistill only) because export workers import it by path: `make_teacher` is
a python-teacher factory that returns the stand-in tapped by the `bevfusion-transfusion` family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from simdistill.config import ModelConfig
from simdistill.interop.tapped_teacher import TappedTeacher

COMMON_HEADS = {"center": 2, "height": 1, "dim": 3, "rot": 2, "vel": 2}  # the real nuScenes configs' common_heads
NUM_CLASSES = 10  # nuScenes, in CLASS_NAMES order
NUM_PROPOSALS = 40  # the real configs: 200 on a 180 x 180 grid


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True))


class ProjectiveLift(nn.Module):
    """view_transform's call signature: image features sampled where BEV cells (z = 0) project, [B, C, X, Y]."""

    def __init__(self, in_channels: int, out_channels: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, 1)
        (xmin, _, xstep), (ymin, _, ystep) = cfg.bev.xbound, cfg.bev.ybound
        ny, nx = cfg.bev.grid_size
        x, y = torch.meshgrid(xmin + (torch.arange(nx) + 0.5) * xstep, ymin + (torch.arange(ny) + 0.5) * ystep,
                              indexing="ij")  # [X, Y]: BEVFusion's maps are x-major
        self.register_buffer("cells", torch.stack([x, y, torch.zeros_like(x), torch.ones_like(x)], -1),
                             persistent=False)  # [X, Y, 4]

    def forward(self, x: torch.Tensor, points: Any, lidar2image: torch.Tensor, camera_intrinsics: torch.Tensor,
                camera2lidar: torch.Tensor, img_aug_matrix: torch.Tensor, lidar_aug_matrix: torch.Tensor,
                img_metas: Any) -> torch.Tensor:
        b, n = x.shape[:2]
        img_h, img_w = img_metas[0]["img_shape"]
        raw = torch.einsum("bij,xyj->bxyi", torch.linalg.inv(lidar_aug_matrix), self.cells)  # un-augmented LiDAR
        pix = torch.einsum("bnij,bxyj->bnxyi", lidar2image, raw)  # [B, N, X, Y, 4] = (u*d, v*d, d, 1)
        depth = pix[..., 2:3].clamp(min=1e-3)
        uv = torch.cat([pix[..., :2] / depth, depth, torch.ones_like(depth)], -1)
        aug = torch.einsum("bnij,bnxyj->bnxyi", img_aug_matrix, uv)[..., :2]
        grid = torch.stack([aug[..., 0] / img_w, aug[..., 1] / img_h], -1) * 2 - 1
        seen = ((pix[..., 2] > 0.5) & (grid.abs() <= 1).all(-1)).to(x.dtype)  # [B, N, X, Y]
        feats = F.grid_sample(self.proj(x.flatten(0, 1)), grid.flatten(0, 1), align_corners=False)
        feats = feats.view(b, n, -1, *grid.shape[2:4]) * seen[:, :, None]
        return feats.sum(1) / seen.sum(1)[:, None].clamp(min=1)  # [B, C, X, Y]


class PillarVoxelLayer(nn.Module):
    """Hard voxelization into BEV pillars: points [P, 5] -> (voxels [V, M, 5], coords [V, 3] (x, y, z), counts [V])."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        (self.xmin, _, self.xstep), (self.ymin, _, self.ystep) = cfg.bev.xbound, cfg.bev.ybound
        self.ny, self.nx = cfg.bev.grid_size
        self.max_points = cfg.max_points_per_pillar

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ix = torch.floor((points[:, 0] - self.xmin) / self.xstep).long()
        iy = torch.floor((points[:, 1] - self.ymin) / self.ystep).long()
        keep = (ix >= 0) & (ix < self.nx) & (iy >= 0) & (iy < self.ny)
        cell = (ix * self.ny + iy)[keep]
        order = torch.argsort(cell, stable=True)
        cell, pts = cell[order], points[keep][order]
        cells, inverse, counts = torch.unique_consecutive(cell, return_inverse=True, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(cell)) - starts[inverse]
        kept = rank < self.max_points
        voxels = pts.new_zeros(len(cells), self.max_points, pts.shape[1])
        voxels[inverse[kept], rank[kept]] = pts[kept]
        coords = torch.stack([cells // self.ny, cells % self.ny, torch.zeros_like(cells)], 1).int()
        return voxels, coords, counts.clamp(max=self.max_points).int()


class PillarScatter(nn.Module):
    """pts_middle_encoder's call: voxel means [V, 5] at coords [V, 4] (batch, x, y, z) -> LiDAR BEV [B, C, X, Y]."""

    def __init__(self, pillar_channels: int, out_channels: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.ny, self.nx = cfg.bev.grid_size
        self.pfn = nn.Sequential(nn.Linear(5, pillar_channels), nn.ReLU(True))
        self.conv = conv_bn_relu(pillar_channels, out_channels)

    def forward(self, feats: torch.Tensor, coords: torch.Tensor, batch_size: Any) -> torch.Tensor:
        b = int(batch_size)
        flat = (coords[:, 0].long() * self.nx + coords[:, 1].long()) * self.ny + coords[:, 2].long()  # [V]
        pillars = self.pfn(feats)  # [V, C_p]
        canvas = pillars.new_zeros(b * self.nx * self.ny, pillars.shape[1]).index_add_(0, flat, pillars)
        return self.conv(canvas.view(b, self.nx, self.ny, -1).permute(0, 3, 1, 2).contiguous())  # [B, C, X, Y]


class ConvFuser(nn.Sequential):
    """As projects/BEVFusion's ConvFuser: concatenate the maps, conv-BN-ReLU."""

    def __init__(self, in_channels: list[int], out_channels: int) -> None:
        super().__init__(nn.Conv2d(sum(in_channels), out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(True))

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return super().forward(torch.cat(inputs, dim=1))


class SecondStandIn(nn.Module):
    """pts_backbone: one map per stride, as SECOND returns."""

    def __init__(self, in_channels: int, out_channels: tuple[int, ...], strides: tuple[int, ...]) -> None:
        super().__init__()
        chans = (in_channels, *out_channels)
        self.blocks = nn.ModuleList(conv_bn_relu(chans[i], chans[i + 1], s) for i, s in enumerate(strides))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return tuple(outs)


class SecondFPNStandIn(nn.Module):
    """pts_neck: every level back to the first one's size, concatenated: a list of ONE map, as SECONDFPN returns."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: tuple[int, ...]) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(i, o, 1) for i, o in zip(in_channels, out_channels))

    def forward(self, feats: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        size = feats[0].shape[-2:]
        ups = [F.interpolate(conv(f), size=size, mode="nearest") for conv, f in zip(self.lateral, feats)]
        return [torch.cat(ups, dim=1)]


class DecoderLayer(nn.Module):
    """TransformerDecoderLayer's call: (query [B, C, P], key [B, C, HW], query_pos [B, P, 2], key_pos) -> [B, C, P]."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.ReLU(True), nn.Linear(2 * hidden, hidden))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(3))
        self.pos = nn.Linear(2, hidden)  # the real layer's learned position embedding, reduced to one linear map

    def forward(self, query: torch.Tensor, key: torch.Tensor, query_pos: torch.Tensor,
                key_pos: torch.Tensor) -> torch.Tensor:
        q = query.transpose(1, 2) + self.pos(query_pos)  # [B, P, C]
        k = key.transpose(1, 2) + self.pos(key_pos)  # [B, HW, C]
        q = self.norms[0](q + self.self_attn(q, q, q)[0])
        q = self.norms[1](q + self.cross_attn(q, k, k)[0])
        return self.norms[2](q + self.ffn(q)).transpose(1, 2)


class SeparateHead(nn.Module):
    """mmdet3d's SeparateHead with Conv1d: query features [B, C, P] -> {name: [B, size, P]}."""

    def __init__(self, hidden: int, heads: dict[str, int]) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({name: nn.Sequential(nn.Conv1d(hidden, hidden, 1), nn.BatchNorm1d(hidden),
                                                        nn.ReLU(True), nn.Conv1d(hidden, size, 1))
                                    for name, size in heads.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: head(x) for name, head in self.heads.items()}


class TransFusionHead(nn.Module):
    """The real head's query selection and forward contract (transfusion_head.py, `forward_single`)."""

    def __init__(self, in_channels: int, grid_xy: tuple[int, int], *, hidden: int = 16, num_decoder_layers: int = 2,
                 num_proposals: int = NUM_PROPOSALS, nms_kernel_size: int = 3, auxiliary: bool = True) -> None:
        super().__init__()
        self.num_classes, self.num_proposals, self.auxiliary = NUM_CLASSES, num_proposals, auxiliary
        self.num_decoder_layers, self.nms_kernel_size = num_decoder_layers, nms_kernel_size
        self.shared_conv = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.heatmap_head = nn.Sequential(conv_bn_relu(hidden, hidden), nn.Conv2d(hidden, NUM_CLASSES, 3, padding=1))
        self.class_encoding = nn.Conv1d(NUM_CLASSES, hidden, 1)
        self.decoder = nn.ModuleList(DecoderLayer(hidden, 2) for _ in range(num_decoder_layers))
        heads = {**COMMON_HEADS, "heatmap": NUM_CLASSES}
        self.prediction_heads = nn.ModuleList(SeparateHead(hidden, heads) for _ in range(num_decoder_layers))
        x_size, y_size = grid_xy
        bx, by = torch.meshgrid(torch.linspace(0, x_size - 1, x_size), torch.linspace(0, y_size - 1, y_size),
                                indexing="ij")
        self.register_buffer("bev_pos", torch.stack([bx + 0.5, by + 0.5]).view(1, 2, -1).permute(0, 2, 1),
                             persistent=False)  # [1, X*Y, 2], create_2D_grid

    def forward(self, feats: list[torch.Tensor], metas: list[dict[str, Any]]) -> tuple[list[dict], ...]:
        results = [self.forward_single(f, metas) for f in feats]  # multi_apply over levels
        return tuple(map(list, zip(*results)))

    def forward_single(self, inputs: torch.Tensor, metas: list[dict[str, Any]]) -> list[dict[str, torch.Tensor]]:
        b = inputs.shape[0]
        fusion_feat = self.shared_conv(inputs)  # [B, C, X, Y]
        flat = fusion_feat.view(b, fusion_feat.shape[1], -1)  # [B, C, X*Y]
        bev_pos = self.bev_pos.repeat(b, 1, 1)
        dense_heatmap = self.heatmap_head(fusion_feat.float())  # [B, n_cls, X, Y] logits
        heatmap = dense_heatmap.detach().sigmoid()
        padding = self.nms_kernel_size // 2
        local_max = torch.zeros_like(heatmap)
        local_max[:, :, padding:(-padding), padding:(-padding)] = F.max_pool2d(
            heatmap, kernel_size=self.nms_kernel_size, stride=1, padding=0)
        local_max[:, 8] = heatmap[:, 8]  # nuScenes pedestrian and traffic cone: no local-max suppression
        local_max[:, 9] = heatmap[:, 9]
        heatmap = (heatmap * (heatmap == local_max)).view(b, heatmap.shape[1], -1)
        top = heatmap.view(b, -1).argsort(dim=-1, descending=True)[..., :self.num_proposals]
        top_class, top_index = top // heatmap.shape[-1], top % heatmap.shape[-1]
        query_feat = flat.gather(index=top_index[:, None, :].expand(-1, flat.shape[1], -1), dim=-1)
        self.query_labels = top_class
        one_hot = F.one_hot(top_class, num_classes=self.num_classes).permute(0, 2, 1)
        query_feat = query_feat + self.class_encoding(one_hot.float())
        query_pos = bev_pos.gather(index=top_index[:, None, :].permute(0, 2, 1).expand(-1, -1, 2), dim=1)
        ret_dicts = []
        for i in range(self.num_decoder_layers):
            query_feat = self.decoder[i](query_feat, flat, query_pos, bev_pos)
            res = self.prediction_heads[i](query_feat)
            res["center"] = res["center"] + query_pos.permute(0, 2, 1)
            ret_dicts.append(res)
            query_pos = res["center"].detach().clone().permute(0, 2, 1)
        ret_dicts[0]["query_heatmap_score"] = heatmap.gather(
            index=top_index[:, None, :].expand(-1, self.num_classes, -1), dim=-1)  # [B, n_cls, P]
        ret_dicts[0]["dense_heatmap"] = dense_heatmap
        if not self.auxiliary:
            return [ret_dicts[-1]]
        keep_first = ("dense_heatmap", "dense_heatmap_old", "query_heatmap_score")
        return [{k: ret_dicts[0][k] if k in keep_first else torch.cat([r[k] for r in ret_dicts], dim=-1)
                 for k in ret_dicts[0]}]


class CPUBEVFusionTransFusion(nn.Module):
    """BEVFusion's structure and `extract_feat` (projects/BEVFusion/bevfusion/bevfusion.py) on small CPU modules."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        ch, dec = cfg.channels, cfg.decoder
        self.img_backbone = nn.Sequential(conv_bn_relu(3, 16, 2), conv_bn_relu(16, 16, 2), conv_bn_relu(16, 16, 2))
        self.img_neck = nn.ModuleList([nn.Conv2d(16, 16, 1)])
        self.view_transform = ProjectiveLift(16, ch.cam, cfg)
        self.pts_voxel_layer = PillarVoxelLayer(cfg)
        self.pts_middle_encoder = PillarScatter(ch.pillar, ch.lidar, cfg)
        self.fusion_layer = ConvFuser([ch.cam, ch.lidar], ch.fused)
        self.pts_backbone = SecondStandIn(ch.fused, dec.out_channels, dec.layer_strides)
        self.pts_neck = SecondFPNStandIn(dec.out_channels, dec.upsample_channels)
        ny, nx = cfg.bev.grid_size
        self.bbox_head = TransFusionHead(sum(dec.upsample_channels), (nx, ny))

    def extract_img_feat(self, x: torch.Tensor, points: Any, *geometry: Any) -> torch.Tensor:
        b, n = x.shape[:2]
        x = self.img_backbone(x.view(b * n, *x.shape[2:]))
        x = [neck(x) for neck in self.img_neck]  # a list of levels, as GeneralizedLSSFPN returns
        if not isinstance(x, torch.Tensor):
            x = x[0]
        return self.view_transform(x.view(b, n, *x.shape[1:]), points, *geometry)

    @torch.no_grad()
    def voxelize(self, points: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats, coords, sizes = [], [], []
        for k, res in enumerate(points):
            f, c, n = self.pts_voxel_layer(res)
            feats.append(f)
            coords.append(F.pad(c, (1, 0), mode="constant", value=k))
            sizes.append(n)
        feats_t, sizes_t = torch.cat(feats), torch.cat(sizes)
        return feats_t.sum(1) / sizes_t.type_as(feats_t).view(-1, 1), torch.cat(coords), sizes_t  # voxelize_reduce

    def extract_feat(self, batch_inputs_dict: dict[str, Any], batch_input_metas: list[dict[str, Any]]) -> Any:
        imgs, points = batch_inputs_dict["imgs"].contiguous(), batch_inputs_dict["points"]
        geometry = [imgs.new_tensor(np.asarray([m.get(key, np.eye(4)) for m in batch_input_metas]))
                    for key in ("lidar2img", "cam2img", "cam2lidar", "img_aug_matrix", "lidar_aug_matrix")]
        features = [self.extract_img_feat(imgs, points, *geometry, batch_input_metas)]
        feats, coords, _ = self.voxelize([p.float() for p in points])
        features.append(self.pts_middle_encoder(feats, coords, len(points)))
        return self.pts_neck(self.pts_backbone(self.fusion_layer(features)))


def write_checkpoint(cfg: ModelConfig, path: Path, *, seed: int = 0) -> Path:
    """Random weights with non-trivial BatchNorm statistics (so eval mode is not the identity), saved as mmengine
    saves a checkpoint's weights."""
    torch.manual_seed(seed)
    model = CPUBEVFusionTransFusion(cfg)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    torch.save({"state_dict": model.state_dict()}, path)
    return path


def make_teacher(model_cfg: ModelConfig, checkpoint: Path) -> nn.Module:
    """A python-teacher factory: the stand-in with `checkpoint`'s weights, tapped as `bevfusion-transfusion`."""
    model = CPUBEVFusionTransFusion(model_cfg)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"])
    return TappedTeacher(model, model_cfg, family="bevfusion-transfusion")
