"""Augmentation with recorded parameters: `draw_params` is the only random part, `augment` is pure.

Every random draw BEVFusion's nuScenes pipeline makes (ImageAug3D per camera, GlobalRotScaleTrans,
RandomFlip3D, sweep selection) is an `AugParams` field; `AugParams.to_vector()` is what the feature
store keeps per view, and `augment(sample, AugParams.from_vector(...), policy)` rebuilds the view
bit-for-bit (DESIGN.md §4). Every float a draw produces is rounded to float32 first, so the stored
float32 vector replays the very same numbers.

Image geometry uses OpenCV's pixel convention (pixel centres at integer coordinates). One 3x3 affine
per camera, resize -> crop -> horizontal flip -> rotation about the image centre, both warps the
image (`cv2.warpAffine`) and becomes `img_aug_matrix`, so a projected point lands exactly where the
image shows it. `img_aug_matrix` has BEVFusion's layout: it acts on (u, v, depth, 1) AFTER the
perspective division, rotation/scale in [:2, :2] and translation in [:2, 3].

BEV: p' = F @ (s * (R(rot) @ p + t)), F the x/y flips (GlobalRotScaleTrans, then RandomFlip3D).
`bev_flip_x` negates x (mmdet3d's "vertical" flip), `bev_flip_y` negates y ("horizontal").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from simdistill.config import CAMERA_NAMES, AugmentConfig, Config
from simdistill.errors import DataError
from simdistill.pipeline.geometry import rot_z, transform_boxes, transform_points
from simdistill.pipeline.sample import Sample, View

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

_CAM_FIELDS = ("resize", "crop_x", "crop_y", "flip", "rot_deg")
_BEV_FIELDS = ("rot", "scale", "tx", "ty", "tz", "flip_x", "flip_y")
SEED_RANGE = 1 << 24  # seeds stay exactly representable in the float32 vector


def _f32(x: float) -> float:
    """Round to the nearest float32 so the float32 replay vector reproduces the value exactly."""
    return float(np.float32(x))


@dataclass(frozen=True)
class CameraAug:
    """ImageAug3D's draws for one camera."""

    resize: float  # scale from the raw image
    crop_x: int  # left edge of the crop in the resized image [px]
    crop_y: int  # top edge of the crop in the resized image [px] (negative = padding on top)
    flip: bool  # horizontal flip after the crop
    rot_deg: float  # counter-clockwise rotation about the image centre, after the flip [deg]


@dataclass(frozen=True)
class AugParams:
    """Every random choice that makes one augmented view; `augment` is a pure function of it."""

    cams: tuple[CameraAug, ...]
    bev_rot: float = 0.0  # rotation about z [rad], counter-clockwise
    bev_scale: float = 1.0
    bev_tx: float = 0.0  # translation before scaling [m]
    bev_ty: float = 0.0
    bev_tz: float = 0.0
    bev_flip_x: bool = False  # negate x (after rot/scale/translation)
    bev_flip_y: bool = False  # negate y
    sweeps: tuple[bool, ...] = (True,)  # which loaded sweeps are merged; sweeps[0] is the key frame
    seed: int = 0  # point subsampling seed, in [0, 2**24)

    @staticmethod
    def names(n_cams: int, n_sweeps: int) -> list[str]:
        """The layout of `to_vector()` (stored in the feature store's attributes)."""
        cams = [f"cam{i}.{f}" for i in range(n_cams) for f in _CAM_FIELDS]
        return cams + [f"bev.{f}" for f in _BEV_FIELDS] + [f"sweep{j}" for j in range(n_sweeps)] + ["seed"]

    @staticmethod
    def aug_dim(n_cams: int, n_sweeps: int) -> int:
        return len(_CAM_FIELDS) * n_cams + len(_BEV_FIELDS) + n_sweeps + 1

    def to_vector(self) -> np.ndarray:
        """float32 [aug_dim] in the `names()` order."""
        values: list[float] = []
        for c in self.cams:
            values += [c.resize, c.crop_x, c.crop_y, float(c.flip), c.rot_deg]
        values += [self.bev_rot, self.bev_scale, self.bev_tx, self.bev_ty, self.bev_tz]
        values += [float(self.bev_flip_x), float(self.bev_flip_y)]
        values += [float(s) for s in self.sweeps] + [self.seed]
        return np.asarray(values, dtype=np.float32)

    @classmethod
    def from_vector(cls, vec: np.ndarray, n_cams: int, n_sweeps: int) -> "AugParams":
        v = np.asarray(vec, dtype=np.float32).reshape(-1)
        expected = cls.aug_dim(n_cams, n_sweeps)
        if v.size != expected:
            raise DataError(
                f"augmentation vector has {v.size} values but {n_cams} cameras and {n_sweeps} sweeps need {expected}; "
                "replay it with the camera and sweep counts it was recorded with"
            )
        vals = [float(x) for x in v]
        cams = []
        for i in range(n_cams):
            r, cx, cy, fl, rot = vals[5 * i : 5 * i + 5]
            cams.append(CameraAug(resize=r, crop_x=int(cx), crop_y=int(cy), flip=fl > 0.5, rot_deg=rot))
        b = 5 * n_cams
        rot, scale, tx, ty, tz, fx, fy = vals[b : b + 7]
        sweeps = tuple(x > 0.5 for x in vals[b + 7 : b + 7 + n_sweeps])
        return cls(cams=tuple(cams), bev_rot=rot, bev_scale=scale, bev_tx=tx, bev_ty=ty, bev_tz=tz,
                   bev_flip_x=fx > 0.5, bev_flip_y=fy > 0.5, sweeps=sweeps, seed=int(vals[-1]))

    def replace(self, **changes: object) -> "AugParams":
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------------------------------
# Drawing (the only random part)


def _camera_params(
    rng: np.random.Generator | None, policy: AugmentConfig, raw_hw: tuple[int, int]
) -> CameraAug:
    """ImageAug3D.sample_augmentation; rng=None gives the deterministic test-time view."""
    raw_h, raw_w = raw_hw
    f_h, f_w = policy.final_height, policy.final_width
    if rng is None:
        resize = policy.test_resize if policy.test_resize > 0 else float(np.mean(policy.resize_lim))
        resize = _f32(resize)
        new_w, new_h = int(raw_w * resize), int(raw_h * resize)
        crop_y = int((1 - float(np.mean(policy.bot_pct_lim))) * new_h) - f_h
        crop_x = int(max(0, new_w - f_w) / 2)
        return CameraAug(resize=resize, crop_x=crop_x, crop_y=crop_y, flip=False, rot_deg=0.0)
    resize = _f32(rng.uniform(*policy.resize_lim))
    new_w, new_h = int(raw_w * resize), int(raw_h * resize)
    crop_y = int((1 - rng.uniform(*policy.bot_pct_lim)) * new_h) - f_h
    crop_x = int(rng.uniform(0, max(0, new_w - f_w)))
    flip = bool(policy.rand_flip and rng.integers(0, 2) == 1)
    rot_deg = _f32(rng.uniform(*policy.rot_lim_deg))
    return CameraAug(resize=resize, crop_x=crop_x, crop_y=crop_y, flip=flip, rot_deg=rot_deg)


def draw_params(
    rng: np.random.Generator,
    policy: AugmentConfig,
    *,
    raw_hw: tuple[int, int],
    n_cams: int = 6,
    n_sweeps: int = 1,
    train: bool,
) -> AugParams:
    """Draw one view's parameters (BEVFusion ImageAug3D / GlobalRotScaleTrans / RandomFlip3D semantics).

    train=False returns the deterministic test-time view (no rng use): resize = test_resize or
    mean(resize_lim), horizontal centre crop, bottom crop at mean(bot_pct_lim), no flip or rotation,
    identity BEV, every sweep merged. Training merges every loaded sweep as well (the sweep flags
    exist so a replayed view names exactly the sweeps it used).
    """
    if not train:
        cam = _camera_params(None, policy, raw_hw)
        return AugParams(cams=(cam,) * n_cams, sweeps=(True,) * n_sweeps, seed=0)
    cams = tuple(_camera_params(rng, policy, raw_hw) for _ in range(n_cams))
    scale = _f32(rng.uniform(*policy.bev_scale_lim))
    rot = _f32(rng.uniform(*policy.bev_rot_lim))
    tx, ty, tz = (_f32(rng.normal(0.0, std)) if std > 0 else 0.0 for std in policy.bev_trans_std)
    flip_y = bool(policy.bev_flip and rng.integers(0, 2) == 1)  # mmdet3d "horizontal" first
    flip_x = bool(policy.bev_flip and rng.integers(0, 2) == 1)
    seed = int(rng.integers(0, SEED_RANGE))
    return AugParams(
        cams=cams,
        bev_rot=rot,
        bev_scale=scale,
        bev_tx=tx,
        bev_ty=ty,
        bev_tz=tz,
        bev_flip_x=flip_x,
        bev_flip_y=flip_y,
        sweeps=(True,) * n_sweeps,
        seed=seed,
    )


# --------------------------------------------------------------------------------------------------
# Applying (pure)


def image_affine(cam: CameraAug, final_hw: tuple[int, int]) -> np.ndarray:
    """3x3 raw-pixel -> augmented-pixel affine: resize, crop, flip, rotate about the output centre."""
    f_h, f_w = final_hw
    scale_crop = np.array([[cam.resize, 0.0, -cam.crop_x], [0.0, cam.resize, -cam.crop_y], [0.0, 0.0, 1.0]])
    flip = np.array([[-1.0, 0.0, f_w - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) if cam.flip else np.eye(3)
    theta = np.deg2rad(cam.rot_deg)
    c, s = np.cos(theta), np.sin(theta)
    centre = np.array([(f_w - 1) / 2.0, (f_h - 1) / 2.0])
    rot = np.eye(3)
    rot[:2, :2] = [[c, s], [-s, c]]  # counter-clockwise on screen (y points down), as PIL's rotate
    rot[:2, 2] = centre - rot[:2, :2] @ centre
    return rot @ flip @ scale_crop


def img_aug_matrix(cam: CameraAug, final_hw: tuple[int, int]) -> np.ndarray:
    """The 4x4 `img_aug_matrix` (BEVFusion layout) of one camera, float64."""
    aff = image_affine(cam, final_hw)
    mat = np.eye(4)
    mat[:2, :2] = aff[:2, :2]
    mat[:2, 3] = aff[:2, 2]
    return mat


def lidar_aug_matrix(params: AugParams) -> np.ndarray:
    """4x4 raw LiDAR -> augmented LiDAR frame, float64."""
    mat = np.eye(4)
    mat[:3, :3] = params.bev_scale * rot_z(params.bev_rot)
    mat[:3, 3] = params.bev_scale * np.array([params.bev_tx, params.bev_ty, params.bev_tz])
    flip = np.diag([-1.0 if params.bev_flip_x else 1.0, -1.0 if params.bev_flip_y else 1.0, 1.0, 1.0])
    return flip @ mat


def warp_image(image: np.ndarray, affine: np.ndarray, final_hw: tuple[int, int]) -> np.ndarray:
    """uint8 [H_raw, W_raw, 3] -> uint8 [H, W, 3] through one raw -> augmented pixel affine (zeros outside); public
    so that a foreign pipeline (the mmdet3d transform in `interop`) warps exactly as a stored view was."""
    f_h, f_w = final_hw
    return cv2.warpAffine(
        image, affine[:2], (f_w, f_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def normalize_image(warped: np.ndarray) -> np.ndarray:
    """uint8 (or 0-255 float) [H, W, 3] RGB -> ImageNet-normalised float32 [3, H, W] (what the networks take)."""
    out = (warped.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def merge_sweeps(sample: Sample, params: AugParams, *, max_points: int = 0) -> np.ndarray:
    """Concatenate the flagged sweeps (raw LiDAR frame) and subsample to max_points with params.seed."""
    chosen = [pts for j, pts in enumerate(sample.sweeps) if j < len(params.sweeps) and params.sweeps[j]]
    points = np.concatenate(chosen, axis=0) if chosen else np.zeros((0, 5), dtype=np.float32)
    if max_points > 0 and len(points) > max_points:
        keep = np.random.default_rng(params.seed).choice(len(points), size=max_points, replace=False)
        points = points[np.sort(keep)]
    return points.astype(np.float32, copy=False)


def augment(sample: Sample, params: AugParams, policy: AugmentConfig, *, max_points: int = 0) -> View:
    """The augmented view of `sample` under `params`: a pure, bit-for-bit reproducible function."""
    n_cam = sample.images.shape[0]
    if len(params.cams) != n_cam:
        raise DataError(
            f"augmentation params describe {len(params.cams)} cameras but sample {sample.token} has {n_cam}; "
            "draw params with n_cams matching the loaded cameras"
        )
    final_hw = (policy.final_height, policy.final_width)
    images = np.empty((n_cam, 3, *final_hw), dtype=np.float32)  # [N, 3, H, W]
    aug_mats = np.empty((n_cam, 4, 4), dtype=np.float32)
    for k, cam in enumerate(params.cams):
        aff = image_affine(cam, final_hw)
        images[k] = normalize_image(warp_image(sample.images[k], aff, final_hw))  # [3, H, W]
        aug_mats[k] = img_aug_matrix(cam, final_hw)

    bev = lidar_aug_matrix(params)
    points = merge_sweeps(sample, params, max_points=max_points)  # [P, 5], a fresh array
    points[:, :3] = transform_points(bev, points[:, :3])
    boxes = transform_boxes(sample.gt_boxes.astype(np.float32), bev)  # [M, 9]

    intrinsics = np.tile(np.eye(4, dtype=np.float32), (n_cam, 1, 1))
    intrinsics[:, :3, :3] = sample.cam_intrinsics
    return View(
        token=sample.token,
        images=images,
        cam_intrinsics=intrinsics,
        camera2lidar=sample.camera2lidar.astype(np.float32),
        img_aug_matrix=aug_mats,
        lidar_aug_matrix=bev.astype(np.float32),
        points=points,
        gt_boxes=boxes,
        gt_labels=sample.gt_labels.astype(np.int64),
        params=params.to_vector(),
    )


# --------------------------------------------------------------------------------------------------
# Convenience over a data source


class SampleSource(Protocol):
    """What `ViewBuilder` needs from a loader (e.g. `NuScenesSource`)."""

    sweeps: int

    def __len__(self) -> int: ...

    def load(self, index: int) -> Sample: ...

    def image_hw(self, index: int) -> tuple[int, int]: ...


class ViewBuilder:
    """Draw and build augmented views of a source's samples under one policy."""

    def __init__(self, source: SampleSource, policy: AugmentConfig, *, train: bool, max_points: int = 0) -> None:
        """`max_points` > 0 subsamples each view's merged points to that many (seeded by the view's params)."""
        self.source = source
        self.policy = policy
        self.train = train
        self.max_points = max_points
        self.n_cams = len(CAMERA_NAMES)
        self.n_sweeps = source.sweeps

    @classmethod
    def for_config(cls, source: SampleSource, cfg: Config, *, train: bool) -> "ViewBuilder":
        """The builder a run of `cfg` uses: its augmentation policy and `data.max_points`."""
        return cls(source, cfg.augment, train=train, max_points=cfg.data.max_points)

    def __len__(self) -> int:
        return len(self.source)

    @property
    def aug_dim(self) -> int:
        return AugParams.aug_dim(self.n_cams, self.n_sweeps)

    def draw(self, index: int, rng: np.random.Generator) -> AugParams:
        return draw_params(
            rng,
            self.policy,
            raw_hw=self.source.image_hw(index),
            n_cams=self.n_cams,
            n_sweeps=self.n_sweeps,
            train=self.train,
        )

    def test_params(self, index: int) -> AugParams:
        """The deterministic test-time view of sample `index` (whatever `train` says)."""
        return draw_params(
            np.random.default_rng(0),
            self.policy,
            raw_hw=self.source.image_hw(index),
            n_cams=self.n_cams,
            n_sweeps=self.n_sweeps,
            train=False,
        )

    def build(self, index: int, params: AugParams | np.ndarray) -> View:
        """The view of sample `index`; `params` may be an AugParams or a stored replay vector."""
        if not isinstance(params, AugParams):
            params = AugParams.from_vector(params, self.n_cams, self.n_sweeps)
        return augment(self.source.load(index), params, self.policy, max_points=self.max_points)
