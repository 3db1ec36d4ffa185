"""A simdistill `Batch` -> the inputs an mmdetection3d 1.x BEVFusion-layout detector's `extract_feat` takes.

mmdet3d's BEVFusion (projects/BEVFusion) reads, per sample, these `metainfo` keys in `extract_feat`:
`lidar2img`, `cam2img`, `cam2lidar`, `img_aug_matrix`, `lidar_aug_matrix` (all 4x4, one per camera except
the last), and `batch_inputs_dict = {"imgs": [B, N, 3, H, W], "points": B x [P, 5]}`. Our Batch carries
the same quantities under the same conventions (raw-image intrinsics, raw LiDAR frame for the camera
extrinsics, augmented LiDAR frame for points, the two augmentation matrices), so the conversion is a
renaming plus `lidar2cam = inv(cam2lidar)` and `lidar2img = cam2img @ lidar2cam`.

Images: our pipeline already normalises with the ImageNet mean/std in RGB order, which is what
BEVFusion's `Det3DDataPreprocessor` does (mean 123.675/116.28/103.53, std 58.395/57.12/57.375 on 0-255
RGB), so the detector's data preprocessor is bypassed; `check_preprocessor` refuses a config whose
preprocessor normalises differently, because its features would then not be the teacher's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from simdistill.errors import ConfigError
from simdistill.pipeline.augment import IMAGENET_MEAN, IMAGENET_STD
from simdistill.pipeline.sample import Batch

__all__ = ["batch_to_bevfusion_inputs", "check_preprocessor"]


def batch_to_bevfusion_inputs(batch: Batch) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(batch_inputs_dict, batch_input_metas) for `model.extract_feat`; tensors stay on the batch's device."""
    if len(batch.points) != batch.batch_size:
        raise ConfigError("an mmdet3d BEVFusion teacher needs LiDAR points for every sample; build the batch "
                          "with points (export-teacher does)")
    cam2img = batch.cam_intrinsics.detach().double().cpu().numpy()  # [B, N, 4, 4]
    cam2lidar = batch.camera2lidar.detach().double().cpu().numpy()  # [B, N, 4, 4]
    lidar2cam = np.linalg.inv(cam2lidar)
    lidar2img = cam2img @ lidar2cam
    img_aug = batch.img_aug_matrix.detach().double().cpu().numpy()  # [B, N, 4, 4]
    lidar_aug = batch.lidar_aug_matrix.detach().double().cpu().numpy()  # [B, 4, 4]
    h, w = batch.images.shape[-2:]
    metas = [
        {
            "sample_idx": token,
            "token": token,
            "cam2img": cam2img[b],
            "cam2lidar": cam2lidar[b],
            "lidar2cam": lidar2cam[b],
            "lidar2img": lidar2img[b],
            "img_aug_matrix": img_aug[b],
            "lidar_aug_matrix": lidar_aug[b],
            "img_shape": (int(h), int(w)),
            "pad_shape": (int(h), int(w)),
            "num_pts_feats": int(batch.points[b].shape[1]),
        }
        for b, token in enumerate(batch.tokens)
    ]
    inputs = {"imgs": batch.images.contiguous(), "points": [p.float().contiguous() for p in batch.points]}
    return inputs, metas


def check_preprocessor(data_preprocessor: Mapping[str, Any] | None) -> None:
    """ConfigError unless the detector's image normalisation equals ours (ImageNet, RGB), see module docstring."""
    if not data_preprocessor:
        return
    mean, std = data_preprocessor.get("mean"), data_preprocessor.get("std")
    if mean is None and std is None:
        return
    ours_mean, ours_std = IMAGENET_MEAN * 255.0, IMAGENET_STD * 255.0
    if (mean is None or std is None or len(mean) != 3 or len(std) != 3
            or not np.allclose(mean, ours_mean, atol=1e-2) or not np.allclose(std, ours_std, atol=1e-2)
            or data_preprocessor.get("bgr_to_rgb", False)):
        raise ConfigError(
            f"the teacher's data_preprocessor normalises images with mean={mean}, std={std}, "
            f"bgr_to_rgb={data_preprocessor.get('bgr_to_rgb', False)}; simdistill feeds RGB images normalised with "
            f"mean={ours_mean.round(3).tolist()}, std={ours_std.round(3).tolist()}: use a teacher trained that way"
        )
