"""CachedTeacherDataset: items are the trainer's inputs and the store's targets; targets-only lookups; DataLoader
workers under fork and spawn; one error line per bad input."""

from __future__ import annotations

import multiprocessing
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from conftest import make_tiny_config
from helpers.data_store import PlannedStore, planned_views, write_planned_store
from torch.utils.data import DataLoader

from simdistill.data import (
    TARGET_ARRAYS,
    CachedTeacherDataset,
    OneViewPerSampleSampler,
    collate_cached_views,
)
from simdistill.errors import ConfigError, SimDistillError, StoreError
from simdistill.feature_store import SCHEMA_VERSION, open_store
from simdistill.pipeline.augment import ViewBuilder
from simdistill.pipeline.sample import Batch
from simdistill.pipeline.sources import open_data_source
from simdistill.pipeline.view_plan import ViewPlan, build_inputs

INPUT_FIELDS = ("images", "cam_intrinsics", "camera2lidar", "img_aug_matrix", "lidar_aug_matrix")


def assert_same_inputs(got: Batch, want: Batch, *, points: bool) -> None:
    assert got.tokens == want.tokens
    for name in INPUT_FIELDS:
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    for name in ("gt_boxes", "gt_labels") + (("points",) if points else ()):
        assert len(getattr(got, name)) == len(getattr(want, name)), name
        for a, b in zip(getattr(got, name), getattr(want, name)):
            assert torch.equal(a, b), name
    assert points or got.points == []


def test_items_are_the_inputs_our_trainer_builds_and_the_stored_targets(planned: PlannedStore) -> None:
    ds = CachedTeacherDataset(planned.url, arrays=TARGET_ARRAYS, points=True)
    assert len(ds) == planned.plan.n_views == 18 and ds.views_per_sample == 2
    builder, _ = planned_views(planned.cfg)  # the trainer's builder, made from the config, not from the store
    views = [0, 3, 8, 17]
    batch = collate_cached_views([ds[v] for v in views])
    assert_same_inputs(batch.inputs, build_inputs(builder, planned.plan, views), points=True)
    stored = open_store(planned.url).read_views(views)
    for name in TARGET_ARRAYS:
        assert batch.targets[name].dtype == torch.float32
        np.testing.assert_array_equal(batch.targets[name].numpy(), stored[name], err_msg=name)
    np.testing.assert_array_equal(batch.aug.numpy(), planned.plan.params[views])
    assert batch.indices.tolist() == views and batch.views.tolist() == [0, 1, 0, 1]
    assert batch.sample_tokens == [builder.source.tokens[v // 2] for v in views]
    assert torch.equal(batch.img_aug_matrix, batch.inputs.img_aug_matrix)


def test_a_store_export_wrote_replays_from_its_own_attributes(tiny_store: str, tiny_world: Path) -> None:
    cfg = make_tiny_config(tiny_world)
    reader = open_store(tiny_store)
    meta = reader.read_views(list(range(reader.n_views)), ["aug", "sample_index"])
    plan = ViewPlan(meta["aug"], meta["sample_index"].astype(np.int64), int(reader.attrs["views_per_sample"]))
    builder = ViewBuilder.for_config(open_data_source(cfg.data, "train"), cfg, train=True)  # as the trainer does
    ds = CachedTeacherDataset(tiny_store, arrays=("cam_bev", "heatmap"))
    views = list(range(len(ds)))
    batch = collate_cached_views([ds[v] for v in views])
    assert_same_inputs(batch.inputs, build_inputs(builder, plan, views), points=False)
    stored = reader.read_views(views, ["cam_bev", "heatmap"])
    assert all(np.array_equal(batch.targets[n].numpy(), stored[n]) for n in ("cam_bev", "heatmap"))


def test_targets_only_needs_no_data_and_looks_views_up_by_token(planned: PlannedStore, tmp_path: Path) -> None:
    world = tmp_path / "gone"
    shutil.copytree(planned.cfg.data.dataroot, world)
    cfg = make_tiny_config(world, ["export.views_per_sample=2"])
    url = str(tmp_path / "s.zarr")
    plan = write_planned_store(url, cfg)
    shutil.rmtree(world)  # the data is on another machine now
    ds = CachedTeacherDataset(url, arrays=["heatmap"], inputs=False)
    token = ds.sample_tokens[4]
    v = ds.index(token, 1)
    assert v == 9
    item = ds[v]
    assert (item.sample_token, item.view, item.images, item.gt_boxes) == (token, 1, None, None)
    np.testing.assert_array_equal(item.targets["heatmap"].numpy(), open_store(url).read_view(9)["heatmap"])
    built = build_inputs(planned_views(planned.cfg)[0], plan, [9])  # the same plan over the original data
    assert torch.equal(item.img_aug_matrix, built.img_aug_matrix[0])
    assert torch.equal(item.lidar_aug_matrix, built.lidar_aug_matrix[0])
    assert ds.aug_params(item.aug).cams[0].resize == pytest.approx(float(plan.params[9][0]))
    batch = collate_cached_views([ds[0], item])
    assert batch.inputs is None and batch.targets["heatmap"].shape[0] == 2
    with pytest.raises(SimDistillError, match="does not exist"):
        CachedTeacherDataset(url, arrays=["heatmap"])  # inputs need the data


def test_pickling_drops_the_store_handle(planned: PlannedStore) -> None:
    ds = CachedTeacherDataset(planned.url, arrays=["heatmap"], inputs=False)
    ds[0]
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._reader is None
    assert torch.equal(copy[5].targets["heatmap"], ds[5].targets["heatmap"])


def _loader_views(ds: CachedTeacherDataset, context: str) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    sampler = OneViewPerSampleSampler(ds, seed=3)
    loader = DataLoader(ds, batch_size=3, sampler=sampler, collate_fn=collate_cached_views, num_workers=2,
                        multiprocessing_context=multiprocessing.get_context(context))
    batches = list(loader)
    return (sum((b.indices.tolist() for b in batches), []), torch.cat([b.targets["heatmap"] for b in batches]),
            torch.cat([b.inputs.images for b in batches]))


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_read_what_the_main_process_reads(planned: PlannedStore, context: str) -> None:
    ds = CachedTeacherDataset(planned.url, arrays=["heatmap"])
    ds[0]  # the main process has an open store: a forked worker must not use it
    indices, heatmaps, images = _loader_views(ds, context)
    assert indices == list(OneViewPerSampleSampler(ds, seed=3))
    assert torch.equal(heatmaps, torch.stack([ds[v].targets["heatmap"] for v in indices]))
    assert torch.equal(images, torch.stack([ds[v].images for v in indices]))


def _copy(planned: PlannedStore, tmp_path: Path) -> str:
    url = str(tmp_path / "copy.zarr")
    shutil.copytree(planned.url, url)
    return url


def _set_attr(url: str, key: str, value: object) -> None:
    zarr.open_group(url, mode="r+").attrs[key] = value


def _undone(url: str) -> None:
    done = zarr.open_group(url, mode="r+")["done"]
    done[5] = False


BAD = [
    ("unknown-array", {"arrays": ["cam_feats"]}, None, ConfigError, "got 'cam_feats'"),
    ("lacks-array", {"arrays": ["fused_bev"]}, lambda url: shutil.rmtree(Path(url) / "fused_bev"), StoreError,
     "lacks array(s) fused_bev"),
    ("grid", {"expect_grid": (10, 12)}, None, StoreError, "BEV grid of 32×32 (H×W), you expect 10×12"),
    ("channels", {"expect_channels": {"cam_bev": 80}}, None, StoreError, "has 16 cam_bev channels, you expect 80"),
    ("unfinished", {}, _undone, StoreError, "1 of 18 views unfinished (the first is view 5)"),
    ("newer-schema", {}, lambda url: _set_attr(url, "schema_version", SCHEMA_VERSION + 1), StoreError,
     "upgrade simdistill"),
    ("older-schema", {}, lambda url: _set_attr(url, "schema_version", SCHEMA_VERSION - 1), StoreError,
     "re-export it with this simdistill"),
    ("no-config", {}, lambda url: _set_attr(url, "config", None), StoreError, "records no exporter config"),
]


@pytest.mark.parametrize(("kwargs", "damage", "error", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_one_error_line(planned: PlannedStore, tmp_path: Path, kwargs: dict, damage, error: type,
                                     message: str) -> None:
    url = _copy(planned, tmp_path)
    if damage is not None:
        damage(url)
    with pytest.raises(error) as info:
        CachedTeacherDataset(url, **{"arrays": ["heatmap"], "inputs": False, **kwargs})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_lookups_outside_the_store_are_one_error_line(planned: PlannedStore) -> None:
    ds = CachedTeacherDataset(planned.url, arrays=["heatmap"], inputs=False)
    for call, message in ((lambda: ds.index("no-such-token"), "sample no-such-token is not in store"),
                          (lambda: ds.index(ds.sample_tokens[0], 2), "view 2 is outside 0..1")):
        with pytest.raises(StoreError, match=message):
            call()
    with pytest.raises(IndexError, match="view 18 is outside"):
        ds[18]


def test_a_store_on_s3_reads_as_the_local_one(planned: PlannedStore, s3_bucket: str) -> None:
    url = f"{s3_bucket}/planned.zarr"
    write_planned_store(url, planned.cfg)  # the same plan and seed as the local store
    remote = CachedTeacherDataset(url, arrays=["cam_bev"])
    local = CachedTeacherDataset(planned.url, arrays=["cam_bev"])
    for v in (0, 11):
        assert torch.equal(remote[v].targets["cam_bev"], local[v].targets["cam_bev"])
        assert torch.equal(remote[v].images, local[v].images)
