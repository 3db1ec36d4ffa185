"""`LoadCachedTeacherTargets`: an mmdetection3d 1.x pipeline transform that attaches a sample's cached teacher
targets and applies that view's stored augmentation, so an mmdet3d student trains on the inputs the targets
were made from.

It takes the place of BEVFusion's random augmentations (projects/BEVFusion `ImageAug3D`,
`BEVFusionGlobalRotScaleTrans`, `BEVFusionRandomFlip3D`) and writes the keys they write, in their layout:

- `img`: list of N_cam float32 [H, W, 3] images on the 0-255 scale (the data preprocessor normalises them),
  warped from the raw images exactly as the stored view's were (`pipeline.augment.warp_image`, one affine,
  bilinear; a float image is rounded to uint8 first, as `ImageAug3D` does);
- `img_aug_matrix`: list of N_cam float32 4x4 (raw -> augmented pixels, BEVFusion's layout);
- `lidar_aug_matrix`: float32 4x4 raw -> augmented LiDAR frame (a results dict another augmentation
  already changed is refused: the stored view replays on raw inputs only);
- `points` (LiDARPoints or an [P, >=3] array) and `gt_bboxes_3d` (LiDARInstance3DBoxes, whose bottom-centre z moves
  as the gravity centre does under this rotation-about-z, uniform scale and x/y flips; or an [M, 7 or 9] array)
  moved into the augmented LiDAR frame;
- `teacher_targets` ({array name: float32 tensor without the V axis}) and `teacher_view` (the store's view index):
  list both in `Pack3DDetInputs(meta_keys=...)` to reach the model's data samples.

Cameras are matched by name through `results["images"]` (the info file's camera dict) when present, else taken
in `simdistill.config.CAMERA_NAMES` order. The sample is `results["token"]` (mmdet3d 1.x infos carry it); the view
is `view` when given, else one of the sample's stored views drawn with numpy's global generator (mmdet3d's own
random transforms use it too, and mmengine seeds it per worker). Which LiDAR sweeps are loaded stays the
pipeline's; only their frame changes.

The logic is plain numpy/torch over a results dict; the class is registered in mmdet3d's TRANSFORMS registry only
when mmdet3d is importable (`custom_imports=dict(imports=["simdistill.interop.mmdet3d_transforms"])`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from simdistill.config import CAMERA_NAMES
from simdistill.data import CachedTeacherDataset, CachedView
from simdistill.errors import DataError
from simdistill.pipeline.augment import AugParams, image_affine, lidar_aug_matrix, warp_image
from simdistill.pipeline.geometry import transform_boxes, transform_points

__all__ = ["LoadCachedTeacherTargets", "apply_stored_view"]


class LoadCachedTeacherTargets:
    """Attach view `view` (default: a random one) of `results["token"]`'s stored targets and apply its augmentation.

    store / storage_options: the feature store URL and its fsspec options; arrays: the targets to read.
    """

    def __init__(self, store: str, arrays: Sequence[str] = ("cam_bev", "heatmap"), view: int | None = None,
                 storage_options: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.dataset = CachedTeacherDataset(store, arrays=arrays, inputs=False, storage_options=storage_options)
        self.view = view
        if view is not None:
            self.dataset.index(self.dataset.sample_tokens[0], view)  # a view the store lacks fails here, not later

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        return self.transform(results)

    def transform(self, results: dict[str, Any]) -> dict[str, Any]:
        if "token" not in results:
            raise DataError("LoadCachedTeacherTargets needs results['token'] (the nuScenes sample token of mmdet3d "
                            f"1.x info files); this results dict has {', '.join(sorted(results))}")
        k = self.view if self.view is not None else int(np.random.randint(self.dataset.views_per_sample))
        item = self.dataset[self.dataset.index(str(results["token"]), k)]
        return apply_stored_view(results, item, self.dataset.aug_params(item.aug), final_hw=self.dataset.final_hw)

    def __repr__(self) -> str:
        return f"LoadCachedTeacherTargets(store={self.dataset.url}, arrays={self.dataset.arrays}, view={self.view})"


def apply_stored_view(results: dict[str, Any], item: CachedView, params: AugParams, *,
                      final_hw: tuple[int, int]) -> dict[str, Any]:
    """Attach `item`'s targets and apply its augmentation `params` to an mmdet3d results dict, in place (and
    returned): the keys of the module docstring. Refuses a results dict another augmentation already changed."""
    if "img_aug_matrix" in results or not np.allclose(results.get("lidar_aug_matrix", np.eye(4)), np.eye(4)):
        raise DataError("results are already augmented (img_aug_matrix or lidar_aug_matrix set), so the stored view "
                        "cannot be replayed on them; put LoadCachedTeacherTargets in place of ImageAug3D, "
                        "BEVFusionGlobalRotScaleTrans and BEVFusionRandomFlip3D, not after them")
    images = results.get("img")
    if images is not None:
        names = list(results["images"]) if isinstance(results.get("images"), Mapping) else list(CAMERA_NAMES)
        if len(names) != len(images) or any(name not in CAMERA_NAMES for name in names):
            raise DataError(f"results has {len(images)} images of cameras {names}; the store's views have the six "
                            f"cameras {', '.join(CAMERA_NAMES)}")
        cams = [params.cams[CAMERA_NAMES.index(name)] for name in names]
        results["img"] = [_warp(img, cam, final_hw) for img, cam in zip(images, cams)]
        results["img_aug_matrix"] = [item.img_aug_matrix[CAMERA_NAMES.index(name)].numpy() for name in names]
    lidar_aug = lidar_aug_matrix(params)  # [4, 4] float64, what `augment` moves points and boxes with
    if "points" in results:
        results["points"] = _moved_points(results["points"], lidar_aug)
    if "gt_bboxes_3d" in results:
        results["gt_bboxes_3d"] = _moved_boxes(results["gt_bboxes_3d"], lidar_aug)
    results["lidar_aug_matrix"] = item.lidar_aug_matrix.numpy().copy()  # float32 [4, 4]
    results["teacher_targets"] = dict(item.targets)
    results["teacher_view"] = item.index
    return results


def _warp(image: np.ndarray, cam: Any, final_hw: tuple[int, int]) -> np.ndarray:
    """[H_raw, W_raw, 3] (uint8 or 0-255 float) -> float32 [H, W, 3] on the 0-255 scale."""
    raw = np.asarray(image)
    if raw.dtype != np.uint8:
        raw = np.clip(np.rint(raw), 0, 255).astype(np.uint8)
    return warp_image(np.ascontiguousarray(raw), image_affine(cam, final_hw), final_hw).astype(np.float32)


def _moved_points(points: Any, matrix: np.ndarray) -> Any:
    """mmdet3d BasePoints (through `new_point`) or an array [P, >=3]: xyz through the 4x4 `matrix`."""
    if hasattr(points, "tensor") and hasattr(points, "new_point"):
        data = points.tensor.detach().cpu().numpy().copy()  # [P, D]
        data[:, :3] = transform_points(matrix, data[:, :3])
        return points.new_point(torch.from_numpy(data))
    data = np.array(points, copy=True)
    data[:, :3] = transform_points(matrix, data[:, :3])
    return data


def _moved_boxes(boxes: Any, matrix: np.ndarray) -> Any:
    """mmdet3d 3D boxes (through `new_box`) or an array [M, 7 or 9]: moved as `pipeline.geometry.transform_boxes`."""
    if hasattr(boxes, "tensor") and hasattr(boxes, "new_box"):
        data = boxes.tensor.detach().cpu().numpy()  # [M, box_dim]
        return boxes.new_box(torch.from_numpy(transform_boxes(data, matrix)))
    return transform_boxes(np.asarray(boxes), matrix)


try:  # registered for mmdet3d configs where mmdet3d is installed; a plain callable everywhere else
    from mmdet3d.registry import TRANSFORMS
except ImportError:
    TRANSFORMS = None
if TRANSFORMS is not None:
    TRANSFORMS.register_module(module=LoadCachedTeacherTargets)
