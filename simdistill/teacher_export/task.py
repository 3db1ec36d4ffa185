"""One export task: load the teacher once, run it on its views, write them through a background writer.

This module runs inside Dask worker processes (started with spawn), so it opens everything itself from
plain arguments (paths, a config dict, numpy params) and caches the teacher per process. The coordinator
submits it through `cluster.quiet_task`, so a user error here reaches the client as one line. The pieces are
public so that a benchmark can time the same work without the writes (`export_context`, `teacher_views`).
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simdistill.config import Config, config_from_dict
from simdistill.feature_store import FeatureStoreWriter, TeacherView, open_for_write
from simdistill.feature_store.storage import StoreURL
from simdistill.pipeline.augment import AugParams, ViewBuilder
from simdistill.pipeline.sample import collate
from simdistill.pipeline.sources import open_data_source
from simdistill.teacher.loader import load_teacher
from simdistill.teacher.view_arrays import teacher_view_arrays


@dataclass
class TaskStats:
    views: int = 0
    forward_seconds: float = 0.0  # teacher forward (incl. target encoding) only
    build_seconds: float = 0.0  # reading + augmenting inputs
    write_seconds: float = 0.0  # time the writer thread spent writing
    wall_seconds: float = 0.0
    bytes_written: int = 0
    worker_pid: int = field(default_factory=os.getpid)  # which worker process ran the task

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass
class ExportContext:
    """What every task of one export needs, loaded once per worker process."""

    cfg: Config
    teacher: torch.nn.Module = field(repr=False)
    builder: ViewBuilder = field(repr=False)


@lru_cache(maxsize=2)
def _context(cfg_json: str, split: str, checkpoint: str) -> ExportContext:
    cfg = config_from_dict(json.loads(cfg_json))
    teacher = load_teacher(cfg, Path(checkpoint), device=cfg.device)
    return ExportContext(cfg, teacher, ViewBuilder.for_config(open_data_source(cfg.data, split), cfg, train=True))


def export_context(cfg_dict: dict[str, Any], split: str, checkpoint: str) -> ExportContext:
    """The teacher and view builder of an export, cached per process (a task reuses what the last one loaded)."""
    return _context(json.dumps(cfg_dict, sort_keys=True), split, str(checkpoint))


def teacher_views(ctx: ExportContext, *, params: np.ndarray, sample_index: np.ndarray, view_index: np.ndarray,
                  stats: TaskStats) -> Iterator[TeacherView]:
    """Build each view from its replay params [N, P], run the teacher, and yield what the store keeps of it.

    `stats` accumulates the build and forward seconds and the view count.
    """
    for j in range(len(params)):
        t0 = time.perf_counter()
        aug = AugParams.from_vector(params[j], n_cams=ctx.builder.n_cams, n_sweeps=ctx.builder.n_sweeps)
        batch = collate([ctx.builder.build(int(sample_index[j]), aug)]).to(ctx.cfg.device)
        t1 = time.perf_counter()
        with torch.inference_mode():
            arrays = teacher_view_arrays(ctx.teacher, ctx.teacher(batch), batch)[0]
        stats.build_seconds += t1 - t0
        stats.forward_seconds += time.perf_counter() - t1
        stats.views += 1
        yield arrays.to_teacher_view(aug=params[j], sample_index=int(sample_index[j]), view=int(view_index[j]))


class BackgroundWriter:
    """A thread that writes views as they come (whole shards on a sharded store) while the teacher runs."""

    def __init__(self, writer: FeatureStoreWriter, depth: int, stats: TaskStats) -> None:
        self.writer, self.stats = writer, stats
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        pending: list[tuple[int, TeacherView]] = []  # the shard being filled
        while (item := self.queue.get()) is not None:
            if self.error is not None:
                continue  # drain after a failure; the error is raised by close()
            pending.append(item)
            v = item[0]
            if (v + 1) % self.writer.views_per_shard and v + 1 != self.writer.n_views:
                continue
            t0 = time.perf_counter()
            try:
                # a lost storage server is a one-line StoreError (the writer's `store_errors`)
                self.stats.bytes_written += self.writer.write_views(pending[0][0], [tv for _, tv in pending])
            except BaseException as exc:  # noqa: BLE001 - re-raised by close()
                self.error = exc
            pending = []
            self.stats.write_seconds += time.perf_counter() - t0

    def put(self, v: int, view: TeacherView) -> None:
        self.queue.put((v, view))

    def close(self) -> None:
        """Wait for the writes to finish; re-raise the first write error."""
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def run_export_task(*, store: StoreURL, cfg_dict: dict[str, Any], split_name: str, checkpoint: str,
                    views: list[int], params: np.ndarray, sample_index: np.ndarray,
                    view_index: np.ndarray) -> dict[str, float]:
    """Export `views` (all owned by this task; params [N, P], sample_index and view_index [N]); TaskStats dict."""
    t_start = time.perf_counter()
    ctx = export_context(cfg_dict, split_name, checkpoint)
    torch.set_num_threads(max(1, ctx.cfg.export.threads_per_worker))
    stats = TaskStats()
    writer = BackgroundWriter(open_for_write(store), ctx.cfg.export.write_queue, stats)
    try:
        made = teacher_views(ctx, params=params, sample_index=sample_index, view_index=view_index, stats=stats)
        for v, view in zip(views, made):
            if writer.error is not None:
                break
            writer.put(v, view)
    finally:
        writer.close()
    stats.wall_seconds = time.perf_counter() - t_start
    return stats.to_dict()
