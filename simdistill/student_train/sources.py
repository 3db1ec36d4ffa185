"""Where a student's views and teacher targets come from: the store (cached), an online teacher, or none.

Every source exposes the same view plan (replay params per view), so the baseline, every ablation, the
cached run and the online-teacher run all train on exactly the same augmented inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from simdistill.config import Config
from simdistill.errors import StoreError
from simdistill.pipeline.augment import ViewBuilder
from simdistill.pipeline.sample import Batch
from simdistill.student_train.distill_step import TeacherTargets
from simdistill.teacher_export.teacher import load_teacher
from simdistill.teacher_export.plan import plan_views


class ViewPlan:
    """Replay params per view: [V, P] plus which sample each view shows."""

    def __init__(self, params: np.ndarray, sample_index: np.ndarray, views_per_sample: int) -> None:
        self.params = params  # [V, P] float32
        self.sample_index = sample_index  # [V] int
        self.views_per_sample = views_per_sample

    @property
    def n_samples(self) -> int:
        return len(self.sample_index) // self.views_per_sample


def plan_from_config(cfg: Config, builder: ViewBuilder) -> ViewPlan:
    plan = plan_views(cfg, builder)
    return ViewPlan(plan.params, plan.sample_index, plan.views_per_sample)


class StoreTargets:
    """Teacher targets streamed from a Zarr store by the Dask prefetcher (one task per batch)."""

    def __init__(self, url: str, cfg: Config, arrays: list[str], *, scheduler: str | None = None,
                 expected_tokens: Sequence[str] | None = None) -> None:
        from simdistill.feature_store import open_store

        self.url = url
        self.arrays = arrays
        self.scheduler = scheduler
        self.prefetch = cfg.student_train.prefetch_batches
        self.loader = cfg.student_train.loader
        reader = open_store(url, expect=cfg)
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

    def iterate(self, batches: list[list[int]], device: torch.device) -> Iterator[TeacherTargets]:
        from simdistill.feature_store import TargetPrefetcher, open_store, read_batch

        if self.loader == "direct":  # synchronous reads in the training loop (the comparison baseline)
            reader = open_store(self.url, arrays=self.arrays)
            for views in batches:
                yield TeacherTargets.from_arrays(read_batch(reader, views, self.arrays), device)
            return
        with TargetPrefetcher(self.url, arrays=self.arrays, batches=batches, prefetch=self.prefetch,
                              scheduler=self.scheduler) as prefetcher:
            for arrays in prefetcher:
                yield TeacherTargets.from_arrays(arrays, device)


class OnlineTeacher:
    """The published method's mode: the frozen teacher runs beside the student on every batch."""

    def __init__(self, checkpoint: Path, cfg: Config, device: torch.device) -> None:
        # The same teacher export-teacher would cache (the export.* settings choose it).
        self.model = load_teacher(cfg, Path(checkpoint), device=str(device))

    @torch.no_grad()  # not inference_mode: its tensors cannot be saved for the student's backward
    def targets(self, batch: Batch) -> TeacherTargets:
        out = self.model(batch)
        fg = self.model.head.fg_mask(self.model.head.build_targets(batch.gt_boxes, batch.gt_labels))
        return TeacherTargets(cam_bev=out.cam_bev, lidar_bev=out.lidar_bev, fused_bev=out.fused_bev,
                              heatmap=out.heatmap, boxes=out.boxes, fg_mask=fg)
