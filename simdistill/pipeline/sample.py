"""The data contracts between pipeline, models, store and evaluation.

Frames and conventions (used everywhere, in code and in the store's metadata):
- Boxes are `[M, 9] = (x, y, z, l, w, h, yaw, vx, vy)` in the LiDAR frame: (x, y, z) is the box's
  gravity centre, l is the extent along the heading, w across it, h vertical; yaw is the heading
  angle from the LiDAR x axis, counter-clockwise; (vx, vy) is velocity in m/s in the LiDAR frame.
- Labels index `simdistill.config.CLASS_NAMES`.
- Points are `[P, 5] = (x, y, z, intensity, time_lag)` in the LiDAR frame (time_lag 0 for the key frame).
- Transforms are 4x4 homogeneous matrices named source2target (`camera2lidar`, `lidar2ego`, ...).
- `img_aug_matrix` maps raw-image pixel coordinates to augmented-image pixel coordinates;
  `lidar_aug_matrix` maps raw LiDAR-frame coordinates to augmented LiDAR-frame coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Sample:
    """One nuScenes key frame as loaded from disk (no augmentation)."""

    token: str
    images: np.ndarray  # [N_cam, H_raw, W_raw, 3] uint8 RGB
    cam_intrinsics: np.ndarray  # [N_cam, 3, 3] float64
    camera2lidar: np.ndarray  # [N_cam, 4, 4] float64
    camera2ego: np.ndarray  # [N_cam, 4, 4] float64
    lidar2ego: np.ndarray  # [4, 4] float64
    ego2global: np.ndarray  # [4, 4] float64 (ego pose at the LiDAR key frame)
    sweeps: list[np.ndarray]  # per sweep [P_s, 5] float32 in the key frame's LiDAR frame; sweeps[0] = key frame
    gt_boxes: np.ndarray  # [M, 9] float32, LiDAR frame (see module docstring)
    gt_labels: np.ndarray  # [M] int64
    timestamp: int = 0  # microseconds


@dataclass
class View:
    """An augmented, network-ready view of a Sample: a pure function of (Sample, AugParams)."""

    token: str
    images: np.ndarray  # [N_cam, 3, H, W] float32, normalised
    cam_intrinsics: np.ndarray  # [N_cam, 4, 4] float32 (raw-image intrinsics, padded to 4x4)
    camera2lidar: np.ndarray  # [N_cam, 4, 4] float32 (raw, un-augmented LiDAR frame)
    img_aug_matrix: np.ndarray  # [N_cam, 4, 4] float32
    lidar_aug_matrix: np.ndarray  # [4, 4] float32
    points: np.ndarray  # [P, 5] float32, augmented LiDAR frame
    gt_boxes: np.ndarray  # [M, 9] float32, augmented LiDAR frame
    gt_labels: np.ndarray  # [M] int64
    params: np.ndarray  # [P_aug] float32, the replay vector (AugParams.to_vector())


@dataclass
class Batch:
    """A collated batch of Views, as torch tensors. Models take this, never loose tensor lists."""

    tokens: list[str]
    images: torch.Tensor  # [B, N_cam, 3, H, W]
    cam_intrinsics: torch.Tensor  # [B, N_cam, 4, 4]
    camera2lidar: torch.Tensor  # [B, N_cam, 4, 4]
    img_aug_matrix: torch.Tensor  # [B, N_cam, 4, 4]
    lidar_aug_matrix: torch.Tensor  # [B, 4, 4]
    points: list[torch.Tensor] = field(default_factory=list)  # B x [P_i, 5]; empty for camera-only use
    gt_boxes: list[torch.Tensor] = field(default_factory=list)  # B x [M_i, 9]
    gt_labels: list[torch.Tensor] = field(default_factory=list)  # B x [M_i]

    @property
    def batch_size(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> "Batch":
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=True)

        return Batch(
            tokens=list(self.tokens),
            images=move(self.images),
            cam_intrinsics=move(self.cam_intrinsics),
            camera2lidar=move(self.camera2lidar),
            img_aug_matrix=move(self.img_aug_matrix),
            lidar_aug_matrix=move(self.lidar_aug_matrix),
            points=[move(p) for p in self.points],
            gt_boxes=[move(b) for b in self.gt_boxes],
            gt_labels=[move(lab) for lab in self.gt_labels],
        )

    def select(self, i: int) -> "Batch":
        """View `i` alone, as a batch of one (the same tensors, sliced)."""
        return Batch(
            tokens=[self.tokens[i]],
            images=self.images[i:i + 1],
            cam_intrinsics=self.cam_intrinsics[i:i + 1],
            camera2lidar=self.camera2lidar[i:i + 1],
            img_aug_matrix=self.img_aug_matrix[i:i + 1],
            lidar_aug_matrix=self.lidar_aug_matrix[i:i + 1],
            points=self.points[i:i + 1],
            gt_boxes=self.gt_boxes[i:i + 1],
            gt_labels=self.gt_labels[i:i + 1],
        )

    def without_points(self) -> "Batch":
        """The same batch with no LiDAR: what a camera-only student sees at inference."""
        return Batch(
            tokens=self.tokens,
            images=self.images,
            cam_intrinsics=self.cam_intrinsics,
            camera2lidar=self.camera2lidar,
            img_aug_matrix=self.img_aug_matrix,
            lidar_aug_matrix=self.lidar_aug_matrix,
            points=[],
            gt_boxes=self.gt_boxes,
            gt_labels=self.gt_labels,
        )


def collate(views: list[View]) -> Batch:
    """Stack Views into a Batch (points and boxes stay per-sample lists)."""

    def stack(name: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([getattr(v, name) for v in views]))

    return Batch(
        tokens=[v.token for v in views],
        images=stack("images"),
        cam_intrinsics=stack("cam_intrinsics"),
        camera2lidar=stack("camera2lidar"),
        img_aug_matrix=stack("img_aug_matrix"),
        lidar_aug_matrix=stack("lidar_aug_matrix"),
        points=[torch.from_numpy(v.points) for v in views],
        gt_boxes=[torch.from_numpy(v.gt_boxes) for v in views],
        gt_labels=[torch.from_numpy(v.gt_labels) for v in views],
    )


class ReopenedAfterPickling:
    """A data source that drops its loaded tables when pickled (to a Dask worker, say) and reloads them lazily
    there, once per process. Subclasses name the attributes in `_transient`."""

    _transient: tuple[str, ...] = ()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for name in self._transient:
            state[name] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
