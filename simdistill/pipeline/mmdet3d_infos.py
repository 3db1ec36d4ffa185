"""mmdetection3d v1.x nuScenes info pickles (`nuscenes_infos_{train,val}.pkl`) as a data source.

mmdet3d 1.x (`tools/create_data.py nuscenes`: the 0.x converter, then `update_infos_to_v2.py`) writes
`{"metainfo": {...}, "data_list": [one dict per key frame]}`. `InfoFileSource` reads such a file and
yields the same `Sample` that `NuScenesSource` builds from the devkit tables for the same key frame:

- paths in the file are file names; they are resolved against the dataroot with mmdet3d's default
  nuScenes `data_prefix` (`samples/LIDAR_TOP`, `samples/CAM_*`, `sweeps/LIDAR_TOP`);
- GT comes from `instances` (`bbox_3d` = gravity centre, l, w, h, yaw in the LiDAR frame; `velocity`;
  `bbox_3d_isvalid` = num_lidar_pts + num_radar_pts > 0, the devkit source's `drop_empty_boxes` rule);
  labels map through `metainfo.categories` (mmdet3d's class order differs from ours), -1 is dropped;
- camera2lidar = inverse of `lidar2cam`, sweeps move into the key LiDAR frame by the inverse of their
  `lidar2sensor`, with the same close-point rule and age column as the devkit source.

Precision: mmdet3d stores 4x4 matrices as float32, so matrices and sweeps agree with the devkit source to
float32 precision; the yaw is mmdet3d's (pyquaternion's), not the devkit heading (README gives the agreement).
The file is read with a restricted unpickler: only containers, scalars and numpy arrays are allowed.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from simdistill.config import CAMERA_NAMES, CLASS_NAMES
from simdistill.errors import DataError
from simdistill.pipeline.dataset import SampleMeta
from simdistill.pipeline.nuscenes_files import (
    LIDAR_NAME,
    check_split,
    read_image,
    read_points,
    require_file,
    sweep_into_key_frame,
)
from simdistill.pipeline.sample import ReopenedAfterPickling, Sample

# mmdet3d's NuScenesDataset.METAINFO['classes']: the label order of its info files.
MMDET3D_CLASSES: tuple[str, ...] = (
    "car", "truck", "trailer", "bus", "construction_vehicle",
    "bicycle", "motorcycle", "pedestrian", "traffic_cone", "barrier",
)  # fmt: skip

# mmdet3d's default nuScenes data_prefix (configs/_base_/datasets/nus-3d.py), relative to the dataroot.
DATA_PREFIX: dict[str, str] = {
    "pts": f"samples/{LIDAR_NAME}",
    "sweeps": f"sweeps/{LIDAR_NAME}",
    **{cam: f"samples/{cam}" for cam in CAMERA_NAMES},
}

CONVERT_HINT = (
    "convert it with mmdet3d's tools/dataset_converters/update_infos_to_v2.py "
    "(or regenerate it with mmdet3d 1.x `tools/create_data.py nuscenes`)"
)

# What an info pickle may reference: containers/scalars and numpy array/dtype/scalar reconstruction.
_ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [("builtins", n) for n in ("set", "frozenset", "complex", "bytearray", "bytes", "slice", "tuple", "list",
                               "dict", "int", "float", "str", "bool")]
    + [("_codecs", "encode"), ("collections", "OrderedDict"), ("numpy", "ndarray"), ("numpy", "dtype")]
    + [(f"numpy.{core}.multiarray", n) for core in ("core", "_core") for n in ("_reconstruct", "scalar")]
    + [(f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")]
)


class _InfoUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only `_ALLOWED_GLOBALS`; anything else is refused before it is imported."""

    def __init__(self, file: Any, *, path: Path) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        normalised = "builtins" if module == "__builtin__" else module  # protocol 2 writes Python 2 names
        if (normalised, name) not in _ALLOWED_GLOBALS:
            raise DataError(
                f"info file {self._path} references '{normalised}.{name}', which an mmdet3d info file never holds; "
                "refusing to load it (only containers, numbers, strings and numpy arrays are allowed)"
            )
        return super().find_class(module, name)


def load_info_file(path: str | Path) -> dict[str, Any]:
    """The {'metainfo', 'data_list'} dict of an mmdet3d v1.x info pickle, read with a restricted unpickler."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise DataError(
            f"info file {path} does not exist; write it with `simdistill make-demo-data DIR --mmdet3d-infos` "
            "or mmdet3d's `tools/create_data.py nuscenes`, or clear data.infos_train/infos_val to read the tables"
        )
    try:
        with path.open("rb") as f:
            data = _InfoUnpickler(f, path=path).load()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt or foreign file
        detail = exc.__class__.__name__
        raise DataError(f"info file {path} is not a readable pickle ({detail}); regenerate it") from None
    if not isinstance(data, dict):
        raise DataError(f"info file {path} holds a {type(data).__name__}, not an mmdet3d info dict; regenerate it")
    if "data_list" not in data and "infos" in data:
        raise DataError(f"info file {path} is in the mmdet3d 0.x format ('infos', no 'data_list'); {CONVERT_HINT}")
    if not isinstance(data.get("metainfo"), dict) or not isinstance(data.get("data_list"), list):
        raise DataError(f"info file {path} lacks the mmdet3d v1.x keys 'metainfo' and 'data_list'; {CONVERT_HINT}")
    return data


_INFO_CACHE: dict[tuple[str, int, int], dict[str, Any]] = {}
_INFO_LOCK = threading.Lock()


def _cached_info_file(path: Path) -> dict[str, Any]:
    """`load_info_file`, once per process and file version (Dask workers re-open sources after unpickling)."""
    stat = path.stat() if path.is_file() else None
    key = (str(path), stat.st_mtime_ns if stat else -1, stat.st_size if stat else -1)
    with _INFO_LOCK:
        if key not in _INFO_CACHE:
            for stale in [k for k in _INFO_CACHE if k[0] == key[0]]:  # an older version of this file
                del _INFO_CACHE[stale]
            _INFO_CACHE[key] = load_info_file(path)
        return _INFO_CACHE[key]


def _matrix(value: Any, what: str) -> np.ndarray:
    mat = np.asarray(value, dtype=np.float64)
    if mat.shape != (4, 4):
        raise DataError(f"{what} must be a 4x4 matrix, got shape {mat.shape}")
    return mat


def _seconds_to_us(seconds: float) -> int:
    """mmdet3d v1.x stores timestamps as seconds (float64); the devkit uses integer microseconds."""
    return round(float(seconds) * 1e6)


def _label_map(metainfo: dict[str, Any]) -> dict[int, int]:
    """The file's label index -> index into CLASS_NAMES (classes we do not detect are absent)."""
    categories = metainfo.get("categories") or {name: i for i, name in enumerate(MMDET3D_CLASSES)}
    return {int(i): CLASS_NAMES.index(name) for name, i in categories.items() if int(i) >= 0 and name in CLASS_NAMES}


class InfoFileSource(ReopenedAfterPickling):
    """Key frames of an mmdet3d v1.x nuScenes info file, loaded as `Sample`s (same interface as NuScenesSource).

    split: the devkit split name the file holds (used by evaluation, which reads the devkit tables).
    sweeps: LiDAR sweeps per sample (key frame + up to sweeps-1 of the file's `lidar_sweeps`, newest first;
        mmdet3d's converter keeps at most 10).
    drop_empty_boxes: drop GT boxes whose `bbox_3d_isvalid` is false (no LiDAR or radar point).
    """

    _transient = ("_infos",)  # the info list is re-read (once per process) after unpickling

    def __init__(
        self,
        info_path: str | Path,
        dataroot: str | Path,
        *,
        split: str,
        sweeps: int = 1,
        drop_empty_boxes: bool = True,
    ) -> None:
        if sweeps < 1:
            raise DataError(f"sweeps must be >= 1, got {sweeps}; use 1 for the key frame only")
        self.info_path = Path(info_path).expanduser().resolve()
        self.dataroot = Path(dataroot).expanduser().resolve()
        self.split = split
        self.sweeps = sweeps
        self.drop_empty_boxes = drop_empty_boxes
        if not self.dataroot.is_dir():
            raise DataError(
                f"dataroot {self.dataroot} does not exist; set data.dataroot to the folder the info file "
                f"{self.info_path} describes (it holds samples/ and sweeps/)"
            )
        data = _cached_info_file(self.info_path)
        metainfo = data["metainfo"]
        if metainfo.get("dataset", "nuscenes") != "nuscenes":
            raise DataError(f"info file {self.info_path} describes dataset '{metainfo['dataset']}', not nuscenes")
        self.version: str = str(metainfo.get("version", ""))
        if not self.version:
            raise DataError(f"info file {self.info_path} has no metainfo.version; {CONVERT_HINT}")
        check_split(self.version, split)
        self._labels = _label_map(metainfo)
        self._infos: list[dict[str, Any]] | None = data["data_list"]
        try:
            self.tokens: list[str] = [str(info["token"]) for info in self._infos]
        except (KeyError, TypeError):
            bad = f"info file {self.info_path} has a data_list entry without a token"
            raise DataError(f"{bad}; {CONVERT_HINT}") from None
        if not self.tokens:
            raise DataError(f"info file {self.info_path} holds no samples; regenerate it for split '{split}'")

    @property
    def infos(self) -> list[dict[str, Any]]:
        if self._infos is None:
            self._infos = _cached_info_file(self.info_path)["data_list"]
        return self._infos

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return f"InfoFileSource({self.info_path}, dataroot={self.dataroot}, split={self.split})"

    # ----------------------------------------------------------------------------------------------

    def _info(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.tokens):
            raise IndexError(f"sample index {index} out of range for {len(self.tokens)} samples")
        return self.infos[index]

    def _field(self, record: dict[str, Any], key: str, index: int) -> Any:
        if key not in record:
            raise DataError(
                f"info file {self.info_path}: sample {self.tokens[index]} has no '{key}'; {CONVERT_HINT}"
            )
        return record[key]

    def _path(self, prefix: str, stored: str) -> Path:
        """mmdet3d's rule: data_prefix joined with the file name (infos store names, older ones full paths)."""
        return self.dataroot / DATA_PREFIX[prefix] / Path(stored).name

    def _file(self, prefix: str, stored: str) -> Path:
        return require_file(self._path(prefix, stored), self.dataroot)

    def _sweep_path(self, stored: str) -> Path:
        """Sweep paths are stored as the converter saw them; mmdet3d picks samples/ or sweeps/ by the path."""
        parts = Path(stored).parts
        folder = parts[-3] if len(parts) >= 3 and parts[-3] in ("samples", "sweeps") else None
        in_samples = folder == "samples" if folder else "samples" in stored
        return self._path("pts" if in_samples else "sweeps", stored)

    def required_files(self, index: int) -> list[Path]:
        """Every file `load(index)` reads: the six camera images, the key-frame LiDAR file, then its sweeps."""
        info = self._info(index)
        cameras = [self._path(cam, self._field(self._camera(info, index, cam), "img_path", index))
                   for cam in CAMERA_NAMES]
        key = self._path("pts", self._field(self._field(info, "lidar_points", index), "lidar_path", index))
        sweeps = [self._sweep_path(self._field(self._field(sweep, "lidar_points", index), "lidar_path", index))
                  for sweep in info.get("lidar_sweeps", [])[: self.sweeps - 1]]
        return [*cameras, key, *sweeps]

    def missing_files(self, indices: Iterable[int]) -> list[Path]:
        """The files `load` would read for `indices` that do not exist (each once, in reading order)."""
        wanted = dict.fromkeys(path for i in indices for path in self.required_files(int(i)))
        return [path for path in wanted if not path.is_file()]

    def _camera(self, info: dict[str, Any], index: int, cam: str) -> dict[str, Any]:
        images = self._field(info, "images", index)
        if cam not in images:
            raise DataError(f"info file {self.info_path}: sample {self.tokens[index]} has no {cam} image")
        return images[cam]

    def image_hw(self, index: int) -> tuple[int, int]:
        """Raw (height, width) of the sample's CAM_FRONT image (from the info, else the file's header)."""
        cam = self._camera(self._info(index), index, CAMERA_NAMES[0])
        if cam.get("height") and cam.get("width"):
            return int(cam["height"]), int(cam["width"])
        from PIL import Image  # a matplotlib dependency; reads the header only

        path = self._file(CAMERA_NAMES[0], self._field(cam, "img_path", index))
        with Image.open(path) as im:
            width, height = im.size
        return int(height), int(width)

    def sample_meta(self, index: int) -> SampleMeta:
        info = self._info(index)
        lidar = self._field(info, "lidar_points", index)
        return SampleMeta(
            token=self.tokens[index],
            lidar2ego=_matrix(self._field(lidar, "lidar2ego", index), "lidar_points.lidar2ego"),
            ego2global=_matrix(self._field(info, "ego2global", index), "ego2global"),
            timestamp=_seconds_to_us(self._field(info, "timestamp", index)),
        )

    def load(self, index: int) -> Sample:
        info = self._info(index)
        meta = self.sample_meta(index)
        images, intrinsics, cam2lidar, cam2ego = [], [], [], []
        for cam in CAMERA_NAMES:
            record = self._camera(info, index, cam)
            images.append(read_image(self._file(cam, self._field(record, "img_path", index)), self.dataroot))
            intrinsics.append(np.asarray(self._field(record, "cam2img", index), dtype=np.float64)[:3, :3])
            cam2lidar.append(np.linalg.inv(_matrix(self._field(record, "lidar2cam", index), f"{cam}.lidar2cam")))
            cam2ego.append(_matrix(self._field(record, "cam2ego", index), f"{cam}.cam2ego"))
        shapes = {img.shape for img in images}
        if len(shapes) != 1:
            raise DataError(f"sample {meta.token} has cameras of different sizes {sorted(shapes)}; resize them alike")
        boxes, labels = self._gt_boxes(info, index)
        return Sample(
            token=meta.token,
            images=np.stack(images),
            cam_intrinsics=np.stack(intrinsics),
            camera2lidar=np.stack(cam2lidar),
            camera2ego=np.stack(cam2ego),
            lidar2ego=meta.lidar2ego,
            ego2global=meta.ego2global,
            sweeps=self._sweeps(info, index, meta.timestamp),
            gt_boxes=boxes,
            gt_labels=labels,
            timestamp=meta.timestamp,
        )

    def _sweeps(self, info: dict[str, Any], index: int, key_us: int) -> list[np.ndarray]:
        """Key frame points, then up to sweeps-1 previous sweeps in the key frame's LiDAR frame."""
        lidar = self._field(info, "lidar_points", index)
        sweeps = [read_points(self._file("pts", self._field(lidar, "lidar_path", index)))]
        for sweep in info.get("lidar_sweeps", [])[: self.sweeps - 1]:
            points_rec = self._field(sweep, "lidar_points", index)
            lidar2sensor = _matrix(self._field(points_rec, "lidar2sensor", index), "lidar_sweeps.lidar2sensor")
            age = (key_us - _seconds_to_us(self._field(sweep, "timestamp", index))) * 1e-6
            path = require_file(self._sweep_path(self._field(points_rec, "lidar_path", index)), self.dataroot)
            points = read_points(path)
            sweeps.append(sweep_into_key_frame(points, np.linalg.inv(lidar2sensor), age))
        return sweeps

    def _gt_boxes(self, info: dict[str, Any], index: int) -> tuple[np.ndarray, np.ndarray]:
        """[M, 9] boxes (x, y, z, l, w, h, yaw, vx, vy) in the LiDAR frame and [M] labels, from `instances`."""
        rows, labels = [], []
        for inst in info.get("instances", []):
            label = self._labels.get(int(inst.get("bbox_label_3d", inst.get("bbox_label", -1))))
            if label is None:
                continue
            if self.drop_empty_boxes and not self._valid(inst):
                continue
            box = np.asarray(self._field(inst, "bbox_3d", index), dtype=np.float64)
            velocity = np.asarray(inst["velocity"] if "velocity" in inst else box[7:9], dtype=np.float64)
            if box.shape[0] < 7 or velocity.shape != (2,):
                raise DataError(f"info file {self.info_path}: sample {self.tokens[index]} has a malformed box")
            rows.append(np.concatenate([box[:7], np.nan_to_num(velocity, nan=0.0)]))  # NaN: no neighbours
            labels.append(label)
        if not rows:
            return np.zeros((0, 9), dtype=np.float32), np.zeros((0,), dtype=np.int64)
        return np.stack(rows).astype(np.float32), np.asarray(labels, dtype=np.int64)

    @staticmethod
    def _valid(inst: dict[str, Any]) -> bool:
        """mmdet3d's bbox_3d_isvalid, else the rule that defines it (a file without either keeps the box)."""
        if "bbox_3d_isvalid" in inst:
            return bool(inst["bbox_3d_isvalid"])
        if "num_lidar_pts" in inst and "num_radar_pts" in inst:
            return int(inst["num_lidar_pts"]) + int(inst["num_radar_pts"]) > 0
        return True
