"""The BEVFusion-style LiDAR-camera teacher (frozen and cached by export-teacher)."""

from __future__ import annotations

from torch import nn

from simdistill.config import ModelConfig
from simdistill.errors import DataError
from simdistill.models.backbone import ImageBackbone, image_features
from simdistill.models.decoder import BEVDecoder
from simdistill.models.fuser import ConvFuser
from simdistill.models.head import CenterHead
from simdistill.models.lidar import PillarEncoder
from simdistill.models.lss import LSSTransform
from simdistill.models.outputs import BEVOutputs
from simdistill.pipeline.sample import Batch


class Teacher(nn.Module):
    """images + calibration (+ the points' sparse depth image) -> backbone/FPN -> (Depth)LSS -> cam_bev;
    points -> pillars -> lidar_bev; ConvFuser([cam_bev, lidar_bev]) -> fused_bev -> SECOND + FPN -> CenterHead."""

    uses_lidar = True  # forward reads batch.points

    def __init__(self, cfg: ModelConfig, final_hw: tuple[int, int]) -> None:
        super().__init__()
        self.cfg = cfg
        self.final_hw = tuple(final_hw)
        ch = cfg.channels
        self.backbone = ImageBackbone(cfg.backbone)
        self.vtransform = LSSTransform(
            self.backbone.out_channels, ch.cam, cfg.bev,
            final_hw=self.final_hw, feature_stride=cfg.backbone.feature_stride, depth_input=cfg.teacher_depth_input,
        )
        self.lidar = PillarEncoder(
            cfg.bev, pillar_channels=ch.pillar, out_channels=ch.lidar, max_points_per_pillar=cfg.max_points_per_pillar
        )
        self.fuser = ConvFuser([ch.cam, ch.lidar], ch.fused)
        self.decoder = BEVDecoder(ch.fused, cfg.decoder)
        self.head = CenterHead(self.decoder.out_channels, cfg.head, cfg.bev)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The image backbone and the view transform (what the gradient-norm diagnostics look at)."""
        return [*self.backbone.parameters(), *self.vtransform.parameters()]

    def forward(self, batch: Batch) -> BEVOutputs:
        b = batch.batch_size
        if len(batch.points) != b:
            raise DataError(
                f"the teacher needs one LiDAR point cloud per sample, got {len(batch.points)} for a batch of {b}; "
                "build the batch with points (a camera-only batch is for the student)"
            )
        feats = image_features(self.backbone, batch.images, self.final_hw)  # [B*N, C_neck, fH, fW]
        cam_bev = self.vtransform(feats, batch)  # [B, C_cam, H, W]; lifted with the points' depth if configured
        device = cam_bev.device
        lidar_bev = self.lidar([p.to(device) for p in batch.points])  # [B, C_lidar, H, W]
        fused_bev = self.fuser([cam_bev, lidar_bev])  # [B, C_fused, H, W]
        heatmap, boxes = self.head(self.decoder(fused_bev))
        return BEVOutputs(cam_bev=cam_bev, fused_bev=fused_bev, heatmap=heatmap, boxes=boxes, lidar_bev=lidar_bev)
