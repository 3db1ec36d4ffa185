"""Pick the data source a config asks for: mmdet3d info files where given, else the devkit tables."""

from __future__ import annotations

from simdistill.config import DataConfig
from simdistill.errors import DataError
from simdistill.pipeline.dataset import NuScenesSource
from simdistill.pipeline.mmdet3d_infos import InfoFileSource

DataSource = NuScenesSource | InfoFileSource


def open_data_source(data: DataConfig, split: str, *, drop_empty_boxes: bool = True) -> DataSource:
    """The source of `split`: 'train', 'val', 'dev' or a devkit split name.

    With `data.dev_scenes` set, 'dev' is the last dev_scenes scenes of data.train_split and 'train' the rest of it.
    data.train_split reads data.infos_train when that is set (data.val_split likewise), else the tables.
    """
    if split == "dev" and data.dev_scenes <= 0:
        raise DataError("split 'dev' needs a dev carve-out of the train split; set data.dev_scenes to a number of "
                        "train scenes (e.g. --set data.dev_scenes=4)")
    name = {"train": data.train_split, "val": data.val_split, "dev": data.train_split}.get(split, split)
    part = ("dev" if split == "dev" else "rest") if data.dev_scenes > 0 and name == data.train_split else None
    infos = data.infos_train if name == data.train_split else data.infos_val if name == data.val_split else ""
    if not infos:
        return NuScenesSource(data.dataroot, data.version, name, sweeps=data.sweeps, drop_empty_boxes=drop_empty_boxes,
                              dev_scenes=data.dev_scenes, part=part)
    if part is not None:
        raise DataError("data.dev_scenes is not supported with mmdet3d info files; clear data.infos_train or set "
                        "data.dev_scenes=0")
    source = InfoFileSource(infos, data.dataroot, split=name, sweeps=data.sweeps, drop_empty_boxes=drop_empty_boxes)
    if source.version != data.version:
        raise DataError(
            f"info file {source.info_path} is for {source.version} but data.version is {data.version}; "
            "set data.version to match or point data.infos_train/infos_val at the right files"
        )
    return source


def check_data_files(source: DataSource, *, needed_by: str = "the export") -> None:
    """DataError naming the first missing input file and how many are missing (before any view is built)."""
    missing = source.missing_files(range(len(source)))
    if missing:
        raise DataError(
            f"{len(missing)} input file(s) of {needed_by} are missing from dataroot {source.dataroot}, the first is "
            f"{missing[0]}; restore them (re-extract nuScenes, or re-run `simdistill make-demo-data`) or point "
            "data.dataroot at a complete copy"
        )
