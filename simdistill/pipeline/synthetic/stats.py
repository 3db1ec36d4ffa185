"""How large a world's objects are at the network's input: per-class heights in feature pixels.

Used to size the synthetic benchmark (the bench config): a camera detector needs objects a few feature pixels
tall. Works on any nuScenes dataroot the devkit loads, real or synthetic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simdistill.config import CAMERA_NAMES, CLASS_NAMES, AugmentConfig
from simdistill.pipeline.augment import draw_params, image_affine
from simdistill.pipeline.nuscenes_files import load_nuscenes, split_sample_tokens


def feature_heights(
    dataroot: str | Path, version: str, split: str, augment: AugmentConfig, *, feature_stride: int
) -> dict[str, np.ndarray]:
    """Per detection class, the heights [n] in feature pixels of the boxes the devkit evaluates, as seen in the
    test-time view (resize + crop of `augment`, then / `feature_stride`).

    One height per (box, camera) whose centre lands inside that camera's augmented image; evaluated boxes are
    those with a LiDAR point within the devkit's class range of the ego.
    """
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.utils import category_to_detection_name
    from nuscenes.utils.geometry_utils import view_points

    nusc = load_nuscenes(dataroot, version)
    class_range = config_factory("detection_cvpr_2019").class_range
    final_hw = (augment.final_height, augment.final_width)
    heights: dict[str, list[float]] = {name: [] for name in CLASS_NAMES}
    for token in split_sample_tokens(nusc, split):
        sample = nusc.get("sample", token)
        ego = nusc.get("ego_pose", nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["ego_pose_token"])
        for channel in CAMERA_NAMES:
            sd = nusc.get("sample_data", sample["data"][channel])
            params = draw_params(np.random.default_rng(0), augment, raw_hw=(sd["height"], sd["width"]), train=False)
            affine = image_affine(params.cams[0], final_hw)  # [3, 3] raw pixels -> network input pixels
            _, boxes, intrinsic = nusc.get_sample_data(sd["token"])  # camera frame
            for box in boxes:
                ann = nusc.get("sample_annotation", box.token)
                name = category_to_detection_name(ann["category_name"])
                distance = np.hypot(*(np.array(ann["translation"][:2]) - ego["translation"][:2]))
                if name not in heights or ann["num_lidar_pts"] == 0 or distance > class_range[name]:
                    continue
                points = np.concatenate([box.corners(), box.center[:, None]], axis=1)  # [3, 9]
                if points[2].min() < 0.1:
                    continue
                uv = affine @ np.vstack([view_points(points, intrinsic, normalize=True)[:2], np.ones(9)])  # [3, 9]
                if 0 <= uv[0, 8] < final_hw[1] and 0 <= uv[1, 8] < final_hw[0]:
                    heights[name].append(float(np.ptp(uv[1, :8])) / feature_stride)
    return {name: np.asarray(values) for name, values in heights.items()}
