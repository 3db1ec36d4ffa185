"""A BEVFusion-layout mmdetection3d detector that runs on the CPU, for testing the feature tap end to end.

mmdet3d's own BEVFusion (projects/BEVFusion) needs CUDA-only ops (bev_pool, spconv), so it cannot run on
a CPU machine. `SimDistillCPUBEVFusion` keeps BEVFusion's module names and `extract_feat` contract
(the metas keys, `voxelize`, camera then LiDAR then fusion, backbone, neck, head), built from an mmdet3d
config dict: mmcv's hard `Voxelization`, mmdet3d's `SECOND` backbone, `SECONDFPN` neck and `CenterHead`;
the camera branch (ResNet+FPN, LSS) and the ConvFuser are simdistill's, registered here because mmdet3d
1.4 ships none that run on the CPU. The LiDAR middle encoder is a dense pillar scatter (voxel means ->
linear -> scatter -> conv), the CPU stand-in for BEVFusion's sparse encoder.

Importing this module registers the classes in mmdet3d's MODELS registry; a config names it in
`custom_imports`, so Dask workers that build the model import it too. `cpu_bevfusion_config(cfg)` writes
the mmdet3d config whose shapes match a simdistill config.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from simdistill.interop import require_mmdet3d

require_mmdet3d()

from mmcv.ops import Voxelization  # noqa: E402
from mmdet3d.models import Base3DDetector  # noqa: E402
from mmdet3d.registry import MODELS  # noqa: E402

from simdistill.config import BackboneConfig, BEVConfig, Config  # noqa: E402
from simdistill.models.backbone import ImageBackbone  # noqa: E402
from simdistill.models.fuser import ConvFuser  # noqa: E402
from simdistill.models.head import BRANCHES  # noqa: E402
from simdistill.models.lss import LSSTransform  # noqa: E402
from simdistill.pipeline.augment import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from simdistill.pipeline.sample import Batch  # noqa: E402

__all__ = ["SimDistillCPUBEVFusion", "cpu_bevfusion_config"]


@MODELS.register_module()
class SimDistillImageBackbone(nn.Module):
    """simdistill's ResNet+FPN: [B*N, 3, H, W] -> [B*N, C, H/s, W/s] (the FPN is inside, so no img_neck)."""

    def __init__(self, **backbone: Any) -> None:
        super().__init__()
        self.net = ImageBackbone(BackboneConfig(**backbone))
        self.out_channels = self.net.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@MODELS.register_module()
class SimDistillLSS(nn.Module):
    """BEVFusion's vtransform call signature around simdistill's LSS: [B, N, C, fH, fW] -> cam BEV [B, C, H, W]."""

    def __init__(self, in_channels: int, out_channels: int, bev: dict[str, Any], final_hw: list[int],
                 feature_stride: int) -> None:
        super().__init__()
        bev_cfg = BEVConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in bev.items()})
        self.lss = LSSTransform(in_channels, out_channels, bev_cfg, final_hw=tuple(final_hw),
                                feature_stride=feature_stride)

    def forward(self, x: torch.Tensor, points: Any, lidar2image: torch.Tensor, camera_intrinsics: torch.Tensor,
                camera2lidar: torch.Tensor, img_aug_matrix: torch.Tensor, lidar_aug_matrix: torch.Tensor,
                img_metas: Any) -> torch.Tensor:
        b, n = x.shape[:2]
        geometry = Batch(tokens=[""] * b, images=x, cam_intrinsics=camera_intrinsics, camera2lidar=camera2lidar,
                         img_aug_matrix=img_aug_matrix, lidar_aug_matrix=lidar_aug_matrix)
        return self.lss(x.reshape(b * n, *x.shape[2:]), geometry)


@MODELS.register_module()
class SimDistillPillarScatter(nn.Module):
    """Voxel-mean features [V, C_in] at coords [V, 4] (batch, z, y, x) -> dense LiDAR BEV [B, C, ny, nx]."""

    def __init__(self, in_channels: int, pillar_channels: int, out_channels: int, grid_hw: list[int]) -> None:
        super().__init__()
        self.grid_hw = (int(grid_hw[0]), int(grid_hw[1]))
        self.pfn = nn.Sequential(nn.Linear(in_channels, pillar_channels, bias=False),
                                 nn.BatchNorm1d(pillar_channels), nn.ReLU(inplace=True))
        self.conv = nn.Sequential(nn.Conv2d(pillar_channels, out_channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    def forward(self, feats: torch.Tensor, coords: torch.Tensor, batch_size: Any) -> torch.Tensor:
        h, w = self.grid_hw
        b = int(batch_size)
        pillars = self.pfn(feats)  # [V, C_p]
        flat = coords[:, 0].long() * (h * w) + coords[:, 2].long() * w + coords[:, 3].long()  # [V]
        canvas = pillars.new_zeros(b * h * w, pillars.shape[1]).index_add_(0, flat, pillars)
        canvas = canvas.view(b, h, w, -1).permute(0, 3, 1, 2).contiguous()  # [B, C_p, H, W]
        return self.conv(canvas)  # [B, C_out, H, W]


@MODELS.register_module()
class SimDistillConvFuser(ConvFuser):
    """BEVFusion's ConvFuser (projects/BEVFusion ships one; this is simdistill's): list of maps -> fused map."""


@MODELS.register_module()
class SimDistillCPUBEVFusion(Base3DDetector):
    """BEVFusion's structure and `extract_feat` contract on CPU-capable modules (see the module docstring)."""

    def __init__(self, *, img_backbone: dict, vtransform: dict, voxelize_cfg: dict, pts_middle_encoder: dict,
                 fusion_layer: dict, pts_backbone: dict, pts_neck: dict, bbox_head: dict,
                 data_preprocessor: dict | None = None, init_cfg: dict | None = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        voxelize_cfg = dict(voxelize_cfg)
        self.voxelize_reduce = voxelize_cfg.pop("voxelize_reduce", True)
        self.pts_voxel_layer = Voxelization(**voxelize_cfg)
        self.img_backbone = MODELS.build(img_backbone)
        self.vtransform = MODELS.build(vtransform)
        self.pts_middle_encoder = MODELS.build(pts_middle_encoder)
        self.fusion_layer = MODELS.build(fusion_layer)
        self.pts_backbone = MODELS.build(pts_backbone)
        self.pts_neck = MODELS.build(pts_neck)
        self.bbox_head = MODELS.build(bbox_head)

    @torch.no_grad()
    def voxelize(self, points: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As BEVFusion: hard voxelization per sample, batch index prepended, mean over a voxel's points."""
        feats, coords, sizes = [], [], []
        for k, cloud in enumerate(points):
            f, c, n = self.pts_voxel_layer(cloud)
            feats.append(f)
            coords.append(F.pad(c, (1, 0), mode="constant", value=k))
            sizes.append(n)
        feats_t, coords_t, sizes_t = torch.cat(feats), torch.cat(coords), torch.cat(sizes)
        if self.voxelize_reduce:
            feats_t = (feats_t.sum(dim=1) / sizes_t.type_as(feats_t).view(-1, 1)).contiguous()
        return feats_t, coords_t, sizes_t

    def extract_feat(self, batch_inputs_dict: dict[str, Any], batch_input_metas: list[dict[str, Any]],
                     **kwargs: Any) -> list[torch.Tensor]:
        imgs = batch_inputs_dict["imgs"].contiguous()  # [B, N, 3, H, W]
        points = batch_inputs_dict["points"]

        def stacked(key: str) -> torch.Tensor:
            return imgs.new_tensor(np.asarray([m[key] for m in batch_input_metas]))  # [B, (N,) 4, 4]

        b, n = imgs.shape[:2]
        x = self.img_backbone(imgs.view(b * n, *imgs.shape[2:]))  # [B*N, C, fH, fW]
        x = x.view(b, n, *x.shape[1:])
        cam_bev = self.vtransform(x, points, stacked("lidar2img"), stacked("cam2img"), stacked("cam2lidar"),
                                  stacked("img_aug_matrix"), stacked("lidar_aug_matrix"), batch_input_metas)
        feats, coords, _ = self.voxelize(points)
        lidar_bev = self.pts_middle_encoder(feats, coords, len(points))
        fused = self.fusion_layer([cam_bev, lidar_bev])
        return self.pts_neck(self.pts_backbone(fused))

    def _forward(self, batch_inputs_dict: dict[str, Any], batch_data_samples: Any = None) -> Any:
        metas = [s.metainfo for s in batch_data_samples] if batch_data_samples else []
        return self.bbox_head(self.extract_feat(batch_inputs_dict, metas))

    def loss(self, batch_inputs_dict: dict[str, Any], batch_data_samples: Any, **kwargs: Any) -> dict:
        feats = self.extract_feat(batch_inputs_dict, [s.metainfo for s in batch_data_samples])
        return self.bbox_head.loss(feats, batch_data_samples)

    def predict(self, batch_inputs_dict: dict[str, Any], batch_data_samples: Any, **kwargs: Any) -> Any:
        feats = self.extract_feat(batch_inputs_dict, [s.metainfo for s in batch_data_samples])
        results = self.bbox_head.predict(feats, batch_data_samples)
        return self.add_pred_to_datasample(batch_data_samples, results)


def cpu_bevfusion_config(cfg: Config) -> dict[str, Any]:
    """An mmdet3d config (as a dict) for `SimDistillCPUBEVFusion` whose BEV maps have `cfg`'s shapes."""
    m, bev = cfg.model, cfg.model.bev
    (xmin, xmax, xstep), (ymin, ymax, ystep), (zmin, zmax, _) = bev.xbound, bev.ybound, bev.zbound
    h, w = bev.grid_size
    pc_range = [xmin, ymin, zmin, xmax, ymax, zmax]
    norm = dict(type="BN", eps=1e-3, momentum=0.01)
    backbone = {k: list(v) if isinstance(v, tuple) else v for k, v in m.backbone.__dict__.items()}
    neck_in = list(m.decoder.out_channels)
    model = dict(
        type="SimDistillCPUBEVFusion",
        data_preprocessor=dict(type="Det3DDataPreprocessor", mean=(IMAGENET_MEAN * 255).tolist(),
                               std=(IMAGENET_STD * 255).tolist(), bgr_to_rgb=False),
        img_backbone=dict(type="SimDistillImageBackbone", **backbone),
        vtransform=dict(type="SimDistillLSS", in_channels=m.backbone.neck_channels, out_channels=m.channels.cam,
                        bev={k: list(v) if isinstance(v, tuple) else v for k, v in bev.__dict__.items()},
                        final_hw=[cfg.augment.final_height, cfg.augment.final_width],
                        feature_stride=m.backbone.feature_stride),
        voxelize_cfg=dict(max_num_points=m.max_points_per_pillar, point_cloud_range=pc_range,
                          voxel_size=[xstep, ystep, zmax - zmin], max_voxels=[h * w, h * w], voxelize_reduce=True),
        pts_middle_encoder=dict(type="SimDistillPillarScatter", in_channels=5, pillar_channels=m.channels.pillar,
                                out_channels=m.channels.lidar, grid_hw=[h, w]),
        fusion_layer=dict(type="SimDistillConvFuser", in_channels=[m.channels.cam, m.channels.lidar],
                          out_channels=m.channels.fused),
        pts_backbone=dict(type="SECOND", in_channels=m.channels.fused, out_channels=neck_in,
                          layer_nums=list(m.decoder.layer_nums), layer_strides=list(m.decoder.layer_strides),
                          norm_cfg=norm, conv_cfg=dict(type="Conv2d", bias=False)),
        pts_neck=dict(type="SECONDFPN", in_channels=neck_in, out_channels=list(m.decoder.upsample_channels),
                      upsample_strides=[s // m.decoder.layer_strides[0] for s in _cumulative(m.decoder.layer_strides)],
                      norm_cfg=norm, upsample_cfg=dict(type="deconv", bias=False), use_conv_for_no_stride=True),
        bbox_head=_centerhead_config(cfg),
    )
    return dict(
        custom_imports=dict(imports=["simdistill.interop.mmdet3d_cpu_bevfusion"], allow_failed_imports=False),
        default_scope="mmdet3d",
        model=model,
    )


def _cumulative(strides: tuple[int, ...]) -> list[int]:
    out, acc = [], 1
    for s in strides:
        acc *= s
        out.append(acc)
    return out


def _centerhead_config(cfg: Config) -> dict[str, Any]:
    """mmdet3d's CenterHead with our head's tasks, branches, targets and decoding (NMS radii squared)."""
    head, bev = cfg.model.head, cfg.model.bev
    (xmin, xmax, xstep), (ymin, ymax, ystep), (zmin, zmax, _) = bev.xbound, bev.ybound, bev.zbound
    h, w = bev.grid_size
    pc_range = [xmin, ymin, zmin, xmax, ymax, zmax]
    return dict(
        type="CenterHead",
        in_channels=sum(cfg.model.decoder.upsample_channels),
        tasks=[dict(num_class=len(t), class_names=list(t)) for t in head.tasks],
        common_heads={name: (size, 2) for name, size in BRANCHES},  # (channels, convs)
        share_conv_channel=head.shared_channels,
        bbox_coder=dict(type="CenterPointBBoxCoder", pc_range=pc_range[:2], post_center_range=[
            xmin - 10, ymin - 10, -10.0, xmax + 10, ymax + 10, 10.0], max_num=head.pre_max_size,
            score_threshold=head.score_threshold, out_size_factor=1, voxel_size=[xstep, ystep], code_size=9),
        separate_head=dict(type="SeparateHead", init_bias=-2.19, final_kernel=3),
        loss_cls=dict(type="mmdet.GaussianFocalLoss", reduction="mean"),
        loss_bbox=dict(type="mmdet.L1Loss", reduction="mean", loss_weight=head.loss_bbox_weight),
        norm_bbox=True,
        train_cfg=dict(grid_size=[w, h, 1], voxel_size=[xstep, ystep, zmax - zmin], out_size_factor=1,
                       dense_reg=1, gaussian_overlap=head.gaussian_overlap, max_objs=head.max_objs,
                       min_radius=head.min_radius, code_weights=list(head.code_weights),
                       point_cloud_range=pc_range),
        test_cfg=dict(post_center_limit_range=[xmin - 10, ymin - 10, -10.0, xmax + 10, ymax + 10, 10.0],
                      max_per_img=head.max_detections, max_pool_nms=False,
                      min_radius=[r * r for r in head.nms_radius],  # mmdet3d compares squared distances
                      score_threshold=head.score_threshold, out_size_factor=1, voxel_size=[xstep, ystep],
                      nms_type="circle", pre_max_size=head.pre_max_size, post_max_size=head.max_detections,
                      nms_thr=0.2),
    )
