"""Camera-only students: SimDistill (two lifts, GCM, adapter) and the BEVFusion-C baseline.

Neither reads `batch.points`: the deployed student sees images and calibration only. (`model.student_depth_input`
builds the released code's student instead, whose lifts read LiDAR depth at training and test: not camera-only.)
"""

from __future__ import annotations

from torch import nn

from simdistill.config import STUDENT_VARIANTS, ModelConfig
from simdistill.errors import ConfigError
from simdistill.models.backbone import ImageBackbone, conv_bn_relu, image_features
from simdistill.models.decoder import BEVDecoder
from simdistill.models.fuser import ConvFuser
from simdistill.models.gcm import GCM
from simdistill.models.head import CenterHead
from simdistill.models.lss import LSSTransform
from simdistill.models.outputs import BEVOutputs
from simdistill.pipeline.sample import Batch


class Student(nn.Module):
    """variant "simdistill": image features -> lift 1 (+ GCM) = sim_lidar_bev and lift 2 = cam_bev;
    lidar_bev = adapter(sim_lidar_bev) (C_cam -> C_lidar, compared with the teacher by CMD);
    fused_bev = ConvFuser([sim_lidar_bev, cam_bev]); then the teacher's decoder + head architecture.
    With `model.shared_lift` one view transform serves both branches (the official code calls one transform
    twice on the same input), so they differ only by the GCM and the adapter.
    variant "baseline" (BEVFusion-C): one lift -> cam_bev -> ConvFuser([cam_bev]) -> decoder -> head.
    """

    uses_lidar = False  # forward never reads batch.points (unless model.student_depth_input: not camera-only)

    def __init__(self, cfg: ModelConfig, final_hw: tuple[int, int], *, variant: str = "simdistill") -> None:
        super().__init__()
        if variant not in STUDENT_VARIANTS:
            raise ConfigError(f"student variant '{variant}' is unknown; use one of {', '.join(STUDENT_VARIANTS)}")
        self.cfg = cfg
        self.variant = variant
        self.final_hw = tuple(final_hw)
        self.uses_lidar = cfg.student_depth_input
        ch = cfg.channels
        self.backbone = ImageBackbone(cfg.backbone)

        def lift() -> LSSTransform:
            return LSSTransform(
                self.backbone.out_channels, ch.cam, cfg.bev, final_hw=self.final_hw,
                feature_stride=cfg.backbone.feature_stride, depth_input=cfg.student_depth_input,
            )

        self.camera_lift = lift()  # -> cam_bev (and, with shared_lift, sim_lidar_bev before the GCM)
        self.sim_lidar_lift: LSSTransform | None = None
        self.gcm: GCM | None = None
        self.adapter: nn.Module | None = None
        if variant == "simdistill":
            if not cfg.shared_lift:
                self.sim_lidar_lift = lift()  # -> sim_lidar_bev
            if cfg.gcm.enabled:
                self.gcm = GCM(ch.cam, cfg.gcm, cfg.bev.grid_size, cell_size=cfg.bev.xbound[2])
            self.adapter = conv_bn_relu(ch.cam, ch.lidar)
            self.fuser = ConvFuser([ch.cam, ch.cam], ch.fused)
        else:
            self.fuser = ConvFuser([ch.cam], ch.fused)
        self.decoder = BEVDecoder(ch.fused, cfg.decoder)
        self.head = CenterHead(self.decoder.out_channels, cfg.head, cfg.bev)

    @property
    def two_branches(self) -> bool:
        return self.adapter is not None

    def shared_parameters(self) -> list[nn.Parameter]:
        """The image backbone and the view transform(s): every loss term's gradient reaches them."""
        modules = [self.backbone, self.camera_lift] + ([self.sim_lidar_lift] if self.sim_lidar_lift else [])
        return [p for m in modules for p in m.parameters()]

    def forward(self, batch: Batch) -> BEVOutputs:
        feats = image_features(self.backbone, batch.images, self.final_hw)  # [B*N, C_neck, fH, fW]
        geometry = self.camera_lift.geometry(batch)  # [B, N, D, fH, fW, 3], shared by both lifts
        camera = self.camera_lift.lift_splat(feats, batch, geometry=geometry)
        cam_bev = camera.bev  # [B, C_cam, H, W]
        if not self.two_branches:
            fused_bev = self.fuser([cam_bev])  # [B, C_fused, H, W]
            heatmap, boxes = self.head(self.decoder(fused_bev))
            return BEVOutputs(cam_bev=cam_bev, fused_bev=fused_bev, heatmap=heatmap, boxes=boxes,
                              depths=(camera.depth,))
        depths = (camera.depth,)
        sim_lidar_bev = cam_bev
        if self.sim_lidar_lift is not None:
            sim = self.sim_lidar_lift.lift_splat(feats, batch, geometry=geometry)
            sim_lidar_bev, depths = sim.bev, (camera.depth, sim.depth)  # [B, C_cam, H, W]
        if self.gcm is not None:
            sim_lidar_bev = self.gcm(sim_lidar_bev)
        fused_bev = self.fuser([sim_lidar_bev, cam_bev])  # [B, C_fused, H, W]
        heatmap, boxes = self.head(self.decoder(fused_bev))
        return BEVOutputs(cam_bev=cam_bev, fused_bev=fused_bev, heatmap=heatmap, boxes=boxes,
                          lidar_bev=self.adapter(sim_lidar_bev), sim_lidar_bev=sim_lidar_bev, depths=depths)
