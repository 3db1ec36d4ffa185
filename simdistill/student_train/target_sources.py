"""Where a student's teacher targets come from: the store (cached), an online teacher, or none.

Each source attaches targets to the batches of one epoch: `attach(view_batches, inputs, device)` yields
(batch, targets) pairs. Every source uses the same view plan, so the baseline, every ablation, the cached run
and the online-teacher run train on exactly the same augmented inputs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from simdistill.config import Config
from simdistill.errors import ConfigError, StoreError
from simdistill.feature_store import (
    StoreLayout,
    TargetPrefetcher,
    open_store,
    read_batch,
    read_channel_stats,
    stored_values,
)
from simdistill.feature_store.storage import store_url
from simdistill.pipeline.sample import Batch
from simdistill.pipeline.view_plan import ViewPlan
from simdistill.student_train.distill_step import ChannelScales, TeacherTargets
from simdistill.teacher.loader import load_teacher
from simdistill.teacher.view_arrays import teacher_view_arrays

MEMORY_READ_VIEWS = 4  # views per read while loader=memory fills RAM


class NoTargets:
    """GT-only training: no teacher targets."""

    def attach(self, view_batches: list[list[int]], inputs: Iterator[Batch],
               device: torch.device) -> Iterator[tuple[Batch, None]]:
        for batch in inputs:
            yield batch.to(device), None


class StoreTargets:
    """Teacher targets streamed from a Zarr store by the Dask prefetcher (one task per batch), read synchronously
    (`student_train.loader=direct`), or read once into RAM (`loader=memory`: every view of the store, decoded, in
    its stored dtype, float16 for features: 43 MB per view at paper size; batches as the Dask loader yields them)."""

    def __init__(self, url: str, cfg: Config, arrays: list[str], *, scheduler: str | None = None,
                 expected_tokens: Sequence[str] | None = None) -> None:
        self.location = store_url(url, cfg.storage_options)  # a remote store's endpoint travels with its URL
        self.url = url
        self.arrays = arrays
        self.scheduler = scheduler
        self.prefetch = cfg.student_train.prefetch_batches
        self.loader = cfg.student_train.loader
        self.threads = cfg.student_train.loader_threads
        self._memory: dict[str, np.ndarray] | None = None
        reader = open_store(self.location, expect=StoreLayout.for_model(cfg.model))
        reader.require(arrays)
        done = reader.done_views()
        if not bool(np.all(done)):
            missing = int((~done).sum())
            raise StoreError(f"store {url} has {missing} of {len(done)} views unfinished; finish it by re-running "
                             "the same `simdistill export-teacher` command")
        if expected_tokens is not None:
            stored = list(reader.attrs["dataset"]["sample_tokens"])
            if stored != list(expected_tokens):
                raise StoreError(f"store {url} was exported from another dataset/split "
                                 f"({reader.attrs['dataset'].get('split')}, {len(stored)} samples) than the config's "
                                 f"train split ({len(expected_tokens)} samples); export that split or fix data.*")
        meta = reader.read_views(list(range(reader.n_views)), ["aug", "sample_index"])
        self.plan = ViewPlan(meta["aug"].astype(np.float32), meta["sample_index"].astype(np.int64),
                             int(reader.attrs["views_per_sample"]))
        self.teacher_sha256 = str(reader.attrs["teacher"]["checkpoint_sha256"])
        self.channel_stats = read_channel_stats(reader.attrs)  # None for a store exported before they were kept
        if self.loader == "memory" and arrays:
            self.in_memory()  # before the first step, so no step waits for it

    def channel_scales(self, arrays: list[str], device: torch.device) -> ChannelScales:
        """The teacher's channel stds of `arrays` from the store's attributes (`distill.channel_standardization`)."""
        have = self.channel_stats.arrays if self.channel_stats is not None else {}
        missing = [a for a in arrays if a not in have]
        if missing:
            raise ConfigError(f"distill.channel_standardization needs the teacher's channel statistics of "
                              f"{', '.join(missing)}, which store {self.url} lacks; run `simdistill store stats "
                              f"{self.url}` (or set distill.channel_standardization=false)")
        return ChannelScales.from_std({a: have[a].std for a in arrays}, device)

    def iterate(self, view_batches: list[list[int]], device: torch.device) -> Iterator[TeacherTargets]:
        """The targets of each batch of view ids, in order. For a CPU student the loader hands float32 over (its
        threads convert); for a GPU student float16 as stored, converted on the device (half the host work)."""
        float32 = device.type == "cpu"
        if self.loader == "direct":  # synchronous reads in the training loop (the comparison baseline)
            reader = open_store(self.location, arrays=self.arrays)
            for views in view_batches:
                yield _targets(read_batch(reader, views, self.arrays, float32=float32), device)
            return
        if self.loader == "memory":  # no I/O and no decoding left in the loop: the loader's physical limit
            held = self.in_memory()
            for views in view_batches:
                idx = np.asarray(views, dtype=np.int64)
                yield _targets({k: x[idx] for k, x in held.items()}, device)
            return
        with TargetPrefetcher(self.location, arrays=self.arrays, batches=view_batches, prefetch=self.prefetch,
                              scheduler=self.scheduler, threads=self.threads, float32=float32) as prefetcher:
            for arrays in prefetcher:
                yield _targets(arrays, device)

    def in_memory(self) -> dict[str, np.ndarray]:
        """Every view's arrays, read once (on first use) in their stored dtype: name → [V, ...] (float16 features
        become float32 per batch, as the other loaders hand them over)."""
        if self._memory is None:
            reader = open_store(self.location, arrays=self.arrays)
            parts: dict[str, list[np.ndarray]] = {name: [] for name in self.arrays}
            for start in range(0, reader.n_views, MEMORY_READ_VIEWS):
                views = list(range(start, min(start + MEMORY_READ_VIEWS, reader.n_views)))
                for name, x in reader.read_views(views, self.arrays, float32=False).items():
                    parts[name].append(x)
            self._memory = {name: np.concatenate(xs) for name, xs in parts.items()}
        return self._memory

    def attach(self, view_batches: list[list[int]], inputs: Iterator[Batch],
               device: torch.device) -> Iterator[tuple[Batch, TeacherTargets]]:
        for batch, targets in zip(inputs, self.iterate(view_batches, device)):
            yield batch.to(device), targets


def _targets(arrays: dict[str, np.ndarray], device: torch.device) -> TeacherTargets:
    """A batch's arrays as float32 targets on `device`; float16 arrays are converted there (after the copy)."""
    on_device = {k: torch.from_numpy(np.ascontiguousarray(x)).to(device, non_blocking=True).float()
                 for k, x in arrays.items()}
    return TeacherTargets.from_arrays(on_device, device)


class OnlineTeacher:
    """The published method's mode: the frozen teacher runs beside the student on every batch.

    With `student_train.online_encoding = "store"` each view runs alone (as export does) and its targets pass
    through the store's encoding (`feature_store.stored_values`), so they equal a cached run's bit for bit.
    """

    def __init__(self, checkpoint: Path, cfg: Config, device: torch.device) -> None:
        # The same teacher export-teacher would cache (the export.* settings choose it).
        self.model = load_teacher(cfg, Path(checkpoint), device=str(device))
        self.encoding = cfg.student_train.online_encoding
        self.store_format = cfg.store_format
        self.sizes = StoreLayout.for_model(cfg.model).dim_sizes(n_views=1, aug_dim=0)
        self.device = device

    @torch.no_grad()  # not inference_mode: its tensors cannot be saved for the student's backward
    def targets(self, batch: Batch) -> TeacherTargets:
        if self.encoding == "store":
            return self._store_encoded(batch)
        out = self.model(batch)
        fg = self.model.head.fg_mask(self.model.head.build_targets(batch.gt_boxes, batch.gt_labels))
        return TeacherTargets(cam_bev=out.cam_bev, lidar_bev=out.lidar_bev, fused_bev=out.fused_bev,
                              heatmap=out.heatmap, boxes=out.boxes, fg_mask=fg)

    def _store_encoded(self, batch: Batch) -> TeacherTargets:
        views = []
        for i in range(batch.batch_size):
            one = batch.select(i)
            arrays = teacher_view_arrays(self.model, self.model(one), one)[0]
            view = arrays.to_teacher_view(aug=np.zeros(0, np.float32), sample_index=0, view=0)
            views.append(stored_values(view, sizes=self.sizes, store_format=self.store_format))
        return TeacherTargets.from_arrays({k: np.stack([v[k] for v in views]) for k in views[0]}, self.device)

    def attach(self, view_batches: list[list[int]], inputs: Iterator[Batch],
               device: torch.device) -> Iterator[tuple[Batch, TeacherTargets]]:
        for batch in inputs:
            batch = batch.to(device)
            yield batch, self.targets(batch)
