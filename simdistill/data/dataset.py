"""A map-style torch Dataset over a feature store: item v = stored view v, its replayed inputs and its targets.

    ds = CachedTeacherDataset("teacher.zarr", arrays=("cam_bev", "heatmap"), dataroot="/data/nuscenes")
    item = ds[4]          # item.images [N_cam, 3, H, W], item.targets["cam_bev"] [C_cam, H_bev, W_bev] float32

The inputs are rebuilt by the code export ran (`ViewBuilder.build(sample_index[v], aug[v])`), so they are exactly
the images, calibration, augmentation matrices and GT boxes the teacher saw when it made the targets. With
`inputs=False` no data is read, only the store: the targets, the replay vector and the two augmentation matrices,
for a user whose own pipeline applies the stored augmentation (look a view up with `index(token, view)`).

Safe in DataLoader workers under fork and spawn: the store is opened lazily once per process (the handle is
dropped when pickled and never used across a fork), and the data source reloads its tables after unpickling.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from simdistill.config import CAMERA_NAMES
from simdistill.data.replay import aug_matrices, recorded_config, recorded_sweeps, recorded_view_builder
from simdistill.errors import ConfigError, StoreError
from simdistill.feature_store import SCHEMA, FeatureStoreReader, StoreLayout, StoreLike, open_store, store_url
from simdistill.pipeline.augment import AugParams
from simdistill.pipeline.sample import ReopenedAfterPickling

TARGET_ARRAYS: tuple[str, ...] = tuple(name for name, spec in SCHEMA.items() if spec.is_feature)
"""What `arrays` may name: the teacher's maps (cam_bev, lidar_bev, fused_bev, heatmap, boxes, fg_mask)."""

DEFAULT_ARRAYS: tuple[str, ...] = ("cam_bev", "fused_bev", "heatmap")
INDEX_ARRAYS: tuple[str, ...] = ("aug", "sample_index", "view")


@dataclass
class CachedView:
    """One stored view: its ids, its teacher targets, and (unless targets-only) its replayed network inputs.

    Frames follow `simdistill.pipeline.sample`: boxes and points in the augmented LiDAR frame, intrinsics of the raw
    image, camera2lidar to the raw (un-augmented) LiDAR frame.
    """

    index: int  # v, the store's view index
    sample_token: str
    sample_index: int  # which sample (position in the store's dataset.sample_tokens)
    view: int  # which of its sample's views_per_sample views
    aug: torch.Tensor  # [P] float32, the replay vector (store attrs `aug_layout`)
    img_aug_matrix: torch.Tensor  # [N_cam, 4, 4] raw -> augmented image pixels
    lidar_aug_matrix: torch.Tensor  # [4, 4] raw -> augmented LiDAR frame
    targets: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> the stored view without V, float32
    images: torch.Tensor | None = None  # [N_cam, 3, H, W] ImageNet-normalised RGB; None when targets-only
    cam_intrinsics: torch.Tensor | None = None  # [N_cam, 4, 4]
    camera2lidar: torch.Tensor | None = None  # [N_cam, 4, 4]
    gt_boxes: torch.Tensor | None = None  # [M, 9] (x, y, z, l, w, h, yaw, vx, vy)
    gt_labels: torch.Tensor | None = None  # [M] int64, indices into the store's class_names
    points: torch.Tensor | None = None  # [P_pts, 5] only with points=True


class CachedTeacherDataset(Dataset, ReopenedAfterPickling):
    """Map-style dataset of every view of a feature store (see the module docstring).

    arrays: the targets to read (TARGET_ARRAYS); read what your losses use, each costs I/O per item.
    dataroot / infos: where this machine keeps the data the store was exported from (default: the recorded ones).
    inputs: replay the network inputs (needs the data); False = targets only. points: also return LiDAR points.
    expect_grid / expect_channels: refuse a store whose (H, W) grid or channels ({"cam_bev": 80}) differ.
    """

    _transient = ("_reader",)

    def __init__(self, store: StoreLike, *, arrays: Sequence[str] = DEFAULT_ARRAYS,
                 dataroot: str | Path | None = None, infos: str | Path | None = None, inputs: bool = True,
                 points: bool = False, expect_grid: tuple[int, int] | None = None,
                 expect_channels: Mapping[str, int] | None = None,
                 storage_options: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.location = store_url(store, storage_options)
        self.url = str(self.location)
        self.arrays = _checked_names(arrays)
        self.inputs, self.points = inputs, points
        reader = open_store(self.location, arrays=self.arrays)
        self._reader: FeatureStoreReader | None = reader
        self._reader_pid = os.getpid()
        attrs = reader.attrs
        policy = recorded_config(attrs, self.url).augment  # first: a store without config or dataset is refused
        self.final_hw = (policy.final_height, policy.final_width)
        self.layout = StoreLayout.from_attrs(attrs)
        _check_expected(self.url, self.layout, expect_grid, expect_channels)
        _check_done(self.url, reader)
        self.sample_tokens: list[str] = list(attrs["dataset"]["sample_tokens"])
        self.split = str(attrs["dataset"].get("split", ""))
        self.views_per_sample = int(attrs["views_per_sample"])
        if reader.n_views != len(self.sample_tokens) * self.views_per_sample:
            raise StoreError(f"store {self.url} has {reader.n_views} views for {len(self.sample_tokens)} samples × "
                             f"{self.views_per_sample} views per sample; the store is damaged: re-export it")
        self.n_sweeps = recorded_sweeps(attrs, self.url)
        self._token_index = {token: i for i, token in enumerate(self.sample_tokens)}
        self.builder = recorded_view_builder(attrs, self.url, dataroot=dataroot, infos=infos) if inputs else None

    # ---------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.sample_tokens) * self.views_per_sample

    @property
    def n_samples(self) -> int:
        return len(self.sample_tokens)

    def index(self, sample_token: str, view: int = 0) -> int:
        """The store's view index v of view `view` of sample `sample_token` (the targets-only key)."""
        if sample_token not in self._token_index:
            raise StoreError(f"sample {sample_token} is not in store {self.url} ({self.n_samples} samples of split "
                             f"'{self.split}'); look up a token of the exported split")
        if not 0 <= view < self.views_per_sample:
            raise StoreError(f"view {view} is outside 0..{self.views_per_sample - 1}: store {self.url} holds "
                             f"{self.views_per_sample} view(s) per sample")
        return self._token_index[sample_token] * self.views_per_sample + view

    def aug_params(self, aug: torch.Tensor | np.ndarray) -> AugParams:
        """A view's replay vector (`item.aug`) as AugParams: the draws to apply in one's own pipeline."""
        return AugParams.from_vector(np.asarray(aug, dtype=np.float32), n_cams=len(CAMERA_NAMES),
                                     n_sweeps=self.n_sweeps)

    @property
    def reader(self) -> FeatureStoreReader:
        """This process's reader, opened on first use (never one inherited through fork or pickling)."""
        if self._reader is None or self._reader_pid != os.getpid():
            self._reader = open_store(self.location, arrays=self.arrays)
            self._reader_pid = os.getpid()
        return self._reader

    def __getitem__(self, v: int) -> CachedView:
        v = int(v)
        if not 0 <= v < len(self):
            raise IndexError(f"view {v} is outside store {self.url}, which has views 0..{len(self) - 1}")
        stored = self.reader.read_views([v], [*self.arrays, *INDEX_ARRAYS])
        sample, view = int(stored["sample_index"][0]), int(stored["view"][0])
        if (sample, view) != divmod(v, self.views_per_sample):
            raise StoreError(f"store {self.url}: view {v} records sample {sample} view {view}, not sample "
                             f"{v // self.views_per_sample} view {v % self.views_per_sample}; re-export the store")
        aug = np.ascontiguousarray(stored["aug"][0], dtype=np.float32)  # [P]
        params = self.aug_params(aug)
        img_aug, lidar_aug = aug_matrices(params, self.final_hw)
        item = CachedView(index=v, sample_token=self.sample_tokens[sample], sample_index=sample, view=view,
                          aug=torch.from_numpy(aug), img_aug_matrix=torch.from_numpy(img_aug),
                          lidar_aug_matrix=torch.from_numpy(lidar_aug),
                          targets={name: torch.from_numpy(np.ascontiguousarray(stored[name][0]))
                                   for name in self.arrays})
        if self.builder is not None:
            _attach_inputs(item, self.builder.build(sample, params), points=self.points)
        return item


def _attach_inputs(item: CachedView, built: Any, *, points: bool) -> None:
    """Copy a built `View`'s inputs onto the item as tensors (its matrices replace the ones made from `aug`)."""
    item.images = torch.from_numpy(built.images)
    item.cam_intrinsics = torch.from_numpy(built.cam_intrinsics)
    item.camera2lidar = torch.from_numpy(built.camera2lidar)
    item.img_aug_matrix = torch.from_numpy(built.img_aug_matrix)
    item.lidar_aug_matrix = torch.from_numpy(built.lidar_aug_matrix)
    item.gt_boxes = torch.from_numpy(built.gt_boxes)
    item.gt_labels = torch.from_numpy(built.gt_labels)
    item.points = torch.from_numpy(built.points) if points else None


def _checked_names(arrays: Sequence[str]) -> list[str]:
    names = list(arrays)
    unknown = [name for name in names if name not in TARGET_ARRAYS]
    if isinstance(arrays, str) or unknown:
        bad = arrays if isinstance(arrays, str) else unknown[0]
        raise ConfigError(f"arrays must be a list of target array names from {', '.join(TARGET_ARRAYS)}; got "
                          f"'{bad}'")
    return names


def _check_expected(url: str, layout: StoreLayout, grid: tuple[int, int] | None,
                    channels: Mapping[str, int] | None) -> None:
    """StoreError naming both values when the store's grid or channels are not what the caller's model takes."""
    if grid is not None and tuple(grid) != layout.grid_size:
        raise StoreError(f"store {url} has a BEV grid of {layout.grid_size[0]}×{layout.grid_size[1]} (H×W), you "
                         f"expect {grid[0]}×{grid[1]}; build the student for the store's grid or export a store "
                         "with yours")
    stored = {"cam_bev": layout.cam_channels, "lidar_bev": layout.lidar_channels,
              "fused_bev": layout.fused_channels, "heatmap": len(layout.class_names)}
    for name, want in (channels or {}).items():
        if name not in stored:
            raise ConfigError(f"expect_channels names '{name}'; it takes {', '.join(stored)}")
        if stored[name] != want:
            raise StoreError(f"store {url} has {stored[name]} {name} channels, you expect {want}; adapt the student "
                             "(a 1×1 convolution) or export a store with yours")


def _check_done(url: str, reader: FeatureStoreReader) -> None:
    done = reader.done_views()
    if not bool(done.all()):
        raise StoreError(f"store {url} has {int((~done).sum())} of {len(done)} views unfinished (the first is view "
                         f"{int(np.flatnonzero(~done)[0])}); finish it by re-running the same `simdistill "
                         "export-teacher` command")
